// Package updates is the hub's side of signed distribution: the TUF
// repository that model packages are published into, its timestamp kept
// fresh, and the HTTP handler agents download metadata and targets from.
package updates

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-edge/outpost/models/manifest"
	"github.com/outpost-edge/outpost/sync/tuf"
)

// Config is the hub's `updates` section.
type Config struct {
	Dir string `yaml:"dir" usage:"TUF repository directory (default: <data_dir>/tuf)"`
	// RootFile and OnlineKeys come from `outpostctl keys init`; root's
	// private keys never reach the hub. Left empty, the hub makes
	// development keys of its own and says so.
	RootFile        string        `yaml:"root_file" usage:"signed root metadata from outpostctl keys init/rotate; a newer version than the repository's is published at start"`
	OnlineKeys      string        `yaml:"online_keys" usage:"the hub's targets/snapshot/timestamp keys from outpostctl keys init"`
	TimestampExpiry time.Duration `yaml:"timestamp_expiry" usage:"how long a signed timestamp is valid; the hub re-signs it every third of that"`
	// RolloutInterval is how often the rollout controller looks at reports.
	RolloutInterval time.Duration `yaml:"rollout_interval" usage:"how often the rollout controller reads device reports and moves rollouts on"`
}

// Service owns the repository.
type Service struct {
	cfg     Config
	dataDir string
	dir     string
	expiry  time.Duration
	log     *slog.Logger
	mirror  *mirror // a cluster's shared bucket; nil for a standalone hub

	mu   sync.Mutex
	repo *tuf.Repo // nil on a hub of a cluster that does not lead
}

func newService(cfg Config, dataDir string, log *slog.Logger) *Service {
	dir := cfg.Dir
	if dir == "" {
		dir = filepath.Join(dataDir, "tuf")
	}
	expiry := cfg.TimestampExpiry
	if expiry <= 0 {
		expiry = tuf.TimestampExpiry
	}
	return &Service{cfg: cfg, dataDir: dataDir, dir: dir, expiry: expiry, log: log}
}

// Open loads a standalone hub's repository, creating it on first start.
// dataDir holds development keys when no key files are configured.
func Open(cfg Config, dataDir string, log *slog.Logger) (*Service, error) {
	s := newService(cfg, dataDir, log)
	online, root, err := keys(cfg, dataDir, log)
	if err != nil {
		return nil, err
	}
	if s.repo, err = s.openRepo(online, root); err != nil {
		return nil, err
	}
	return s, nil
}

