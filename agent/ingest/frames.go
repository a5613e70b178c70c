package ingest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"golang.org/x/sync/errgroup"
)

// Frame is one camera image: a JPEG or PNG, not decoded here
// (models/features.DecodeFrame does that in the pipeline).
type Frame struct {
	Key  string    // the camera; "" leaves it to the pipeline (its name)
	Name string    // the file's name, "" for a POST
	Data []byte    // the encoded image
	Time time.Time // the frame's time: the file's mtime, a POST's arrival
}

// ImageConfig reads camera frames from a watched directory, from HTTP
// POSTs, or both.
//
// A camera (or whatever copies its frames) must drop a file into Dir
// atomically: write it under a name the source ignores (a dot file, or
// another extension such as x.jpg.part) in the same file system and rename
// it into place. The source also skips a file whose size or mtime changed
// since the last poll or that was modified within Settle, so a writer
// that writes in place is usually, but not reliably, waited for.
//
// Dir/x.jpg gets Key; Dir/<key>/x.jpg gets <key>. Only .jpg, .jpeg and
// .png regular files (any case) count; dot files, dot directories (such as
// .rejected) and anything deeper are ignored. A file is removed once the
// pipeline committed what came of it (Line.Ack); files still there when
// the agent starts are sent again (at least once).
type ImageConfig struct {
	Dir  string        `yaml:"dir"`  // the watched directory
	Key  string        `yaml:"key"`  // key of frames in Dir itself and of POSTs without ?key=; empty: the pipeline's name
	Poll time.Duration `yaml:"poll"` // default 250ms
	// Settle is how long a file must go unmodified before it is read.
	Settle time.Duration `yaml:"settle"` // default 500ms
	// MaxBytes bounds one frame: a bigger file is moved to Dir/.rejected,
	// a bigger POST gets 413.
	MaxBytes int64 `yaml:"max_bytes"` // default 16 MiB
	// MaxInFlight bounds the files read and not yet committed, and so the
	// memory the source holds (at most MaxInFlight × MaxBytes).
	MaxInFlight int `yaml:"max_in_flight"` // default 8
	// Listen is host:port for POST /frames?key=cam1 with a JPEG or PNG
	// body: answered 200 once the pipeline committed the frame, 503 with
	// Retry-After when it does not within CommitTimeout or is stopping (as
	// the http source).
	Listen        string        `yaml:"listen"`
	CommitTimeout time.Duration `yaml:"commit_timeout"` // default 5s
}

const (
	defaultFramePoll     = 250 * time.Millisecond
	defaultFrameSettle   = 500 * time.Millisecond
	defaultFrameMaxBytes = 16 << 20
	defaultFrameInFlight = 8
	maxFrameKey          = 256
	// rejectedDir, under Dir, holds files that will never be frames.
	rejectedDir = ".rejected"
)

func (c ImageConfig) validate(field func(f, why string)) {
	if c.Dir == "" && c.Listen == "" {
		field("image.dir", "dir or listen (or both) must be set")
	}
	if c.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Listen); err != nil {
			field("image.listen", "must be host:port")
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"poll", c.Poll}, {"settle", c.Settle}, {"commit_timeout", c.CommitTimeout}} {
		if d.v < 0 {
			field("image."+d.name, "must not be negative")
		}
	}
	if c.MaxBytes < 0 {
		field("image.max_bytes", "must not be negative (0: 16 MiB)")
	}
	if c.MaxInFlight < 0 {
		field("image.max_in_flight", "must not be negative (0: 8)")
	}
	if len(c.Key) > maxFrameKey || !utf8.ValidString(c.Key) {
		field("image.key", fmt.Sprintf("must be UTF-8 of at most %d bytes", maxFrameKey))
	}
}

