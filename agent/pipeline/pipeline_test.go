package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/agent/ingest"
	"github.com/outpost-edge/outpost/agent/outbox"
	"github.com/outpost-edge/outpost/deploy/config"
	"github.com/outpost-edge/outpost/test/service"
)

// memOutbox records appends; the SQLite outbox has its own tests.
type memOutbox struct {
	mu     sync.Mutex
	items  []outbox.Item
	cp     map[string][]byte
	fails  int // refuse this many writes, as a full disk would
	writes int // successful writes
}

func (m *memOutbox) AppendCheckpoint(_ context.Context, items []outbox.Item, name string, state []byte) ([]uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fails > 0 {
		m.fails--
		return nil, errors.New("database or disk is full")
	}
	m.writes++
	m.items = append(m.items, items...)
	if m.cp == nil {
		m.cp = map[string][]byte{}
	}
	m.cp[name] = state
	return make([]uint64, len(items)), nil
}

func (m *memOutbox) Checkpoint(_ context.Context, name string) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cp[name], nil
}

func (m *memOutbox) byStream(s string) []map[string]any {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []map[string]any
	for _, it := range m.items {
		if it.Stream == s {
			var v map[string]any
			_ = json.Unmarshal(it.Data, &v)
			out = append(out, v)
		}
	}
	return out
}

// runUntil runs a pipeline until done holds (or 10 s pass), lets the last
// flush land for settle, then stops it and returns it for its stats.
func runUntil(t *testing.T, cfg Config, ob *memOutbox, done func() bool, settle time.Duration) *Pipeline {
	t.Helper()
	p, err := New(context.Background(), cfg, ob, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- p.Run(ctx) }()
	for deadline := time.Now().Add(10 * time.Second); !done() && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(settle)
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	return p
}

func fileConfig(path string) Config {
	return Config{
		Name:         "vib",
		Source:       ingest.SourceConfig{Type: "file", File: ingest.FileConfig{Path: path, FromStart: true}},
		Decode:       ingest.DecodeConfig{KeyField: "sensor", TimeField: "ts", Fields: []string{"v"}},
		Window:       WindowConfig{Kind: "tumbling", Size: 10 * time.Second},
		Aggregations: []string{"count", "mean", "max"},
	}
}

// TestWindowsLateAndDeadReachTheOutbox runs a file through a tumbling
// window: results, the late side output and rejected lines all become
// outbox records of their streams.
func TestWindowsLateAndDeadReachTheOutbox(t *testing.T) {
	path := filepath.Join(t.TempDir(), "in.jsonl")
	lines := []string{
		`{"sensor":"s1","ts":"2026-11-25T12:00:01Z","v":1}`,
		`{"sensor":"s1","ts":"2026-11-25T12:00:05Z","v":3}`,
		`{"sensor":"s1","ts":"2026-11-25T12:00:11Z","v":7}`, // closes [0,10)
		`{"sensor":"s1","ts":"2026-11-25T12:00:02Z","v":9}`, // late
		`garbage`,
		`{"sensor":"s1","ts":"2026-11-25T12:00:12Z","v":"NaN"}`,
	}
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ob := &memOutbox{}
	p := runUntil(t, fileConfig(path), ob, func() bool { return len(ob.byStream("dead")) >= 2 }, 0)
	wins := ob.byStream("windows")
	if len(wins) != 1 {
		t.Fatalf("windows = %v", wins)
	}
	f := wins[0]["fields"].(map[string]any)["v"].(map[string]any)
	if wins[0]["key"] != "s1" || wins[0]["firing"] != "final" || f["count"] != 2.0 || f["mean"] != 2.0 || f["max"] != 3.0 {
		t.Fatalf("window = %v", wins[0])
	}
	if late := ob.byStream("late"); len(late) != 1 || late[0]["key"] != "s1" {
		t.Fatalf("late = %v", late)
	}
	dead := ob.byStream("dead")
	if len(dead) != 2 || dead[0]["reason"] != "not a JSON object" || !strings.Contains(dead[1]["reason"].(string), "NaN") {
		t.Fatalf("dead = %v", dead)
	}
	if p.Stats.Events.Load() != 4 || p.Stats.Rejected.Load() != 2 || p.Stats.Late.Load() != 1 || p.Stats.Windows.Load() != 1 {
		t.Fatalf("stats events=%d rejected=%d late=%d windows=%d", p.Stats.Events.Load(), p.Stats.Rejected.Load(), p.Stats.Late.Load(), p.Stats.Windows.Load())
	}
}

