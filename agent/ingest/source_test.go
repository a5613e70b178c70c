package ingest

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/outpost-edge/outpost/deploy/config"
	"github.com/outpost-edge/outpost/test/service"
)

func collect(t *testing.T, out <-chan Line, n int) []string {
	t.Helper()
	var got []string
	timeout := time.After(10 * time.Second)
	for len(got) < n {
		select {
		case l := <-out:
			got = append(got, string(l.Data))
		case <-timeout:
			t.Fatalf("got %d of %d lines: %q", len(got), n, got)
		}
	}
	return got
}

func start(t *testing.T, c SourceConfig) chan Line {
	t.Helper()
	return startAt(t, c, 0)
}

func startAt(t *testing.T, c SourceConfig, resume int64) chan Line {
	t.Helper()
	run, err := Open(c, resume, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan Line, 100)
	done := make(chan struct{})
	go func() { defer close(done); _ = run(ctx, out) }()
	t.Cleanup(func() { cancel(); <-done })
	return out
}

func TestTailFollowsAppendsAndTruncation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sensor.log")
	if err := os.WriteFile(path, []byte("old-1\nold-2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := start(t, SourceConfig{Type: "file", File: FileConfig{Path: path, FromStart: true}})
	if got := collect(t, out, 2); got[0] != "old-1" || got[1] != "old-2" {
		t.Fatalf("got %q", got)
	}
	f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString("new-1\nhalf")
	f.Close()
	if got := collect(t, out, 1); got[0] != "new-1" {
		t.Fatalf("got %q", got)
	}
	f, _ = os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString("-line\n")
	f.Close()
	if got := collect(t, out, 1); got[0] != "half-line" {
		t.Fatalf("partial line joined as %q", got)
	}
	// Rotation by truncation: read from the start of the new content.
	if err := os.WriteFile(path, []byte("r\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := collect(t, out, 1); got[0] != "r" {
		t.Fatalf("after truncation got %q", got)
	}
}

// postRetry posts body, retrying while the listener comes up.
func postRetry(addr, body string) (*http.Response, error) {
	var resp *http.Response
	var err error
	for i := 0; i < 50; i++ {
		if resp, err = http.Post("http://"+addr+"/ingest", "application/x-ndjson", strings.NewReader(body)); err == nil {
			return resp, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil, err
}

// TestHTTPAnswersOnlyAfterCommit: a push is answered 200 only when the
// pipeline acknowledges its last line, which it does once that line and
// every one before it are committed.
func TestHTTPAnswersOnlyAfterCommit(t *testing.T) {
	port, _ := service.FreePort()
	addr := service.Addr(port)
	out := start(t, SourceConfig{Type: "http", HTTP: HTTPConfig{Listen: addr}})
	type answer struct {
		resp *http.Response
		err  error
	}
	answered := make(chan answer, 1)
	go func() {
		resp, err := postRetry(addr, "a\nb\nc\n")
		answered <- answer{resp, err}
	}()
	var got []Line
	timeout := time.After(10 * time.Second)
	for len(got) < 3 {
		select {
		case l := <-out:
			got = append(got, l)
		case a := <-answered:
			t.Fatalf("answered %+v with %d of 3 lines handed over", a, len(got))
		case <-timeout:
			t.Fatalf("got %d of 3 lines", len(got))
		}
	}
	if string(got[0].Data) != "a" || string(got[2].Data) != "c" {
		t.Fatalf("lines %q %q %q", got[0].Data, got[1].Data, got[2].Data)
	}
	if got[0].Ack != nil || got[1].Ack != nil || got[2].Ack == nil {
		t.Fatalf("only the last line of a request carries its Ack")
	}
	select {
	case a := <-answered:
		t.Fatalf("answered %+v before the commit", a)
	default:
	}
	got[2].Ack()
	a := <-answered
	if a.err != nil || a.resp.StatusCode != http.StatusOK {
		t.Fatalf("after the commit: %+v", a)
	}
}

// TestHTTPHandlerAnswers drives the handler in a synctest bubble: a stalled
// pipeline or a stopping source gets 503 with Retry-After once the commit
// wait is over, never 200.
func TestHTTPHandlerAnswers(t *testing.T) {
	const wait = 5 * time.Second
	// take receives n lines and returns the last.
	take := func(out chan Line, n int) Line {
		var l Line
		for range n {
			l = <-out
		}
		return l
	}
	for _, tt := range []struct {
		name  string
		body  string
		queue int                                               // room in the pipeline's queue
		run   func(src *httpSource, out chan Line, stop func()) // the pipeline, in its own goroutine
		code  int
		why   string // in the answer's body
	}{
		{name: "committed", body: "a\nb\n", queue: 10, code: http.StatusOK,
			run: func(_ *httpSource, out chan Line, _ func()) { take(out, 2).Ack() }},
		{name: "committed within the wait", body: "a\nb\n", queue: 10, code: http.StatusOK,
			run: func(_ *httpSource, out chan Line, _ func()) {
				l := take(out, 2)
				time.Sleep(wait - time.Millisecond)
				l.Ack()
			}},
		{name: "empty body", body: "", code: http.StatusOK},
		{name: "outbox stalled", body: "a\nb\n", queue: 10, code: http.StatusServiceUnavailable, why: "did not commit",
			run: func(_ *httpSource, out chan Line, _ func()) {
				l := take(out, 2)
				time.Sleep(wait + time.Second)
				l.Ack()
			}},
		{name: "queue full", body: "a\nb\n", queue: 0, code: http.StatusServiceUnavailable, why: "did not commit"},
		{name: "stopping", body: "a\n", queue: 10, code: http.StatusServiceUnavailable, why: "stopping",
			run: func(_ *httpSource, _ chan Line, stop func()) { stop() }},
		{name: "closed", body: "a\n", queue: 10, code: http.StatusServiceUnavailable, why: "stopping",
			run: func(src *httpSource, _ chan Line, _ func()) { src.close() }},
		{name: "stopped mid-request", body: "a\nb\nc\n", queue: 0, code: http.StatusServiceUnavailable, why: "stopping",
			run: func(_ *httpSource, out chan Line, stop func()) { take(out, 1); stop() }},
		{name: "stopped while waiting: the final flush commits", body: "a\nb\n", queue: 10, code: http.StatusOK,
			run: func(_ *httpSource, out chan Line, stop func()) { l := take(out, 2); stop(); l.Ack() }},
		{name: "line too long", body: strings.Repeat("x", maxLine+1) + "\n", queue: 10, code: http.StatusBadRequest, why: "too long"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				out := make(chan Line, tt.queue)
				stopc := make(chan struct{})
				src := &httpSource{out: out, stop: stopc, wait: wait}
				var wg sync.WaitGroup
				if tt.run != nil {
					wg.Go(func() { tt.run(src, out, func() { close(stopc) }) })
					synctest.Wait() // the pipeline is in place before the request
				}
				rec := httptest.NewRecorder()
				src.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/ingest", strings.NewReader(tt.body)))
				wg.Wait()
				if rec.Code != tt.code || !strings.Contains(rec.Body.String(), tt.why) {
					t.Fatalf("answer %d %q, want %d with %q", rec.Code, rec.Body.String(), tt.code, tt.why)
				}
				if got := rec.Header().Get("Retry-After"); (tt.code == http.StatusServiceUnavailable) != (got != "") {
					t.Fatalf("Retry-After %q with %d", got, rec.Code)
				}
			})
		})
	}
}

// TestStdinStopsWhileReadBlocks: a stdin source returns when stopped even
// though its Read cannot be interrupted, so the pipeline can stop.
func TestStdinStopsWhileReadBlocks(t *testing.T) {
	r, w := io.Pipe()
	defer w.Close()
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan Line, 1)
	done := make(chan error, 1)
	go func() { done <- readDetached(ctx, r, out) }()
	w.Write([]byte("one\n"))
	if l := <-out; string(l.Data) != "one" {
		t.Fatalf("got %q", l.Data)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the source did not return while its read blocked")
	}
}

