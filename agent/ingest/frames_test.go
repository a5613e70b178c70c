package ingest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/outpost-edge/outpost/test/service"
)

// t0 is the frame tests' clock: files are dropped with mtimes around it.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func pngFrame(tag string) []byte  { return append([]byte("\x89PNG\r\n\x1a\n"), tag...) }
func jpegFrame(tag string) []byte { return append([]byte("\xff\xd8\xff\xe0"), tag...) }

// drop writes data as dir/rel the way a camera should: into a dot file,
// then renamed into place, with mtime mod.
func drop(t *testing.T, dir, rel string, data []byte, mod time.Time) {
	t.Helper()
	path := filepath.Join(dir, rel)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(filepath.Dir(path), ".incoming-"+filepath.Base(rel))
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(tmp, mod, mod); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func exists(path string) bool { _, err := os.Stat(path); return err == nil }

// frames opens an image source whose clock reads *now.
func frames(t *testing.T, c ImageConfig, now *time.Time) *FrameSource {
	t.Helper()
	s, err := OpenFrames(c, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	s.now = func() time.Time { return *now }
	return s
}

// pollOnce runs one poll and returns the frames it sent.
func pollOnce(t *testing.T, s *FrameSource) []Line {
	t.Helper()
	out := make(chan Line, 100)
	if !s.poll(context.Background(), out) {
		t.Fatal("poll stopped")
	}
	close(out)
	var got []Line
	for l := range out {
		if l.Data != nil || l.Frame == nil || l.Ack == nil {
			t.Fatalf("a frame line needs Frame and Ack and no Data: %+v", l)
		}
		got = append(got, l)
	}
	return got
}

func names(ls []Line) []string {
	var n []string
	for _, l := range ls {
		n = append(n, l.Frame.Key+"/"+l.Frame.Name)
	}
	return n
}

func TestFramesDeliveredOnceInNameOrderUntilAcked(t *testing.T) {
	dir := t.TempDir()
	now := t0
	old := t0.Add(-time.Hour)
	drop(t, dir, "b.png", pngFrame("b"), old)
	drop(t, dir, "a.jpg", jpegFrame("a"), old.Add(time.Second))
	drop(t, dir, "cam2/c.jpeg", jpegFrame("c"), old)
	drop(t, dir, "cam1/a.PNG", pngFrame("cam1-a"), old)
	drop(t, dir, "notes.txt", []byte("not a frame"), old)
	drop(t, dir, ".hidden.png", pngFrame("hidden"), old)
	drop(t, dir, "cam1/deep/x.png", pngFrame("too deep"), old)
	drop(t, dir, ".rejected/z.png", pngFrame("rejected"), old)
	s := frames(t, ImageConfig{Dir: dir, Key: "front"}, &now)

	got := pollOnce(t, s)
	want := []string{"cam1/a.PNG", "front/a.jpg", "front/b.png", "cam2/c.jpeg"}
	if fmt.Sprint(names(got)) != fmt.Sprint(want) {
		t.Fatalf("delivered %v, want %v", names(got), want)
	}
	if f := got[1].Frame; !bytes.Equal(f.Data, jpegFrame("a")) || !f.Time.Equal(old.Add(time.Second)) {
		t.Fatalf("frame a.jpg: %q at %v", f.Data, f.Time)
	}
	// In flight: kept and not sent again.
	if again := pollOnce(t, s); len(again) != 0 {
		t.Fatalf("in-flight frames sent again: %v", names(again))
	}
	for _, rel := range []string{"a.jpg", "b.png", "cam1/a.PNG", "cam2/c.jpeg"} {
		if !exists(filepath.Join(dir, rel)) {
			t.Fatalf("%s removed before its Ack", rel)
		}
	}
	got[1].Ack()
	got[1].Ack() // a second call is harmless
	if exists(filepath.Join(dir, "a.jpg")) {
		t.Fatal("a.jpg kept after its Ack")
	}
	if !exists(filepath.Join(dir, "b.png")) {
		t.Fatal("b.png removed by another frame's Ack")
	}
	drop(t, dir, "cam1/d.png", pngFrame("d"), old)
	if next := pollOnce(t, s); fmt.Sprint(names(next)) != "[cam1/d.png]" {
		t.Fatalf("next poll delivered %v, want only the new file", names(next))
	}
	if n, c := s.Stats.Files.Load(), s.Stats.Committed.Load(); n != 5 || c != 1 {
		t.Fatalf("stats: %d files, %d committed", n, c)
	}
}

// TestFramesRedeliveredAfterRestart runs the source through Open like a
// pipeline does: what was not acknowledged when it stopped comes again.
func TestFramesRedeliveredAfterRestart(t *testing.T) {
	dir := t.TempDir()
	old := time.Now().Add(-time.Hour)
	drop(t, dir, "cam1/001.png", pngFrame("1"), old)
	drop(t, dir, "cam1/002.png", pngFrame("2"), old)
	drop(t, dir, "cam1/003.png", pngFrame("3"), old)
	c := SourceConfig{Type: "image", Image: ImageConfig{Dir: dir, Poll: 5 * time.Millisecond}}
	run, err := Open(c, 0, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan Line, 10)
	done := make(chan error, 1)
	go func() { done <- run(ctx, out) }()
	var first []Line
	for len(first) < 3 {
		select {
		case l := <-out:
			first = append(first, l)
		case <-time.After(10 * time.Second):
			t.Fatalf("got %d of 3 frames", len(first))
		}
	}
	if fmt.Sprint(names(first)) != "[cam1/001.png cam1/002.png cam1/003.png]" {
		t.Fatalf("delivered %v", names(first))
	}
	first[0].Ack()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// The pipeline's final flush may ack after the source returned.
	first[2].Ack()

	now := time.Now()
	s := frames(t, c.Image, &now)
	if got := pollOnce(t, s); fmt.Sprint(names(got)) != "[cam1/002.png]" {
		t.Fatalf("after the restart %v, want the unacknowledged cam1/002.png", names(got))
	}
	// A second Run of the same source forgets what its first left in flight.
	ctx2, cancel2 := context.WithCancel(context.Background())
	out2 := make(chan Line, 10)
	done2 := make(chan error, 1)
	go func() { done2 <- s.Run(ctx2, out2) }()
	select {
	case l := <-out2:
		if l.Frame.Name != "002.png" {
			t.Fatalf("second Run delivered %s", l.Frame.Name)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a second Run did not deliver the unacknowledged frame")
	}
	cancel2()
	if err := <-done2; err != nil {
		t.Fatal(err)
	}
}

func TestFramesWaitUntilSettled(t *testing.T) {
	dir := t.TempDir()
	now := t0
	s := frames(t, ImageConfig{Dir: dir, Key: "k", Settle: 500 * time.Millisecond}, &now)

	// Modified within the settle time: not yet.
	drop(t, dir, "fresh.png", pngFrame("fresh"), t0.Add(-100*time.Millisecond))
	if got := pollOnce(t, s); len(got) != 0 {
		t.Fatalf("a file modified 100ms ago was delivered: %v", names(got))
	}
	now = t0.Add(time.Second)
	if got := pollOnce(t, s); fmt.Sprint(names(got)) != "[k/fresh.png]" {
		t.Fatalf("settled file: %v", names(got))
	}

	// Written in place, with an old mtime kept: delivered only once its
	// size stays the same for a poll.
	path := filepath.Join(dir, "growing.jpg")
	old := t0.Add(-time.Hour)
	if err := os.WriteFile(path, jpegFrame("part"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chtimes(path, now, now) // just modified
	if got := pollOnce(t, s); len(got) != 0 {
		t.Fatalf("a file being written was delivered: %v", names(got))
	}
	f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString("-rest")
	f.Close()
	os.Chtimes(path, old, old)
	if got := pollOnce(t, s); len(got) != 0 {
		t.Fatalf("a file that changed size since the last poll was delivered: %v", names(got))
	}
	got := pollOnce(t, s)
	if fmt.Sprint(names(got)) != "[k/growing.jpg]" || !bytes.Equal(got[0].Frame.Data, jpegFrame("part-rest")) {
		t.Fatalf("settled file: %v", names(got))
	}
}

func TestFramesRejectedFilesMoved(t *testing.T) {
	dir := t.TempDir()
	now := t0
	old := t0.Add(-time.Hour)
	s := frames(t, ImageConfig{Dir: dir, MaxBytes: 100}, &now)
	drop(t, dir, "cam1/big.png", pngFrame(strings.Repeat("x", 200)), old)
	drop(t, dir, "fake.jpg", []byte("GIF89a, not a jpeg"), old)
	drop(t, dir, "ok.png", pngFrame("ok"), old)
	if got := pollOnce(t, s); fmt.Sprint(names(got)) != "[/ok.png]" {
		t.Fatalf("delivered %v", names(got))
	}
	for _, rel := range []string{"cam1/big.png", "fake.jpg"} {
		if exists(filepath.Join(dir, rel)) || !exists(filepath.Join(dir, rejectedDir, rel)) {
			t.Fatalf("%s not moved to %s", rel, rejectedDir)
		}
	}
	if n := s.Stats.Rejected.Load(); n != 2 {
		t.Fatalf("rejected_total %d", n)
	}
	if got := pollOnce(t, s); len(got) != 0 {
		t.Fatalf("rejected files sent: %v", names(got))
	}
}

// countHandler counts log records.
type countHandler struct {
	slog.Handler
	mu sync.Mutex
	n  int
}

func (h *countHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *countHandler) Handle(context.Context, slog.Record) error {
	h.mu.Lock()
	h.n++
	h.mu.Unlock()
	return nil
}

func TestFramesUnreadableRetriedAndLoggedOnce(t *testing.T) {
	dir := t.TempDir()
	now := t0
	logs := &countHandler{Handler: slog.DiscardHandler}
	s, err := OpenFrames(ImageConfig{Dir: dir}, slog.New(logs))
	if err != nil {
		t.Fatal(err)
	}
	s.now = func() time.Time { return now }
	fails := 2
	s.open = func(p string) (*os.File, error) {
		if fails > 0 {
			fails--
			return nil, errors.New("input/output error")
		}
		return os.Open(p)
	}
	drop(t, dir, "a.png", pngFrame("a"), t0.Add(-time.Hour))
	for range 2 {
		if got := pollOnce(t, s); len(got) != 0 {
			t.Fatalf("unreadable file delivered: %v", names(got))
		}
	}
	if logs.n != 1 || s.Stats.ReadErrors.Load() != 2 {
		t.Fatalf("%d log lines, %d read errors; want 1 and 2", logs.n, s.Stats.ReadErrors.Load())
	}
	if got := pollOnce(t, s); fmt.Sprint(names(got)) != "[/a.png]" {
		t.Fatalf("readable again: %v", names(got))
	}
}

// TestFramesInFlightBounded: the source holds at most MaxInFlight files
// read and unacknowledged; an Ack lets the next one through.
func TestFramesInFlightBounded(t *testing.T) {
	dir := t.TempDir()
	old := t0.Add(-time.Hour)
	for i := range 3 {
		drop(t, dir, fmt.Sprintf("%d.png", i), pngFrame("f"), old)
	}
	synctest.Test(t, func(t *testing.T) {
		now := t0
		s := frames(t, ImageConfig{Dir: dir, MaxInFlight: 2}, &now)
		ctx, cancel := context.WithCancel(context.Background())
		out := make(chan Line, 10)
		done := make(chan bool)
		go func() { done <- s.poll(ctx, out) }()
		synctest.Wait()
		if len(out) != 2 {
			t.Fatalf("%d frames in flight, want 2", len(out))
		}
		(<-out).Ack()
		synctest.Wait()
		if len(out) != 2 {
			t.Fatalf("after an Ack %d more frames, want the third", len(out)-1)
		}
		if !<-done {
			t.Fatal("poll stopped")
		}
		cancel()
	})
}

func postFrame(t *testing.T, addr, query string, body []byte) *http.Response {
	t.Helper()
	var err error
	for range 100 {
		var resp *http.Response
		if resp, err = http.Post("http://"+addr+"/frames"+query, "image/png", bytes.NewReader(body)); err == nil {
			return resp
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal(err)
	return nil
}

// TestFramesPOST runs the HTTP part through Open: 200 only after the
// pipeline's Ack, 413 and 415 for what can never be a frame, and no
// answer at all once the source returned.
func TestFramesPOST(t *testing.T) {
	port, _ := service.FreePort()
	addr := service.Addr(port)
	run, err := Open(SourceConfig{Type: "image", Image: ImageConfig{Listen: addr, Key: "door", MaxBytes: 100}}, 0, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan Line, 10)
	done := make(chan error, 1)
	go func() { done <- run(ctx, out) }()
	stop := sync.OnceValue(func() error { cancel(); return <-done })
	defer stop()

	for _, tt := range []struct{ query, key string }{{"?key=cam1", "cam1"}, {"", "door"}} {
		answered := make(chan *http.Response, 1)
		go func() { answered <- postFrame(t, addr, tt.query, pngFrame("p")) }()
		var l Line
		select {
		case l = <-out:
		case resp := <-answered:
			t.Fatalf("answered %d before the frame was handed over", resp.StatusCode)
		case <-time.After(10 * time.Second):
			t.Fatal("no frame")
		}
		if f := l.Frame; f == nil || f.Key != tt.key || f.Name != "" || !bytes.Equal(f.Data, pngFrame("p")) || f.Time.IsZero() || l.Data != nil {
			t.Fatalf("POST%s: line %+v frame %+v", tt.query, l, l.Frame)
		}
		select {
		case resp := <-answered:
			t.Fatalf("answered %d before the commit", resp.StatusCode)
		default:
		}
		l.Ack()
		if resp := <-answered; resp.StatusCode != http.StatusOK {
			t.Fatalf("after the commit: %d", resp.StatusCode)
		}
	}
	if resp := postFrame(t, addr, "?key=cam1", pngFrame(strings.Repeat("x", 200))); resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("oversized frame: %d", resp.StatusCode)
	}
	if resp := postFrame(t, addr, "?key=cam1", []byte("hello")); resp.StatusCode != http.StatusUnsupportedMediaType {
		t.Fatalf("not an image: %d", resp.StatusCode)
	}
	if len(out) != 0 {
		t.Fatal("a refused POST reached the pipeline")
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if resp, err := http.Post("http://"+addr+"/frames", "image/png", bytes.NewReader(pngFrame("late"))); err == nil {
		t.Fatalf("answered %d after the source returned", resp.StatusCode)
	}
}

// TestFramesPOSTUnavailable drives the handler in a synctest bubble: 503
// with Retry-After when the pipeline does not take or commit the frame
// within the commit wait, or is stopping.
func TestFramesPOSTUnavailable(t *testing.T) {
	const wait = 5 * time.Second
	for _, tt := range []struct {
		name  string
		queue int
		run   func(out chan Line, stop func())
		code  int
		why   string
	}{
		{name: "committed", queue: 1, code: http.StatusOK, run: func(out chan Line, _ func()) { (<-out).Ack() }},
		{name: "queue full", queue: 0, code: http.StatusServiceUnavailable, why: "did not commit"},
		{name: "not committed", queue: 1, code: http.StatusServiceUnavailable, why: "did not commit",
			run: func(out chan Line, _ func()) { l := <-out; time.Sleep(wait + time.Second); l.Ack() }},
		{name: "stopping", queue: 1, code: http.StatusServiceUnavailable, why: "stopping",
			run: func(_ chan Line, stop func()) { stop() }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				now := t0
				fs := frames(t, ImageConfig{Listen: "127.0.0.1:0"}, &now)
				out := make(chan Line, tt.queue)
				stopc := make(chan struct{})
				h := &frameHandler{src: &httpSource{out: out, stop: stopc, wait: wait}, fs: fs}
				var wg sync.WaitGroup
				if tt.run != nil {
					wg.Go(func() { tt.run(out, func() { close(stopc) }) })
					synctest.Wait()
				}
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/frames?key=cam1", bytes.NewReader(pngFrame("p"))))
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

func TestImageSourceValidation(t *testing.T) {
	for _, tt := range []struct {
		c    ImageConfig
		path string
	}{
		{ImageConfig{}, "image.dir"},
		{ImageConfig{Listen: "8080"}, "image.listen"},
		{ImageConfig{Dir: "/d", Poll: -1}, "image.poll"},
		{ImageConfig{Dir: "/d", Settle: -1}, "image.settle"},
		{ImageConfig{Dir: "/d", MaxBytes: -1}, "image.max_bytes"},
		{ImageConfig{Dir: "/d", MaxInFlight: -1}, "image.max_in_flight"},
		{ImageConfig{Listen: ":8080", CommitTimeout: -1}, "image.commit_timeout"},
		{ImageConfig{Dir: "/d", Key: strings.Repeat("k", 300)}, "image.key"},
	} {
		var paths []string
		SourceConfig{Type: "image", Image: tt.c}.Validate("pipelines[0].source", func(p, _ string) { paths = append(paths, p) })
		if fmt.Sprint(paths) != "[pipelines[0].source."+tt.path+"]" {
			t.Errorf("%+v: errors at %v, want %s", tt.c, paths, tt.path)
		}
		if _, err := Open(SourceConfig{Type: "image", Image: tt.c}, 0, slog.New(slog.DiscardHandler), nil); !errors.Is(err, ErrConfig) {
			t.Errorf("%+v opened: %v", tt.c, err)
		}
	}
	var paths []string
	SourceConfig{Type: "image", Image: ImageConfig{Dir: "/d", Listen: "127.0.0.1:9000"}}.Validate("s", func(p, _ string) { paths = append(paths, p) })
	if len(paths) != 0 {
		t.Errorf("a valid config refused at %v", paths)
	}
}

// TestFramesListenFailureStopsPoller: when the HTTP part cannot listen,
// Run returns its error and takes the poller down with it.
func TestFramesListenFailureStopsPoller(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	s, err := OpenFrames(ImageConfig{Dir: t.TempDir(), Listen: ln.Addr().String()}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Run(context.Background(), make(chan Line)); err == nil || !strings.Contains(err.Error(), "listen") {
		t.Fatalf("Run on a taken port: %v", err)
	}
}