func TestValidateNamesPaths(t *testing.T) {
	c := fileConfig("")
	c.Name = "bad name"
	c.Window.Size = 0
	c.Aggregations = []string{"mean", "median"}
	var errs config.Errors
	c.Validate("pipelines[2]", &errs)
	want := []string{"pipelines[2].name", "pipelines[2].source.file.path", "pipelines[2].window", "pipelines[2].aggregations[1]"}
	if len(errs) != len(want) {
		t.Fatalf("errors = %v", errs)
	}
	for i, w := range want {
		if errs[i].Path != w {
			t.Errorf("error %d at %s, want %s", i, errs[i].Path, w)
		}
	}
}

// TestResumeFromCheckpoint stops a pipeline mid-file and starts another on
// the same store: together they emit each window once, with all events.
func TestResumeFromCheckpoint(t *testing.T) {
	path := filepath.Join(t.TempDir(), "in.jsonl")
	var lines []string
	for i := 0; i < 100; i++ {
		lines = append(lines, fmt.Sprintf(`{"sensor":"s%d","ts":"2026-11-25T12:00:%02dZ","v":1}`, i%2, i/2))
	}
	write := func(ls []string) {
		f, _ := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		f.WriteString(strings.Join(ls, "\n") + "\n")
		f.Close()
	}
	write(lines[:50])
	ob := &memOutbox{}
	windows := func(n int) func() bool { return func() bool { return len(ob.byStream("windows")) >= n } }
	// The settle time lets the last checkpoint land.
	runUntil(t, fileConfig(path), ob, windows(4), 150*time.Millisecond) // seconds 0..24: [0,10) and [10,20) for 2 keys
	write(lines[50:])
	runUntil(t, fileConfig(path), ob, windows(8), 150*time.Millisecond) // seconds 25..49 close [20,30) and [30,40)
	wins := ob.byStream("windows")
	seen := map[string]bool{}
	for _, w := range wins {
		id := fmt.Sprint(w["key"], w["start"])
		if seen[id] {
			t.Fatalf("window %s emitted twice", id)
		}
		seen[id] = true
		if c := w["fields"].(map[string]any)["v"].(map[string]any)["count"]; c != 10.0 {
			t.Fatalf("window %s counted %v events, want 10", id, c)
		}
	}
	if len(wins) != 8 {
		t.Fatalf("%d windows, want 8", len(wins))
	}
}

// TestFullDiskPausesAndLosesNothing: while the outbox refuses writes the
// pipeline keeps running, counts the failures and stops taking input; when
// writes work again every window arrives.
func TestFullDiskPausesAndLosesNothing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "in.jsonl")
	var lines []string
	for i := 0; i < 40; i++ {
		lines = append(lines, fmt.Sprintf(`{"sensor":"s","ts":"2026-11-25T12:00:%02dZ","v":1}`, i))
	}
	os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o644)
	ob := &memOutbox{fails: 5}
	p := runUntil(t, fileConfig(path), ob, func() bool { return len(ob.byStream("windows")) >= 3 }, 100*time.Millisecond)
	if p.Stats.WriteErrors.Load() != 5 {
		t.Fatalf("write errors = %d", p.Stats.WriteErrors.Load())
	}
	if n := len(ob.byStream("windows")); n != 3 {
		t.Fatalf("%d windows after the disk recovered, want 3 ([0,10) [10,20) [20,30))", n)
	}
}

