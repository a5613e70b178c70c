package ingest

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

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
	run, err := Open(c, resume, slog.New(slog.DiscardHandler))
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

func TestHTTPPush(t *testing.T) {
	port, _ := service.FreePort()
	addr := service.Addr(port)
	out := start(t, SourceConfig{Type: "http", HTTP: HTTPConfig{Listen: addr}})
	var resp *http.Response
	var err error
	for i := 0; i < 50; i++ {
		if resp, err = http.Post("http://"+addr+"/ingest", "application/x-ndjson", strings.NewReader("a\nb\n")); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("post: %v %v", resp, err)
	}
	if got := collect(t, out, 2); got[0] != "a" || got[1] != "b" {
		t.Fatalf("got %q", got)
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
