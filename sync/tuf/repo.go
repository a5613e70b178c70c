// Package tuf is Outpost's update signing (DESIGN §3): the hub is a TUF
// repository built on go-tuf/v2's metadata package, agents are TUF clients
// of it. Root is signed by a threshold of offline keys; targets, snapshot
// and timestamp by keys the hub holds. Model packages (and agent binaries)
// are targets, with custom metadata saying what they are.
package tuf

import (
	"crypto"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"time"

	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// ErrRepo means the repository cannot do what was asked.
var ErrRepo = errors.New("tuf: repository")

// Expiries of the roles: root is re-signed offline rarely, timestamp is
// refreshed by the hub often, so a frozen mirror is noticed within hours.
var (
	RootExpiry      = 365 * 24 * time.Hour
	TargetsExpiry   = 90 * 24 * time.Hour
	SnapshotExpiry  = 7 * 24 * time.Hour
	TimestampExpiry = 24 * time.Hour
)

// OnlineKeys are the keys the hub itself signs with.
type OnlineKeys struct {
	Targets, Snapshot, Timestamp ed25519.PrivateKey
}

// Repo is a TUF repository written to a directory that is served as is:
// metadata at its root, targets below targets/.
type Repo struct {
	dir       string
	keys      OnlineKeys
	root      *metadata.Metadata[metadata.RootType]
	targets   *metadata.Metadata[metadata.TargetsType]
	snapshot  *metadata.Metadata[metadata.SnapshotType]
	timestamp *metadata.Metadata[metadata.TimestampType]
	now       func() time.Time
}

// Init creates a repository: root version 1 with the root public keys and
// threshold, signed by the given offline root keys (at least threshold of
// them; in production an operator signs root with outpostctl on a machine
// the hub never sees), and empty targets, snapshot and timestamp.
func Init(dir string, rootKeys []ed25519.PrivateKey, threshold int, online OnlineKeys, now func() time.Time) (*Repo, error) {
	if threshold < 1 || len(rootKeys) < threshold {
		return nil, fmt.Errorf("%w: %d root keys for threshold %d", ErrRepo, len(rootKeys), threshold)
	}
	if now == nil {
		now = time.Now
	}
	r := &Repo{dir: dir, keys: online, now: now}
	t := now().UTC()
	r.root = metadata.Root(t.Add(RootExpiry))
	for _, k := range rootKeys {
		if err := addKey(r.root, k.Public(), metadata.ROOT); err != nil {
			return nil, err
		}
	}
	r.root.Signed.Roles[metadata.ROOT].Threshold = threshold
	for role, k := range map[string]ed25519.PrivateKey{metadata.TARGETS: online.Targets, metadata.SNAPSHOT: online.Snapshot, metadata.TIMESTAMP: online.Timestamp} {
		if err := addKey(r.root, k.Public(), role); err != nil {
			return nil, err
		}
	}
	for _, k := range rootKeys {
		if err := sign(r.root, k); err != nil {
			return nil, err
		}
	}
	r.targets = metadata.Targets(t.Add(TargetsExpiry))
	r.snapshot = metadata.Snapshot(t.Add(SnapshotExpiry))
	r.timestamp = metadata.Timestamp(t.Add(TimestampExpiry))
	if err := os.MkdirAll(filepath.Join(dir, "targets"), 0o755); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrRepo, err)
	}
	if err := writeMeta(dir, "1.root.json", r.root); err != nil {
		return nil, err
	}
	if err := r.publish(false); err != nil {
		return nil, err
	}
	return r, nil
}

func addKey(root *metadata.Metadata[metadata.RootType], pub crypto.PublicKey, role string) error {
	key, err := metadata.KeyFromPublicKey(pub)
	if err != nil {
		return fmt.Errorf("%w: key: %w", ErrRepo, err)
	}
	if err := root.Signed.AddKey(key, role); err != nil {
		return fmt.Errorf("%w: add %s key: %w", ErrRepo, role, err)
	}
	return nil
}

type signable interface {
	Sign(signature.Signer) (*metadata.Signature, error)
}

func sign(m signable, k ed25519.PrivateKey) error {
	s, err := signature.LoadSigner(k, crypto.Hash(0))
	if err != nil {
		return fmt.Errorf("%w: signer: %w", ErrRepo, err)
	}
	if _, err := m.Sign(s); err != nil {
		return fmt.Errorf("%w: sign: %w", ErrRepo, err)
	}
	return nil
}

