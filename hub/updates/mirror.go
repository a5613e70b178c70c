package updates

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Bucket is the replicated object store a hub cluster keeps its TUF
// repository in. The hub that leads writes it; every hub mirrors it into
// its own directory and serves that.
const Bucket = "OUTPOST_TUF"

// devPrefix names the development keys in the bucket: a cluster without
// configured keys shares the ones its first leader made. They are never
// written to the served directory.
const devPrefix = ".dev-keys/"

// objects is what the mirror uses of the bucket.
type objects interface {
	GetInfo(ctx context.Context, name string, opts ...jetstream.GetObjectInfoOpt) (*jetstream.ObjectInfo, error)
	Put(ctx context.Context, meta jetstream.ObjectMeta, r io.Reader) (*jetstream.ObjectInfo, error)
	GetFile(ctx context.Context, name, file string, opts ...jetstream.GetObjectOpt) error
	List(ctx context.Context, opts ...jetstream.ListObjectsOpt) ([]*jetstream.ObjectInfo, error)
	Watch(ctx context.Context, opts ...jetstream.WatchOpt) (jetstream.ObjectWatcher, error)
}

type mirror struct {
	obs     objects
	dir     string // the served repository
	devKeys string // where development keys go
	log     *slog.Logger
}

func openMirror(ctx context.Context, js jetstream.JetStream, replicas int, dir, devKeys string, log *slog.Logger) (*mirror, error) {
	obs, err := js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: Bucket, Replicas: max(replicas, 1), Storage: jetstream.FileStorage})
	if err != nil {
		return nil, fmt.Errorf("updates: bucket: %w", err)
	}
	return &mirror{obs: obs, dir: dir, devKeys: devKeys, log: log}, nil
}

// local is where object name lives on this hub.
func (m *mirror) local(name string) (string, bool) {
	if rest, ok := strings.CutPrefix(name, devPrefix); ok {
		return filepath.Join(m.devKeys, filepath.Base(rest)), true
	}
	clean := filepath.Clean(filepath.FromSlash(name))
	if filepath.IsAbs(clean) || strings.HasPrefix(clean, "..") {
		return "", false
	}
	return filepath.Join(m.dir, clean), true
}

// digest is a file's sha256 in the object store's notation.
func digest(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return ""
	}
	return "SHA-256=" + base64.URLEncoding.EncodeToString(h.Sum(nil))
}

// upload puts the local file of name into the bucket unless it is there.
func (m *mirror) upload(ctx context.Context, name string) error {
	path, ok := m.local(name)
	if !ok {
		return fmt.Errorf("updates: object name %q", name)
	}
	if info, err := m.obs.GetInfo(ctx, name); err == nil && !info.Deleted && info.Digest == digest(path) {
		return nil
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("updates: upload %s: %w", name, err)
	}
	defer f.Close()
	if _, err := m.obs.Put(ctx, jetstream.ObjectMeta{Name: name}, f); err != nil {
		return fmt.Errorf("updates: upload %s: %w", name, err)
	}
	return nil
}

// uploadTree uploads every file of the served directory.
func (m *mirror) uploadTree(ctx context.Context) error {
	return filepath.WalkDir(m.dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasPrefix(d.Name(), ".") {
			return err
		}
		rel, err := filepath.Rel(m.dir, path)
		if err != nil {
			return err
		}
		return m.upload(ctx, filepath.ToSlash(rel))
	})
}

// errStale: the object this hub read is not the version the bucket
// announced. An object store allows direct gets, which any replica may
// answer, so a follower that has not caught up serves the version before.
var errStale = errors.New("this hub's replica is behind the announced version")

// fetchTimeout bounds one download: without a deadline nats.go gives a
// whole object 5 s, too little for an agent binary on a slow link.
func fetchTimeout(size uint64) time.Duration {
	return 30*time.Second + time.Duration(size>>20)*time.Second
}

// fetch writes object info into its local place, unless it is there. It
// keeps only the bytes whose digest info announces.
func (m *mirror) fetch(ctx context.Context, info *jetstream.ObjectInfo) error {
	path, ok := m.local(info.Name)
	if !ok || info.Deleted || digest(path) == info.Digest {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("updates: mirror: %w", err)
	}
	// A name of its own: the leader's pull and its follower may fetch
	// the same object at once.
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("updates: mirror: %w", err)
	}
	tmp := f.Name()
	f.Close()
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout(info.Size))
	defer cancel()
	if err := m.obs.GetFile(ctx, info.Name, tmp); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("updates: mirror %s: %w", info.Name, err)
	}
	if digest(tmp) != info.Digest {
		os.Remove(tmp)
		return fmt.Errorf("updates: mirror %s: %w", info.Name, errStale)
	}
	if !strings.HasPrefix(info.Name, devPrefix) {
		os.Chmod(tmp, 0o644)
	}
	// Rename: a device never reads half a file.
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("updates: mirror: %w", err)
	}
	return nil
}

// pull brings the local copy up to date with the bucket.
func (m *mirror) pull(ctx context.Context) error {
	list, err := m.obs.List(ctx)
	if errors.Is(err, jetstream.ErrNoObjectsFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("updates: mirror: %w", err)
	}
	for _, info := range list {
		if err := m.fetch(ctx, info); err != nil {
			return err
		}
	}
	return nil
}

// follow keeps the local copy current until ctx ends.
func (m *mirror) follow(ctx context.Context) {
	// A change can be announced before this hub's replica serves it: the
	// object is not found, or its version before is. Each such miss is
	// kept, with the version announced, and fetched again until it lands
	// or a newer change replaces it; otherwise the file would stay old
	// here until the next change, and devices that saw the new one on
	// another hub would refuse this one's.
	missed := map[string]*jetstream.ObjectInfo{}
	var retry <-chan time.Time
	for ctx.Err() == nil {
		w, err := m.obs.Watch(ctx)
		if err != nil {
			m.log.Warn("tuf mirror: watch failed; retrying", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
			continue
		}
		stop := context.AfterFunc(ctx, func() { w.Stop() }) // the watcher outlives its ctx otherwise
	watch:
		for {
			select {
			case info, ok := <-w.Updates():
				if !ok {
					break watch
				}
				if info == nil {
					continue // the initial values are in
				}
				delete(missed, info.Name)
				if err := m.fetch(ctx, info); err != nil && ctx.Err() == nil {
					m.log.Warn("tuf mirror: fetch failed; fetching again shortly", "object", info.Name, "err", err)
					missed[info.Name] = info
					if retry == nil {
						retry = time.After(250 * time.Millisecond)
					}
				}
			case <-retry:
				retry = nil
				for name, info := range missed {
					if err := m.fetch(ctx, info); err != nil {
						if ctx.Err() == nil {
							m.log.Warn("tuf mirror: fetch failed again; retrying", "object", name, "err", err)
						}
						continue
					}
					delete(missed, name)
				}
				if len(missed) > 0 {
					retry = time.After(time.Second)
				}
			}
		}
		stop()
		w.Stop()
	}
}
