package tuf

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"sync"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
	"github.com/theupdateframework/go-tuf/v2/metadata/config"
	"github.com/theupdateframework/go-tuf/v2/metadata/fetcher"
	"github.com/theupdateframework/go-tuf/v2/metadata/updater"

	"github.com/outpost-edge/outpost/sync/transfer"
)

// Client is the agent's side: it trusts the root it was provisioned with
// and verifies every metadata file and artifact against it.
// It is safe for concurrent use: the agent downloads one model's target
// while it verifies another's.
type Client struct {
	cfg *config.UpdaterConfig
	// refreshing serialises refreshes, which write the metadata directory;
	// mu guards up alone, so a lookup never waits for a slow mirror.
	refreshing  sync.Mutex
	mu          sync.Mutex
	up          *updater.Updater // of the last Refresh: go-tuf updaters refresh once
	provisioned []byte
	targetsURL  string
	http        *http.Client
}

// NewClient builds a client for the repository at baseURL (metadata at
// its root, targets below targets/), keeping trusted metadata in
// metadataDir.
func NewClient(trustedRoot []byte, baseURL, metadataDir string) (*Client, error) {
	return NewClientWith(trustedRoot, baseURL, metadataDir, nil)
}

// NewClientWith is NewClient over hc (an HTTPS client with the hub's CA,
// say); nil is http.DefaultClient's settings.
func NewClientWith(trustedRoot []byte, baseURL, metadataDir string, hc *http.Client) (*Client, error) {
	hc = withTimeouts(hc)
	// Metadata is small: a whole fetch has a deadline. Targets may be
	// large on slow links: transfer abandons one only when it stalls.
	meta := *hc
	if meta.Timeout == 0 {
		meta.Timeout = MetadataTimeout
	}
	cfg, err := config.New(baseURL, trustedRoot)
	if err != nil {
		return nil, fmt.Errorf("tuf: client config: %w", err)
	}
	// SetHTTPClient, not NewFetcherWithHTTPClient: the latter drops the
	// one-try default, and backoff then retries a failing request for
	// many minutes inside Refresh. Retries are the update machine's job.
	f := fetcher.NewDefaultFetcher()
	f.SetHTTPClient(&meta)
	cfg.Fetcher = f
	if err := os.MkdirAll(metadataDir, 0o700); err != nil {
		return nil, fmt.Errorf("tuf: %w", err)
	}
	cfg.LocalMetadataDir = metadataDir
	cfg.LocalTargetsDir = metadataDir // artifacts go through transfer, not here
	return &Client{cfg: cfg, provisioned: trustedRoot, targetsURL: cfg.RemoteTargetsURL, http: hc}, nil
}

// MetadataTimeout bounds one metadata fetch, however slowly a mirror
// trickles it.
const MetadataTimeout = time.Minute

// withTimeouts returns hc with the connect, TLS and header timeouts of
// transfer.Transport where its transport has none: a mirror that accepts
// and then says nothing must not hold the update loop.
func withTimeouts(hc *http.Client) *http.Client {
	if hc == nil {
		return &http.Client{Transport: transfer.Transport(nil)}
	}
	c := *hc
	switch tr := hc.Transport.(type) {
	case nil:
		c.Transport = transfer.Transport(nil)
	case *http.Transport:
		if tr.ResponseHeaderTimeout == 0 || tr.TLSHandshakeTimeout == 0 || tr.DialContext == nil {
			d := transfer.Transport(tr.TLSClientConfig)
			t := tr.Clone()
			if t.ResponseHeaderTimeout == 0 {
				t.ResponseHeaderTimeout = d.ResponseHeaderTimeout
			}
			if t.TLSHandshakeTimeout == 0 {
				t.TLSHandshakeTimeout = d.TLSHandshakeTimeout
			}
			if t.DialContext == nil {
				t.DialContext = d.DialContext
			}
			c.Transport = t
		}
	}
	return &c
}

// Refresh updates root, timestamp, snapshot and targets, in that order,
// verifying signatures, versions (no rollback) and expiry (no freeze).
// It starts from the newest root this device has verified (kept in the
// metadata directory), or the provisioned one.
func (c *Client) Refresh() error {
	c.refreshing.Lock()
	defer c.refreshing.Unlock()
	cfg := *c.cfg
	if root, err := os.ReadFile(filepath.Join(c.cfg.LocalMetadataDir, "root.json")); err == nil {
		cfg.LocalTrustedRoot = root
	} else {
		cfg.LocalTrustedRoot = c.provisioned
	}
	up, err := updater.New(&cfg)
	if err != nil {
		return fmt.Errorf("tuf: refresh: %w", err)
	}
	if err := up.Refresh(); err != nil {
		return fmt.Errorf("tuf: refresh: %w", err)
	}
	c.mu.Lock()
	c.up = up
	c.mu.Unlock()
	return nil
}

// Target returns the signed description of a target, as of the last
// Refresh (made now when there was none yet).
func (c *Client) Target(name string) (*metadata.TargetFiles, error) {
	c.mu.Lock()
	missing := c.up == nil
	c.mu.Unlock()
	if missing {
		if err := c.Refresh(); err != nil {
			return nil, err
		}
	}
	// The updater is not safe for concurrent use; a lookup is local (this
	// repository has no delegations to fetch).
	c.mu.Lock()
	tf, err := c.up.GetTargetInfo(name)
	c.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("tuf: target %s: %w", name, err)
	}
	return tf, nil
}

// Download streams a target into dst (resuming a partial dst.part) and
// verifies its length and sha256 against the signed metadata.
func (c *Client) Download(ctx context.Context, tf *metadata.TargetFiles, dst string) error {
	sum, ok := tf.Hashes["sha256"]
	if !ok {
		return fmt.Errorf("tuf: target %s has no sha256", tf.Path)
	}
	dir, base := path.Split(tf.Path)
	u, err := url.JoinPath(c.targetsURL, dir, hex.EncodeToString(sum)+"."+base)
	if err != nil {
		return fmt.Errorf("tuf: %w", err)
	}
	return transfer.Download(ctx, c.http, u, dst, transfer.Expect{Length: tf.Length, SHA256: hex.EncodeToString(sum)})
}

// ModelTarget is the custom metadata of a model package target: what it
// is, where it may run, and the digest of its manifest.
type ModelTarget struct {
	Model          string   `json:"model"`
	Version        int64    `json:"version"`
	Arch           []string `json:"arch,omitempty"` // empty: any
	Accelerator    string   `json:"accelerator,omitempty"`
	ManifestSHA256 string   `json:"manifest_sha256"`
}

// ModelTargetName is the target path of a model package version.
func ModelTargetName(model string, version int64) string {
	return fmt.Sprintf("models/%s/%d.tar", model, version)
}

// Model reads a target's model metadata.
func Model(tf *metadata.TargetFiles) (ModelTarget, error) {
	var m ModelTarget
	if tf.Custom == nil {
		return m, fmt.Errorf("tuf: target %s has no model metadata", tf.Path)
	}
	if err := json.Unmarshal(*tf.Custom, &m); err != nil {
		return m, fmt.Errorf("tuf: target %s: model metadata: %w", tf.Path, err)
	}
	return m, nil
}
