package updates

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// laggingReplica is a bucket whose change feed runs ahead of the replica
// this hub reads objects from, as a follower of an R3 object store does
// when it answers a direct get before it has applied the latest write.
type laggingReplica struct {
	mu      sync.Mutex
	current map[string][]byte // what the bucket holds
	behind  map[string][]byte // what the replica serves while it lags
	lag     map[string]int    // reads of each name it still answers from behind
	feed    chan *jetstream.ObjectInfo
	stop    sync.Once
}

func info(name string, b []byte) *jetstream.ObjectInfo {
	sum := sha256.Sum256(b)
	return &jetstream.ObjectInfo{ObjectMeta: jetstream.ObjectMeta{Name: name}, Size: uint64(len(b)),
		Digest: "SHA-256=" + base64.URLEncoding.EncodeToString(sum[:])}
}

func (r *laggingReplica) GetFile(_ context.Context, name, file string, _ ...jetstream.GetObjectOpt) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	b, ok := r.current[name]
	if r.lag[name] > 0 {
		r.lag[name]--
		b, ok = r.behind[name]
	}
	if !ok {
		return jetstream.ErrObjectNotFound
	}
	return os.WriteFile(file, b, 0o600)
}

func (r *laggingReplica) List(context.Context, ...jetstream.ListObjectsOpt) ([]*jetstream.ObjectInfo, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var l []*jetstream.ObjectInfo
	for name, b := range r.current {
		l = append(l, info(name, b))
	}
	return l, nil
}

func (r *laggingReplica) Watch(context.Context, ...jetstream.WatchOpt) (jetstream.ObjectWatcher, error) {
	return r, nil
}
func (r *laggingReplica) Updates() <-chan *jetstream.ObjectInfo { return r.feed }
func (r *laggingReplica) Stop() error {
	r.stop.Do(func() { close(r.feed) }) // as a watcher's Stop closes its updates
	return nil
}
func (r *laggingReplica) GetInfo(context.Context, string, ...jetstream.GetObjectInfoOpt) (*jetstream.ObjectInfo, error) {
	panic("a follower does not upload")
}
func (r *laggingReplica) Put(context.Context, jetstream.ObjectMeta, io.Reader) (*jetstream.ObjectInfo, error) {
	panic("a follower does not upload")
}

// TestFollowerOutwaitsItsLaggingReplica: the leader writes timestamp v3
// and a new target; this hub hears of both before its replica serves
// them (it still answers timestamp v2, and has no target yet). The hub
// must end up serving exactly what was announced: a device that saw v3
// on another hub refuses an older timestamp ("new timestamp version 2
// must be >= 3"), which is how TestClusterServesOneTUFRepository failed.
func TestFollowerOutwaitsItsLaggingReplica(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		v2, v3 := []byte(`{"signed":{"version":2}}`), []byte(`{"signed":{"version":3}}`)
		target := []byte("a model package")
		if err := os.WriteFile(filepath.Join(dir, "timestamp.json"), v2, 0o644); err != nil {
			t.Fatal(err)
		}
		r := &laggingReplica{
			current: map[string][]byte{"timestamp.json": v3, "targets/m.tar": target},
			behind:  map[string][]byte{"timestamp.json": v2},
			lag:     map[string]int{"timestamp.json": 3, "targets/m.tar": 2},
			feed:    make(chan *jetstream.ObjectInfo, 4),
		}
		r.feed <- nil // the initial values are in
		r.feed <- info("targets/m.tar", target)
		r.feed <- info("timestamp.json", v3)
		m := &mirror{obs: r, dir: dir, devKeys: t.TempDir(), log: slog.New(slog.DiscardHandler)}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { defer close(done); m.follow(ctx) }()

		time.Sleep(10 * time.Second)
		synctest.Wait()
		for name, want := range r.current {
			got, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(name)))
			if err != nil || string(got) != string(want) {
				t.Errorf("%s served after the replica caught up: %q (%v), want %q", name, got, err, want)
			}
		}
		left, _ := filepath.Glob(filepath.Join(dir, ".*.tmp"))
		inTargets, _ := filepath.Glob(filepath.Join(dir, "targets", ".*.tmp"))
		if left = append(left, inTargets...); len(left) > 0 {
			t.Errorf("partial downloads left in the served directory: %v", left)
		}
		cancel()
		<-done
	})
}