// FrameStats counts what an image source did.
type FrameStats struct {
	Files      atomic.Int64 // files handed to the pipeline (again after a restart)
	Posts      atomic.Int64 // POSTed frames handed to the pipeline
	Committed  atomic.Int64 // frames the pipeline acknowledged
	Rejected   atomic.Int64 // files moved to .rejected (too big, not JPEG/PNG)
	Refused    atomic.Int64 // POSTs answered 4xx
	ReadErrors atomic.Int64 // failed reads of files (retried on the next poll)
}

// FrameSource is an image source; Open returns its Run.
type FrameSource struct {
	Stats FrameStats

	cfg  ImageConfig
	log  *slog.Logger
	now  func() time.Time
	open func(string) (*os.File, error) // os.Open; tests inject failures

	mu       sync.Mutex
	inflight map[string]*flight // path → the frame sent and not acknowledged
	freed    chan struct{}      // signalled when an ack frees a slot

	// The poller's own state.
	prev      map[string]fileStat // what the last poll saw
	failed    map[string]bool     // files whose error was logged (until they read or go)
	dirFailed map[string]bool     // directories that failed to list in the last poll
}

type flight struct{}

type fileStat struct {
	size int64
	mod  time.Time
}

// OpenFrames checks c and applies its defaults.
func OpenFrames(c ImageConfig, log *slog.Logger) (*FrameSource, error) {
	var bad []string
	c.validate(func(f, why string) { bad = append(bad, "source."+f+": "+why) })
	if len(bad) > 0 {
		return nil, fmt.Errorf("%w: %s", ErrConfig, strings.Join(bad, "; "))
	}
	if c.Poll == 0 {
		c.Poll = defaultFramePoll
	}
	if c.Settle == 0 {
		c.Settle = defaultFrameSettle
	}
	if c.MaxBytes == 0 {
		c.MaxBytes = defaultFrameMaxBytes
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = defaultFrameInFlight
	}
	return &FrameSource{cfg: c, log: log, now: time.Now, open: os.Open,
		inflight: map[string]*flight{}, freed: make(chan struct{}, 1),
		prev: map[string]fileStat{}, failed: map[string]bool{}, dirFailed: map[string]bool{}}, nil
}

// Run polls Dir and serves Listen until ctx ends; it returns once the
// poller and every HTTP handler are done, so nothing reaches out after.
// Frames sent by an earlier Run that were never acknowledged are sent
// again.
func (s *FrameSource) Run(ctx context.Context, out chan<- Line) error {
	s.mu.Lock()
	clear(s.inflight)
	s.mu.Unlock()
	clear(s.prev)
	g, gctx := errgroup.WithContext(ctx)
	if s.cfg.Dir != "" {
		g.Go(func() error {
			t := time.NewTicker(s.cfg.Poll)
			defer t.Stop()
			for s.poll(gctx, out) {
				select {
				case <-gctx.Done():
					return nil
				case <-t.C:
				}
			}
			return nil
		})
	}
	if s.cfg.Listen != "" {
		src := &httpSource{out: out, stop: gctx.Done(), wait: HTTPConfig{CommitTimeout: s.cfg.CommitTimeout}.commitTimeout()}
		h := &frameHandler{src: src, fs: s}
		g.Go(func() error { return src.serve(gctx, s.cfg.Listen, "POST /frames", h, s.log) })
	}
	return g.Wait()
}

type candidate struct {
	key, sub, name, path string
	st                   fileStat
}

