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
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// ErrRepo means the repository cannot do what was asked.
var ErrRepo = errors.New("tuf: repository")

// Expiries of the roles: root is re-signed offline rarely, timestamp is
// refreshed by the hub often (Repo.TimestampTTL overrides it), so a frozen
// mirror is noticed within hours.
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
	// TimestampTTL is how long each signed timestamp is valid (zero:
	// TimestampExpiry).
	TimestampTTL time.Duration

	// OnWrite, when set, is told the path (relative to the repository
	// directory, with slashes) of every file written, in order: a hub
	// cluster copies them to its shared bucket.
	OnWrite func(rel string)

	mu        sync.Mutex // the hub signs from request handlers and a timer
	dir       string
	keys      OnlineKeys
	root      *metadata.Metadata[metadata.RootType]
	targets   *metadata.Metadata[metadata.TargetsType]
	snapshot  *metadata.Metadata[metadata.SnapshotType]
	timestamp *metadata.Metadata[metadata.TimestampType]
	now       func() time.Time
}

// Init creates a repository whose root version 1 is signed right here by
// the given root keys (at least threshold of them). Tests and the
// development hub use it; in production root is built and signed offline
// with outpostctl keys, and the hub gets only the signed file (Create).
func Init(dir string, rootKeys []ed25519.PrivateKey, threshold int, online OnlineKeys, now func() time.Time) (*Repo, error) {
	if now == nil {
		now = time.Now
	}
	spec := RootSpec{Version: 1, Threshold: threshold, Online: online.Public(), Expires: now().Add(RootExpiry)}
	for _, k := range rootKeys {
		spec.RootKeys = append(spec.RootKeys, k.Public().(ed25519.PublicKey))
	}
	root, err := NewRoot(spec)
	if err != nil {
		return nil, err
	}
	for _, k := range rootKeys {
		if root, err = SignRoot(root, k); err != nil {
			return nil, err
		}
	}
	return Create(dir, root, online, now)
}

// Create starts a repository in dir from a signed root version 1 (the one
// agents are provisioned with) and the hub's online keys, which must be
// the ones that root names.
func Create(dir string, signedRoot []byte, online OnlineKeys, now func() time.Time) (*Repo, error) {
	if now == nil {
		now = time.Now
	}
	root, err := metadata.Root().FromBytes(signedRoot)
	if err != nil {
		return nil, fmt.Errorf("%w: root: %w", ErrRepo, err)
	}
	if root.Signed.Version != 1 {
		return nil, fmt.Errorf("%w: a new repository starts from root version 1, got %d", ErrRepo, root.Signed.Version)
	}
	if err := root.VerifyDelegate(metadata.ROOT, root); err != nil {
		return nil, fmt.Errorf("%w: root is not signed by a threshold of its keys: %w", ErrRepo, err)
	}
	r := &Repo{dir: dir, keys: online, now: now, root: root}
	if err := r.checkOnline(); err != nil {
		return nil, err
	}
	t := now().UTC()
	r.targets = metadata.Targets(t.Add(TargetsExpiry))
	r.snapshot = metadata.Snapshot(t.Add(SnapshotExpiry))
	r.timestamp = metadata.Timestamp(t.Add(TimestampExpiry))
	if err := os.MkdirAll(filepath.Join(dir, "targets"), 0o755); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrRepo, err)
	}
	if err := writeMeta(dir, "1.root.json", root); err != nil {
		return nil, err
	}
	if err := r.publish(false); err != nil {
		return nil, err
	}
	return r, nil
}

// Open loads the repository a hub wrote earlier: the newest root, targets
// and snapshot, and the timestamp. See CheckKeys.
func Open(dir string, online OnlineKeys, now func() time.Time) (*Repo, error) {
	if now == nil {
		now = time.Now
	}
	r := &Repo{dir: dir, keys: online, now: now}
	var err error
	if r.root, err = loadNewest(dir, "root", metadata.Root()); err != nil {
		return nil, err
	}
	if r.targets, err = loadNewest(dir, "targets", metadata.Targets()); err != nil {
		return nil, err
	}
	if r.snapshot, err = loadNewest(dir, "snapshot", metadata.Snapshot()); err != nil {
		return nil, err
	}
	if r.timestamp, err = metadata.Timestamp().FromFile(filepath.Join(dir, "timestamp.json")); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrRepo, err)
	}
	return r, nil
}

// CheckKeys reports whether the online keys are the ones the newest root
// names. Open does not check, so that a hub can publish a rotation to new
// keys first (UpdateRoot); it must check before it signs anything.
func (r *Repo) CheckKeys() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.checkOnline()
}

// Published reports whether the newest targets metadata in dir lists
// target: what a hub that does not sign reads from its copy.
func Published(dir, target string) (bool, error) {
	t, err := loadNewest(dir, "targets", metadata.Targets())
	if err != nil {
		return false, err
	}
	_, ok := t.Signed.Targets[target]
	return ok, nil
}

// Exists reports whether dir holds a repository.
func Exists(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, "1.root.json"))
	return err == nil
}