// TestSourceMessagesAckedOnlyAfterCommit: lines that carry an Ack (MQTT
// sources) are acknowledged only after a checkpoint holding them is
// written; while the outbox refuses writes, nothing is acknowledged.
func TestSourceMessagesAckedOnlyAfterCommit(t *testing.T) {
	ob := &memOutbox{fails: 3}
	p, err := New(context.Background(), fileConfig("/nonexistent"), ob, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var writesAtAck []int
	p.source = func(ctx context.Context, out chan<- ingest.Line) error {
		for i := 0; i < 3; i++ {
			out <- ingest.Line{Data: []byte(fmt.Sprintf(`{"sensor":"s","ts":"2026-11-25T12:00:%02dZ","v":1}`, i)), Arrival: time.Now(),
				Ack: func() {
					ob.mu.Lock()
					w := ob.writes
					ob.mu.Unlock()
					mu.Lock()
					writesAtAck = append(writesAtAck, w)
					mu.Unlock()
				}}
		}
		<-ctx.Done()
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- p.Run(ctx) }()
	acked := func() int { mu.Lock(); defer mu.Unlock(); return len(writesAtAck) }
	for deadline := time.Now().Add(10 * time.Second); acked() < 3 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if p.Stats.WriteErrors.Load() != 3 {
		t.Errorf("write errors = %d, want 3", p.Stats.WriteErrors.Load())
	}
	if len(writesAtAck) != 3 {
		t.Fatalf("%d of 3 messages acknowledged", len(writesAtAck))
	}
	for i, w := range writesAtAck {
		if w < 1 {
			t.Errorf("message %d acknowledged before any checkpoint was written", i)
		}
	}
}

func reading(sec int) []byte {
	return []byte(fmt.Sprintf(`{"sensor":"s","ts":"2026-11-25T12:00:%02dZ","v":1}`, sec))
}

// TestStopCommitsWhatTheSourceHandedOver: when ctx ends, Run stops the
// source but processes and commits every line the source hands over until
// it returns (an HTTP push still in flight), and acknowledges them, before
// Run itself returns.
func TestStopCommitsWhatTheSourceHandedOver(t *testing.T) {
	ob := &memOutbox{}
	p, err := New(context.Background(), fileConfig("/nonexistent"), ob, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	var returned atomic.Bool
	writesAtAck := -1
	p.source = func(ctx context.Context, out chan<- ingest.Line) error {
		out <- ingest.Line{Data: reading(1), Arrival: time.Now()}
		out <- ingest.Line{Data: reading(2), Arrival: time.Now()}
		<-ctx.Done()
		out <- ingest.Line{Data: reading(3), Arrival: time.Now()}
		out <- ingest.Line{Data: reading(11), Arrival: time.Now(), Ack: func() { // closes [0,10)
			ob.mu.Lock()
			writesAtAck = ob.writes
			ob.mu.Unlock()
		}}
		returned.Store(true)
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := p.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if !returned.Load() {
		t.Fatal("Run returned before its source")
	}
	if writesAtAck < 1 {
		t.Fatalf("acknowledged with %d commits written", writesAtAck)
	}
	wins := ob.byStream("windows")
	if len(wins) != 1 || wins[0]["fields"].(map[string]any)["v"].(map[string]any)["count"] != 3.0 {
		t.Fatalf("windows committed at stop: %v", wins)
	}
}

// TestStopWithStalledOutboxAcksNothing: if the final commit fails, Run
// reports it, acknowledges nothing, and still waits for its source.
func TestStopWithStalledOutboxAcksNothing(t *testing.T) {
	ob := &memOutbox{fails: 1 << 30}
	p, err := New(context.Background(), fileConfig("/nonexistent"), ob, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	var returned, acked atomic.Bool
	p.source = func(ctx context.Context, out chan<- ingest.Line) error {
		out <- ingest.Line{Data: reading(1), Arrival: time.Now(), Ack: func() { acked.Store(true) }}
		<-ctx.Done()
		returned.Store(true)
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := p.Run(ctx); err == nil {
		t.Fatal("Run hid a failed final commit")
	}
	if !returned.Load() || acked.Load() {
		t.Fatalf("source returned %v, line acknowledged %v", returned.Load(), acked.Load())
	}
}

// TestHTTPPushAnsweredByCommit runs an HTTP source pipeline: a push gets
// 200 only once its lines are committed, and 503 with Retry-After while
// the outbox refuses writes; when it recovers, pushes get 200 again.
func TestHTTPPushAnsweredByCommit(t *testing.T) {
	port, err := service.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := service.Addr(port)
	cfg := fileConfig("")
	cfg.Source = ingest.SourceConfig{Type: "http", HTTP: ingest.HTTPConfig{Listen: addr, CommitTimeout: 200 * time.Millisecond}}
	ob := &memOutbox{}
	p, err := New(context.Background(), cfg, ob, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- p.Run(ctx) }()
	post := func(body string) *http.Response {
		t.Helper()
		for i := 0; ; i++ {
			resp, err := http.Post("http://"+addr+"/ingest", "application/x-ndjson", strings.NewReader(body))
			if err == nil {
				resp.Body.Close()
				return resp
			}
			if i == 100 {
				t.Fatal(err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	writes := func() int { ob.mu.Lock(); defer ob.mu.Unlock(); return ob.writes }
	if resp := post(string(reading(1)) + "\n" + string(reading(2)) + "\n"); resp.StatusCode != http.StatusOK {
		t.Fatalf("push: %s", resp.Status)
	}
	if writes() < 1 || p.Stats.Events.Load() != 2 {
		t.Fatalf("200 with %d commits and %d events", writes(), p.Stats.Events.Load())
	}
	ob.mu.Lock()
	ob.fails = 1 << 30
	ob.mu.Unlock()
	if resp := post(string(reading(3)) + "\n"); resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("push to a stalled outbox: %s, Retry-After %q", resp.Status, resp.Header.Get("Retry-After"))
	}
	ob.mu.Lock()
	ob.fails = 0
	ob.mu.Unlock()
	if resp := post(string(reading(4)) + "\n"); resp.StatusCode != http.StatusOK {
		t.Fatalf("push after the outbox recovered: %s", resp.Status)
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}