// poll sends the settled frames in Dir that are not in flight, in name
// order (ties by key). It returns false when ctx ended.
func (s *FrameSource) poll(ctx context.Context, out chan<- Line) bool {
	now := s.now()
	var cands []candidate
	seen := map[string]fileStat{}
	dirFailed := map[string]bool{}
	s.scan(s.cfg.Dir, "", s.cfg.Key, seen, dirFailed, &cands)
	prev := s.prev
	s.prev, s.dirFailed = seen, dirFailed
	for p := range s.failed {
		if _, ok := seen[p]; !ok {
			delete(s.failed, p) // gone
		}
	}
	sort.Slice(cands, func(i, j int) bool {
		if cands[i].name != cands[j].name {
			return cands[i].name < cands[j].name
		}
		return cands[i].key < cands[j].key
	})
	for _, c := range cands {
		if p, ok := prev[c.path]; ok && p != c.st {
			continue // still changing
		}
		if now.Sub(c.st.mod) < s.cfg.Settle {
			continue // modified just now
		}
		s.mu.Lock()
		_, busy := s.inflight[c.path]
		s.mu.Unlock()
		if busy {
			continue
		}
		if c.st.size > s.cfg.MaxBytes {
			s.reject(c, fmt.Sprintf("%d bytes, more than max_bytes %d", c.st.size, s.cfg.MaxBytes))
			continue
		}
		if !s.slot(ctx) {
			return false
		}
		data, ok := s.read(c)
		if !ok {
			continue
		}
		if !isImage(data) {
			s.reject(c, "not a JPEG or PNG")
			continue
		}
		fl := &flight{}
		s.mu.Lock()
		s.inflight[c.path] = fl
		s.mu.Unlock()
		l := Line{Arrival: now, Frame: &Frame{Key: c.key, Name: c.name, Data: data, Time: c.st.mod}, Ack: s.fileAck(c, fl)}
		select {
		case out <- l:
			s.Stats.Files.Add(1)
		case <-ctx.Done():
			return false
		}
	}
	return true
}

// scan lists dir (sub: its name under Dir, "" for Dir) into seen and
// cands; in Dir it descends one level, into key directories.
func (s *FrameSource) scan(dir, sub, key string, seen map[string]fileStat, dirFailed map[string]bool, cands *[]candidate) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		if !s.dirFailed[dir] {
			s.log.Warn("image source: cannot list directory (retrying every poll)", "dir", dir, "err", err)
		}
		dirFailed[dir] = true
		return
	}
	for _, e := range ents {
		name := e.Name()
		if strings.HasPrefix(name, ".") {
			continue
		}
		path := filepath.Join(dir, name)
		if e.IsDir() {
			if sub == "" {
				s.scan(path, name, name, seen, dirFailed, cands)
			}
			continue
		}
		if !e.Type().IsRegular() || !isFrameName(name) {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue // gone since the listing
		}
		st := fileStat{info.Size(), info.ModTime()}
		seen[path] = st
		*cands = append(*cands, candidate{key: key, sub: sub, name: name, path: path, st: st})
	}
}

// slot waits until fewer than MaxInFlight files are in flight.
func (s *FrameSource) slot(ctx context.Context) bool {
	for {
		s.mu.Lock()
		n := len(s.inflight)
		s.mu.Unlock()
		if n < s.cfg.MaxInFlight {
			return true
		}
		select {
		case <-s.freed:
		case <-ctx.Done():
			return false
		}
	}
}

// read returns c's content if the file is still what the poll saw.
func (s *FrameSource) read(c candidate) ([]byte, bool) {
	fail := func(err error) ([]byte, bool) {
		s.Stats.ReadErrors.Add(1)
		s.once(c.path, "image source: cannot read frame (retrying every poll)", "file", c.path, "err", err)
		return nil, false
	}
	f, err := s.open(c.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false
	}
	if err != nil {
		return fail(err)
	}
	defer f.Close()
	if info, err := f.Stat(); err != nil {
		return fail(err)
	} else if (fileStat{info.Size(), info.ModTime()}) != c.st {
		return nil, false // replaced or written to since the listing: a later poll
	}
	data, err := io.ReadAll(io.LimitReader(f, s.cfg.MaxBytes+1))
	if err != nil {
		return fail(err)
	}
	if int64(len(data)) != c.st.size {
		return nil, false
	}
	delete(s.failed, c.path)
	return data, true
}

