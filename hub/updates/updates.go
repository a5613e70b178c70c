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
	"time"

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
	repo   *tuf.Repo
	dir    string
	expiry time.Duration
	log    *slog.Logger
}

// Open loads the repository, creating it on first start. dataDir holds
// development keys when no key files are configured.
func Open(cfg Config, dataDir string, log *slog.Logger) (*Service, error) {
	dir := cfg.Dir
	if dir == "" {
		dir = filepath.Join(dataDir, "tuf")
	}
	if cfg.TimestampExpiry > 0 {
		tuf.TimestampExpiry = cfg.TimestampExpiry
	}
	s := &Service{dir: dir, expiry: tuf.TimestampExpiry, log: log}
	online, root, err := keys(cfg, dataDir, log)
	if err != nil {
		return nil, err
	}
	if !tuf.Exists(dir) {
		first := root
		if st, err := tuf.InspectRoot(root); err == nil && st.Version != 1 {
			return nil, fmt.Errorf("updates: %s is root version %d; a new repository starts from version 1", cfg.RootFile, st.Version)
		}
		if s.repo, err = tuf.Create(dir, first, online, nil); err != nil {
			return nil, fmt.Errorf("updates: %w", err)
		}
		log.Info("tuf repository created", "dir", dir)
		return s, nil
	}
	if s.repo, err = tuf.Open(dir, online, nil); err != nil {
		return nil, fmt.Errorf("updates: %w", err)
	}
	if cfg.RootFile != "" {
		st, err := tuf.InspectRoot(root)
		if err != nil {
			return nil, fmt.Errorf("updates.root_file: %w", err)
		}
		if st.Version > s.repo.RootVersion() {
			if err := s.repo.UpdateRoot(root, online); err != nil {
				return nil, fmt.Errorf("updates.root_file: %w", err)
			}
			log.Info("tuf root rotated", "version", st.Version)
		}
	}
	// Signing with keys root does not name would make every device refuse
	// every update: refuse to start instead.
	if err := s.repo.CheckKeys(); err != nil {
		return nil, fmt.Errorf("updates.online_keys: %w", err)
	}
	return s, nil
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
	if s.repo.Has(name) {
		return name, nil
	}
	pkg, err := manifest.Pack(manifestJSON, model)
	if err != nil {
		return "", err
	}
	custom := tuf.ModelTarget{Model: m.Name, Version: m.Version, Arch: m.Requirements.Arch,
		Accelerator: m.Requirements.Accelerator, ManifestSHA256: manifest.Digest(manifestJSON)}
	if _, err := s.repo.AddTarget(name, pkg, custom); err != nil {
		return "", fmt.Errorf("updates: publish %s: %w", name, err)
	}
	s.log.Info("model published as a signed target", "target", name, "bytes", len(pkg))
	return name, nil
}

// Has reports whether a target is published.
func (s *Service) Has(target string) bool { return s.repo.Has(target) }

// TrustedRoot is the root agents are provisioned with.
func (s *Service) TrustedRoot() ([]byte, error) { return s.repo.TrustedRoot() }

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

// Run re-signs the timestamp every third of its expiry until ctx ends, so
// agents can tell a live hub from a frozen mirror.
func (s *Service) Run(ctx context.Context) {
	t := time.NewTicker(s.expiry / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := s.repo.RefreshTimestamp(); err != nil {
				s.log.Error("tuf timestamp refresh failed", "err", err)
			}
		}
	}
}