// loadNewest reads the highest N.role.json in dir.
func loadNewest[T metadata.Roles](dir, role string, m *metadata.Metadata[T]) (*metadata.Metadata[T], error) {
	names, _ := filepath.Glob(filepath.Join(dir, "*."+role+".json"))
	best := int64(0)
	for _, n := range names {
		v, err := strconv.ParseInt(strings.TrimSuffix(filepath.Base(n), "."+role+".json"), 10, 64)
		if err == nil && v > best {
			best = v
		}
	}
	if best == 0 {
		return nil, fmt.Errorf("%w: no %s metadata in %s", ErrRepo, role, dir)
	}
	out, err := m.FromFile(filepath.Join(dir, strconv.FormatInt(best, 10)+"."+role+".json"))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrRepo, role, err)
	}
	return out, nil
}

// checkOnline refuses online keys that root does not name for their role:
// everything signed with them would be rejected by every agent.
func (r *Repo) checkOnline() error {
	pub := r.keys.Public()
	for role, k := range map[string]ed25519.PublicKey{metadata.TARGETS: pub.Targets, metadata.SNAPSHOT: pub.Snapshot, metadata.TIMESTAMP: pub.Timestamp} {
		key, err := metadata.KeyFromPublicKey(k)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrRepo, err)
		}
		id, err := key.ID()
		if err != nil {
			return fmt.Errorf("%w: %w", ErrRepo, err)
		}
		if !slices.Contains(r.root.Signed.Roles[role].KeyIDs, id) {
			return fmt.Errorf("%w: the %s online key is not the one root version %d names for %s", ErrRepo, role, r.root.Signed.Version, role)
		}
	}
	return nil
}

// UpdateRoot publishes a new root version (a rotation signed offline), after
// checking it the way clients will, and re-signs everything else if the
// hub's online keys changed with it.
func (r *Repo) UpdateRoot(signed []byte, online OnlineKeys) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	prev, err := r.root.ToBytes(false)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrRepo, err)
	}
	if err := VerifyRotation(prev, signed); err != nil {
		return err
	}
	next, err := metadata.Root().FromBytes(signed)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrRepo, err)
	}
	old := r.root
	r.root, r.keys = next, online
	if err := r.checkOnline(); err != nil {
		r.root = old
		return err
	}
	if err := r.write(strconv.FormatInt(next.Signed.Version, 10)+".root.json", next); err != nil {
		return err
	}
	// New targets, snapshot and timestamp versions signed by the current
	// keys: clients that trust the new root accept them.
	return r.publish(true)
}

// RootVersion is the version of the newest published root.
func (r *Repo) RootVersion() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.root.Signed.Version
}

// Has reports whether name is a target.
func (r *Repo) Has(name string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.targets.Signed.Targets[name]
	return ok
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

func (r *Repo) timestampTTL() time.Duration {
	if r.TimestampTTL > 0 {
		return r.TimestampTTL
	}
	return TimestampExpiry
}

func (r *Repo) wrote(rel string) {
	if r.OnWrite != nil {
		r.OnWrite(rel)
	}
}

// write writes metadata file name and tells OnWrite.
func (r *Repo) write(name string, m toBytes) error {
	if err := writeMeta(r.dir, name, m); err != nil {
		return err
	}
	r.wrote(name)
	return nil
}

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
	r.mu.Lock()
	defer r.mu.Unlock()
	dir, base := path.Split(name)
	file := filepath.Join(r.dir, "targets", filepath.FromSlash(dir), hex.EncodeToString(tf.Hashes["sha256"])+"."+base)
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrRepo, err)
	}
	if err := os.WriteFile(file, data, 0o644); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrRepo, err)
	}
	rel, _ := filepath.Rel(r.dir, file)
	r.wrote(filepath.ToSlash(rel))
	r.targets.Signed.Targets[name] = tf
	if err := r.publish(true); err != nil {
		return nil, err
	}
	return tf, nil
}

// RefreshTimestamp re-signs the timestamp with a new expiry; the hub does
// it on a schedule so clients can tell a live repository from a frozen one.
func (r *Repo) RefreshTimestamp() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.timestamp.Signed.Version++
	r.timestamp.Signed.Expires = r.now().UTC().Add(r.timestampTTL())
	r.timestamp.ClearSignatures()
	if err := sign(r.timestamp, r.keys.Timestamp); err != nil {
		return err
	}
	return r.write("timestamp.json", r.timestamp)
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
	if err := r.write(strconv.FormatInt(r.targets.Signed.Version, 10)+".targets.json", r.targets); err != nil {
		return err
	}
	r.snapshot.Signed.Meta["targets.json"] = metadata.MetaFile(r.targets.Signed.Version)
	r.snapshot.Signed.Expires = t.Add(SnapshotExpiry)
	r.snapshot.ClearSignatures()
	if err := sign(r.snapshot, r.keys.Snapshot); err != nil {
		return err
	}
	if err := r.write(strconv.FormatInt(r.snapshot.Signed.Version, 10)+".snapshot.json", r.snapshot); err != nil {
		return err
	}
	r.timestamp.Signed.Meta["snapshot.json"] = metadata.MetaFile(r.snapshot.Signed.Version)
	r.timestamp.Signed.Expires = t.Add(r.timestampTTL())
	r.timestamp.ClearSignatures()
	if err := sign(r.timestamp, r.keys.Timestamp); err != nil {
		return err
	}
	return r.write("timestamp.json", r.timestamp)
}
