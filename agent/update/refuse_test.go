package update

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/outpost-edge/outpost/sync/state"
)

// A mirror serving a 1 MiB timestamp.json (TUF allows 16 KiB): that is a
// refusal, counted against max_attempts with backoff, not network trouble
// retried every second forever.
func TestOversizedMetadataIsRefused(t *testing.T) {
	w := newWorld(t)
	target := w.publish(t, 2, 0.7, false)
	files := http.FileServer(http.Dir(w.repoDir))
	var hits atomic.Int32
	w.srv = httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "timestamp.json") {
			hits.Add(1)
			rw.Header().Set("Content-Length", strconv.Itoa(1<<20))
			rw.Write(make([]byte, 1<<20))
			return
		}
		files.ServeHTTP(rw, r)
	}))
	t.Cleanup(w.srv.Close)
	cfg := testConfig()
	cfg.MaxAttempts = 2
	r, m, _ := w.start(t, cfg, nil)
	m.Desire(desired(1, 2, target, "r1"))
	u := waitPhase(t, m)
	if u.Phase != state.PhaseFailed || !strings.Contains(u.Reason, "length") {
		t.Fatalf("update %+v, want failed for the metadata's length", u)
	}
	if r.version() != 1 {
		t.Fatalf("pipeline runs version %d, want 1 kept", r.version())
	}
	if hits.Load() > 3 {
		t.Fatalf("%d fetches of the oversized timestamp before giving up after 2 attempts", hits.Load())
	}
}