type toBytes interface{ ToBytes(bool) ([]byte, error) }

func writeMeta(dir, name string, m toBytes) error {
	data, err := m.ToBytes(true)
	if err != nil {
		return fmt.Errorf("%w: encode %s: %w", ErrRepo, name, err)
	}
	// Write then rename: a client never reads half a file.
	tmp := filepath.Join(dir, "."+name+".tmp")
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return fmt.Errorf("%w: %w", ErrRepo, err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		return fmt.Errorf("%w: %w", ErrRepo, err)
	}
	return nil
}

// TrustedRoot is root version 1, which agents are provisioned with.
func (r *Repo) TrustedRoot() ([]byte, error) {
	return os.ReadFile(filepath.Join(r.dir, "1.root.json"))
}

// AddTarget stores data as target name (a slash-separated path) with
// custom metadata, then signs new targets, snapshot and timestamp. With
// consistent snapshots the file is stored under its hash, so clients
// mid-download never see a half-replaced file.
func (r *Repo) AddTarget(name string, data []byte, custom any) (*metadata.TargetFiles, error) {
	tf, err := metadata.TargetFile().FromBytes(name, data, "sha256")
	if err != nil {
		return nil, fmt.Errorf("%w: target %s: %w", ErrRepo, name, err)
	}
	if custom != nil {
		raw, err := json.Marshal(custom)
		if err != nil {
			return nil, fmt.Errorf("%w: custom metadata: %w", ErrRepo, err)
		}
		msg := json.RawMessage(raw)
		tf.Custom = &msg
	}
	dir, base := path.Split(name)
	file := filepath.Join(r.dir, "targets", filepath.FromSlash(dir), hex.EncodeToString(tf.Hashes["sha256"])+"."+base)
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrRepo, err)
	}
	if err := os.WriteFile(file, data, 0o644); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrRepo, err)
	}
	r.targets.Signed.Targets[name] = tf
	if err := r.publish(true); err != nil {
		return nil, err
	}
	return tf, nil
}

// RefreshTimestamp re-signs the timestamp with a new expiry; the hub does
// it on a schedule so clients can tell a live repository from a frozen one.
func (r *Repo) RefreshTimestamp() error {
	r.timestamp.Signed.Version++
	r.timestamp.Signed.Expires = r.now().UTC().Add(TimestampExpiry)
	r.timestamp.ClearSignatures()
	if err := sign(r.timestamp, r.keys.Timestamp); err != nil {
		return err
	}
	return writeMeta(r.dir, "timestamp.json", r.timestamp)
}

// publish signs and writes targets (if changed), snapshot and timestamp.
func (r *Repo) publish(targetsChanged bool) error {
	t := r.now().UTC()
	if targetsChanged {
		r.targets.Signed.Version++
		r.targets.Signed.Expires = t.Add(TargetsExpiry)
		r.snapshot.Signed.Version++
		r.timestamp.Signed.Version++
	}
	r.targets.ClearSignatures()
	if err := sign(r.targets, r.keys.Targets); err != nil {
		return err
	}
	if err := writeMeta(r.dir, strconv.FormatInt(r.targets.Signed.Version, 10)+".targets.json", r.targets); err != nil {
		return err
	}
	r.snapshot.Signed.Meta["targets.json"] = metadata.MetaFile(r.targets.Signed.Version)
	r.snapshot.Signed.Expires = t.Add(SnapshotExpiry)
	r.snapshot.ClearSignatures()
	if err := sign(r.snapshot, r.keys.Snapshot); err != nil {
		return err
	}
	if err := writeMeta(r.dir, strconv.FormatInt(r.snapshot.Signed.Version, 10)+".snapshot.json", r.snapshot); err != nil {
		return err
	}
	r.timestamp.Signed.Meta["snapshot.json"] = metadata.MetaFile(r.snapshot.Signed.Version)
	r.timestamp.Signed.Expires = t.Add(TimestampExpiry)
	r.timestamp.ClearSignatures()
	if err := sign(r.timestamp, r.keys.Timestamp); err != nil {
		return err
	}
	return writeMeta(r.dir, "timestamp.json", r.timestamp)
}