// OpenShared prepares a hub of a cluster. The repository lives in the
// replicated OUTPOST_TUF bucket: this hub serves a local copy kept current
// by Follow, and signs only while it leads (Lead), so every hub serves
// the same versions and a device that moves between hubs never sees
// metadata go back.
func OpenShared(ctx context.Context, cfg Config, dataDir string, js jetstream.JetStream, replicas int, log *slog.Logger) (*Service, error) {
	s := newService(cfg, dataDir, log)
	var err error
	if s.mirror, err = openMirror(ctx, js, replicas, s.dir, filepath.Join(dataDir, "tuf-dev-keys"), log); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(s.dir, 0o755); err != nil {
		return nil, fmt.Errorf("updates: %w", err)
	}
	if err := s.mirror.pull(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// openRepo opens the repository and signs a timestamp with the configured
// expiry.
func (s *Service) openRepo(online tuf.OnlineKeys, root []byte) (*tuf.Repo, error) {
	repo, err := s.loadRepo(online, root)
	if err != nil {
		return nil, err
	}
	repo.TimestampTTL = s.expiry
	if err := repo.RefreshTimestamp(); err != nil {
		return nil, fmt.Errorf("updates: %w", err)
	}
	return repo, nil
}

// loadRepo opens the repository in s.dir, creating it from root version 1
// when there is none, and publishing a newer configured root.
func (s *Service) loadRepo(online tuf.OnlineKeys, root []byte) (*tuf.Repo, error) {
	if !tuf.Exists(s.dir) {
		if st, err := tuf.InspectRoot(root); err == nil && st.Version != 1 {
			return nil, fmt.Errorf("updates: %s is root version %d; a new repository starts from version 1", s.cfg.RootFile, st.Version)
		}
		repo, err := tuf.Create(s.dir, root, online, nil)
		if err != nil {
			return nil, fmt.Errorf("updates: %w", err)
		}
		s.log.Info("tuf repository created", "dir", s.dir)
		return repo, nil
	}
	repo, err := tuf.Open(s.dir, online, nil)
	if err != nil {
		return nil, fmt.Errorf("updates: %w", err)
	}
	if s.cfg.RootFile != "" {
		st, err := tuf.InspectRoot(root)
		if err != nil {
			return nil, fmt.Errorf("updates.root_file: %w", err)
		}
		if st.Version > repo.RootVersion() {
			if err := repo.UpdateRoot(root, online); err != nil {
				return nil, fmt.Errorf("updates.root_file: %w", err)
			}
			s.log.Info("tuf root rotated", "version", st.Version)
		}
	}
	// Signing with keys root does not name would make every device refuse
	// every update: refuse to start instead.
	if err := repo.CheckKeys(); err != nil {
		return nil, fmt.Errorf("updates.online_keys: %w", err)
	}
	return repo, nil
}

// Follow keeps this hub's copy of a cluster's repository current.
func (s *Service) Follow(ctx context.Context) {
	if s.mirror != nil {
		s.mirror.follow(ctx)
	}
}

// Lead signs for a cluster while ctx lasts (the lease holder calls it):
// it opens the repository from the shared copy, publishes whatever
// publish adds (registry versions the repository lacks) every second,
// and keeps the timestamp fresh. Every file it writes goes to the bucket.
func (s *Service) Lead(ctx context.Context, publish func(context.Context) error) error {
	if err := s.mirror.pull(ctx); err != nil {
		return err
	}
	online, root, err := s.sharedKeys(ctx)
	if err != nil {
		return err
	}
	repo, err := s.openRepo(online, root)
	if err != nil {
		return err
	}
	if err := s.mirror.uploadTree(ctx); err != nil {
		return err
	}
	repo.OnWrite = func(rel string) {
		if err := s.mirror.upload(ctx, rel); err != nil {
			s.log.Error("tuf: share a written file", "file", rel, "err", err)
		}
	}
	s.mu.Lock()
	s.repo = repo
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.repo = nil
		s.mu.Unlock()
	}()
	s.log.Info("signing for the cluster's tuf repository", "root_version", repo.RootVersion())
	stamp := time.NewTicker(s.expiry / 3)
	defer stamp.Stop()
	scan := time.NewTicker(time.Second)
	defer scan.Stop()
	for {
		if err := publish(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("tuf: publish registry versions", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-scan.C:
		case <-stamp.C:
			if err := repo.RefreshTimestamp(); err != nil {
				s.log.Error("tuf timestamp refresh failed", "err", err)
			}
		}
	}
}

// sharedKeys are the configured keys, or the cluster's development keys:
// the first leader makes them and leaves them in the bucket for the next.
func (s *Service) sharedKeys(ctx context.Context) (tuf.OnlineKeys, []byte, error) {
	online, root, err := keys(s.cfg, s.dataDir, s.log)
	if err != nil || s.cfg.RootFile != "" {
		return online, root, err
	}
	for _, f := range []string{"root.key", "online.json", "root.json"} {
		if err := s.mirror.upload(ctx, devPrefix+f); err != nil {
			return tuf.OnlineKeys{}, nil, err
		}
	}
	return online, root, nil
}

// keys loads the configured online keys and root, or makes development
// ones under dataDir (kept, so a restarted hub signs with the same keys).
func keys(cfg Config, dataDir string, log *slog.Logger) (tuf.OnlineKeys, []byte, error) {
	if cfg.RootFile != "" || cfg.OnlineKeys != "" {
		if cfg.RootFile == "" || cfg.OnlineKeys == "" {
			return tuf.OnlineKeys{}, nil, fmt.Errorf("updates: root_file and online_keys are set together")
		}
		online, err := tuf.ReadOnlineKeys(cfg.OnlineKeys)
		if err != nil {
			return tuf.OnlineKeys{}, nil, fmt.Errorf("updates.online_keys: %w", err)
		}
		root, err := os.ReadFile(cfg.RootFile)
		if err != nil {
			return tuf.OnlineKeys{}, nil, fmt.Errorf("updates.root_file: %w", err)
		}
		return online, root, nil
	}
	kdir := filepath.Join(dataDir, "tuf-dev-keys")
	log.Warn("updates: no root_file/online_keys configured; using development TUF keys kept on the hub (root key included). Run outpostctl keys init for production", "dir", kdir)
	if err := os.MkdirAll(kdir, 0o700); err != nil {
		return tuf.OnlineKeys{}, nil, fmt.Errorf("updates: %w", err)
	}
	onlinePath, rootKeyPath, rootPath := filepath.Join(kdir, "online.json"), filepath.Join(kdir, "root.key"), filepath.Join(kdir, "root.json")
	if _, err := os.Stat(rootPath); err != nil {
		rk, err := tuf.GenerateKey()
		if err != nil {
			return tuf.OnlineKeys{}, nil, err
		}
		online, err := tuf.GenerateOnlineKeys()
		if err != nil {
			return tuf.OnlineKeys{}, nil, err
		}
		root, err := tuf.NewRoot(tuf.RootSpec{Version: 1, RootKeys: []ed25519.PublicKey{rk.Public().(ed25519.PublicKey)}, Threshold: 1,
			Online: online.Public(), Expires: time.Now().Add(tuf.RootExpiry)})
		if err != nil {
			return tuf.OnlineKeys{}, nil, err
		}
		if root, err = tuf.SignRoot(root, rk); err != nil {
			return tuf.OnlineKeys{}, nil, err
		}
		os.Remove(rootKeyPath)
		os.Remove(onlinePath)
		if err := tuf.WriteKey(rootKeyPath, rk); err != nil {
			return tuf.OnlineKeys{}, nil, err
		}
		if err := tuf.WriteOnlineKeys(onlinePath, online); err != nil {
			return tuf.OnlineKeys{}, nil, err
		}
		if err := os.WriteFile(rootPath, root, 0o644); err != nil {
			return tuf.OnlineKeys{}, nil, fmt.Errorf("updates: %w", err)
		}
	}
	online, err := tuf.ReadOnlineKeys(onlinePath)
	if err != nil {
		return tuf.OnlineKeys{}, nil, err
	}
	root, err := os.ReadFile(rootPath)
	if err != nil {
		return tuf.OnlineKeys{}, nil, fmt.Errorf("updates: %w", err)
	}
	return online, root, nil
}

// PublishModel makes a package version a signed target, once.
func (s *Service) PublishModel(manifestJSON, model []byte) (string, error) {
	m, err := manifest.Parse(manifestJSON)
	if err != nil {
		return "", err
	}
	name := tuf.ModelTargetName(m.Name, m.Version)
	s.mu.Lock()
	repo := s.repo
	s.mu.Unlock()
	if repo == nil {
		return name, nil // a cluster hub that does not lead: the leader signs it
	}
	if repo.Has(name) {
		return name, nil
	}
	pkg, err := manifest.Pack(manifestJSON, model)
	if err != nil {
		return "", err
	}
	custom := tuf.ModelTarget{Model: m.Name, Version: m.Version, Arch: m.Requirements.Arch,
		Accelerator: m.Requirements.Accelerator, ManifestSHA256: manifest.Digest(manifestJSON)}
	if _, err := repo.AddTarget(name, pkg, custom); err != nil {
		return "", fmt.Errorf("updates: publish %s: %w", name, err)
	}
	s.log.Info("model published as a signed target", "target", name, "bytes", len(pkg))
	return name, nil
}

// PublishAgent makes an agent binary a signed target, once per build and
// architecture. Only the hub that signs (standalone, or a cluster's lease
// holder) can: the binary is not replicated like the model registry.
func (s *Service) PublishAgent(a tuf.AgentTarget, binary []byte) (string, error) {
	name := tuf.AgentTargetName(a.Arch, a.Build)
	s.mu.Lock()
	repo := s.repo
	s.mu.Unlock()
	if repo == nil {
		return "", fmt.Errorf("updates: %w", ErrNotSigner)
	}
	if repo.Has(name) {
		return "", fmt.Errorf("updates: %w: %s", ErrPublished, name)
	}
	if _, err := repo.AddTarget(name, binary, a); err != nil {
		return "", fmt.Errorf("updates: publish %s: %w", name, err)
	}
	s.log.Info("agent published as a signed target", "target", name, "version", a.Version, "bytes", len(binary))
	return name, nil
}

// Has reports whether a target is published (in this hub's copy).
func (s *Service) Has(target string) bool {
	s.mu.Lock()
	repo := s.repo
	s.mu.Unlock()
	if repo != nil {
		return repo.Has(target)
	}
	ok, _ := tuf.Published(s.dir, target)
	return ok
}

// Handler serves the repository: metadata at its root and targets below
// targets/, with range requests (http.ServeContent) for resumed downloads.
func (s *Service) Handler() http.Handler {
	files := http.FileServer(http.Dir(s.dir))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Metadata changes under the same name (timestamp.json): never
		// let a cache serve an old one.
		w.Header().Set("Cache-Control", "no-store")
		files.ServeHTTP(w, r)
	})
}

// Run re-signs a standalone hub's timestamp every third of its expiry
// until ctx ends, so agents can tell a live hub from a frozen mirror.
func (s *Service) Run(ctx context.Context) {
	t := time.NewTicker(s.expiry / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := s.repo.RefreshTimestamp(); err != nil { // standalone: always leads
				s.log.Error("tuf timestamp refresh failed", "err", err)
			}
		}
	}
}