// fileAck removes the file once its frame is committed, unless it was
// replaced meanwhile (then the new one is sent by a later poll).
func (s *FrameSource) fileAck(c candidate, fl *flight) func() {
	return sync.OnceFunc(func() {
		s.Stats.Committed.Add(1)
		keep := false // in flight until the agent restarts: not resent
		if info, err := os.Stat(c.path); err == nil && (fileStat{info.Size(), info.ModTime()}) == c.st {
			if err := os.Remove(c.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
				s.log.Warn("image source: cannot remove a committed frame; it is sent again after a restart", "file", c.path, "err", err)
				keep = true
			}
		}
		s.mu.Lock()
		if s.inflight[c.path] == fl && !keep {
			delete(s.inflight, c.path)
		}
		s.mu.Unlock()
		select {
		case s.freed <- struct{}{}:
		default:
		}
	})
}

// reject moves a file that can never be a frame to Dir/.rejected/[key/].
func (s *FrameSource) reject(c candidate, why string) {
	dst := filepath.Join(s.cfg.Dir, rejectedDir, c.sub)
	err := os.MkdirAll(dst, 0o755)
	if err == nil {
		err = os.Rename(c.path, filepath.Join(dst, c.name))
	}
	if err != nil {
		s.once(c.path, "image source: cannot move a rejected frame (retrying every poll)", "file", c.path, "reason", why, "err", err)
		return
	}
	delete(s.failed, c.path)
	delete(s.prev, c.path)
	s.Stats.Rejected.Add(1)
	s.log.Warn("image source: frame rejected", "file", c.path, "reason", why, "moved_to", dst, "rejected_total", s.Stats.Rejected.Load())
}

// once logs msg for the file id unless it was logged since it last went
// well.
func (s *FrameSource) once(id, msg string, args ...any) {
	if s.failed[id] {
		return
	}
	s.failed[id] = true
	s.log.Warn(msg, args...)
}

func isFrameName(name string) bool {
	switch strings.ToLower(filepath.Ext(name)) {
	case ".jpg", ".jpeg", ".png":
		return true
	}
	return false
}

// isImage checks the signatures image.DecodeConfig goes by.
func isImage(data []byte) bool {
	return bytes.HasPrefix(data, []byte("\xff\xd8")) || bytes.HasPrefix(data, []byte("\x89PNG\r\n\x1a\n"))
}

// frameHandler is POST /frames: one frame per request, answered as
// httpSource answers POST /ingest.
type frameHandler struct {
	src *httpSource
	fs  *FrameSource
}

func (h *frameHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !h.src.enter() {
		unavailable(w, errStopping)
		return
	}
	defer h.src.active.Done()
	refuse := func(code int, why string) {
		h.fs.Stats.Refused.Add(1)
		http.Error(w, "ingest: "+why, code)
	}
	key := h.fs.cfg.Key
	if q := r.URL.Query(); q.Has("key") {
		key = q.Get("key")
	}
	if len(key) > maxFrameKey || !utf8.ValidString(key) {
		refuse(http.StatusBadRequest, fmt.Sprintf("key must be UTF-8 of at most %d bytes", maxFrameKey))
		return
	}
	limit := h.fs.cfg.MaxBytes
	if r.ContentLength > limit {
		refuse(http.StatusRequestEntityTooLarge, fmt.Sprintf("frame of %d bytes, at most %d", r.ContentLength, limit))
		return
	}
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		if errors.As(err, new(*http.MaxBytesError)) {
			refuse(http.StatusRequestEntityTooLarge, fmt.Sprintf("frame over %d bytes", limit))
		} else {
			refuse(http.StatusBadRequest, "read: "+err.Error())
		}
		return
	}
	if !isImage(data) {
		refuse(http.StatusUnsupportedMediaType, "the body is not a JPEG or PNG")
		return
	}
	committed := make(chan struct{})
	now := h.fs.now()
	l := Line{Arrival: now, Frame: &Frame{Key: key, Data: data, Time: now},
		Ack: sync.OnceFunc(func() { h.fs.Stats.Committed.Add(1); close(committed) })}
	if err := h.src.send(r.Context(), l); err != nil {
		unavailable(w, err)
		return
	}
	h.fs.Stats.Posts.Add(1)
	h.src.await(w, r, committed)
}