func TestSimulatorDriftAndAnomalies(t *testing.T) {
	sim, err := NewSimulator(SimulatorConfig{Sensors: 1, Rate: 1, Noise: 0.01, AnomalyRate: 0.1, DriftAfter: time.Minute, Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	d, _ := NewDecoder(DecodeConfig{KeyField: "sensor", TimeField: "ts", Fields: []string{"vibration", "current", "anomaly"}}, "sim")
	ratio := func(from, to time.Duration) (float64, int) {
		sum, anomalies, n := 0.0, 0, 0
		for e := from; e < to; e += time.Second {
			r, rej := d.Decode(sim.Reading(0, time.Unix(0, 0).Add(e), e), time.Now())
			if rej != nil {
				t.Fatalf("simulator line rejected: %s", rej.Reason)
			}
			if r.Values[2] == 1 {
				anomalies++
				continue
			}
			sum += r.Values[0] / r.Values[1]
			n++
		}
		return sum / float64(n), anomalies
	}
	before, a1 := ratio(0, time.Minute)
	after, a2 := ratio(time.Minute, 2*time.Minute)
	if after < before*1.5 {
		t.Fatalf("no drift: vibration/current %.4f before, %.4f after", before, after)
	}
	if a1+a2 == 0 || a1+a2 > 30 {
		t.Fatalf("%d anomalies in 120 readings at rate 0.1", a1+a2)
	}
	var m map[string]any
	if err := json.Unmarshal(sim.Reading(3, time.Now(), 0), &m); err != nil || m["sensor"] != "sensor-3" {
		t.Fatalf("reading = %v, %v", m, err)
	}
}

func TestSourceValidation(t *testing.T) {
	for _, c := range []SourceConfig{{Type: "serial"}, {Type: "file"}, {Type: "http", HTTP: HTTPConfig{Listen: "8080"}}, {Type: "mqtt"}, {Type: "simulator"}} {
		var paths []string
		c.Validate("pipelines[0].source", func(p, _ string) { paths = append(paths, p) })
		if len(paths) == 0 {
			t.Errorf("%+v accepted", c)
		} else if !strings.HasPrefix(paths[0], "pipelines[0].source.") {
			t.Errorf("error without path: %v", paths[0])
		}
	}
}

func TestTailResumesAfterOffset(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.log")
	if err := os.WriteFile(path, []byte("one\ntwo\nthree\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := start(t, SourceConfig{Type: "file", File: FileConfig{Path: path, FromStart: true}})
	var offsets []int64
	for i := 0; i < 3; i++ {
		offsets = append(offsets, (<-out).Offset)
	}
	if offsets[0] != 4 || offsets[2] != 14 {
		t.Fatalf("offsets = %v", offsets)
	}
	resumed := startAt(t, SourceConfig{Type: "file", File: FileConfig{Path: path}}, offsets[0])
	if got := collect(t, resumed, 2); got[0] != "two" || got[1] != "three" {
		t.Fatalf("resumed with %q", got)
	}
}

// Each wrong MQTT URL or TLS setting is named by its path.
func TestMQTTSourceValidation(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope.pem")
	for _, c := range []struct {
		mqtt MQTTConfig
		want string // the path of the one error
	}{
		{MQTTConfig{URL: "http://broker:1883", Topic: "s/#"}, "mqtt.url"},
		{MQTTConfig{URL: "tcp://broker:1883", Topic: "s/#", TLS: config.ClientTLS{CAFile: missing}}, "mqtt.tls"},
		{MQTTConfig{URL: "ssl://broker:8883", Topic: "s/#", TLS: config.ClientTLS{CAFile: missing}}, "mqtt.tls.ca_file"},
		{MQTTConfig{URL: "mqtts://broker:8883", Topic: "s/#", TLS: config.ClientTLS{CertFile: missing}}, "mqtt.tls"},
	} {
		var paths []string
		SourceConfig{Type: "mqtt", MQTT: c.mqtt}.Validate("pipelines[0].source", func(p, _ string) { paths = append(paths, p) })
		if want := "pipelines[0].source." + c.want; len(paths) == 0 || paths[0] != want {
			t.Errorf("%+v: errors at %v, want first %s", c.mqtt, paths, want)
		}
	}
	for _, u := range []string{"tcp://b:1883", "mqtt://b:1883", "ssl://b:8883", "tls://b:8883", "mqtts://b:8883", "ws://b:8080/mqtt", "wss://b:8443/mqtt"} {
		var paths []string
		SourceConfig{Type: "mqtt", MQTT: MQTTConfig{URL: u, Topic: "s/#"}}.Validate("p", func(p, _ string) { paths = append(paths, p) })
		if len(paths) > 0 {
			t.Errorf("%s refused at %v", u, paths)
		}
	}
}
