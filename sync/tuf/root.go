package tuf

import (
	"crypto/ed25519"
	"fmt"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// RootSpec is what a root version says: who may sign each role.
type RootSpec struct {
	Version   int64
	RootKeys  []ed25519.PublicKey
	Threshold int
	// Online are the hub's public keys for targets, snapshot and timestamp.
	Online  OnlinePublic
	Expires time.Time
}

// OnlinePublic are the public halves of OnlineKeys.
type OnlinePublic struct {
	Targets, Snapshot, Timestamp ed25519.PublicKey
}

// Public returns the public halves of the online keys.
func (k OnlineKeys) Public() OnlinePublic {
	return OnlinePublic{
		Targets:   k.Targets.Public().(ed25519.PublicKey),
		Snapshot:  k.Snapshot.Public().(ed25519.PublicKey),
		Timestamp: k.Timestamp.Public().(ed25519.PublicKey),
	}
}

// NewRoot builds an unsigned root document from spec; SignRoot adds
// signatures to it, one offline key at a time.
func NewRoot(spec RootSpec) ([]byte, error) {
	if spec.Threshold < 1 || len(spec.RootKeys) < spec.Threshold {
		return nil, fmt.Errorf("%w: %d root keys for threshold %d", ErrRepo, len(spec.RootKeys), spec.Threshold)
	}
	root := metadata.Root(spec.Expires.UTC())
	root.Signed.Version = spec.Version
	for _, k := range spec.RootKeys {
		if err := addKey(root, k, metadata.ROOT); err != nil {
			return nil, err
		}
	}
	root.Signed.Roles[metadata.ROOT].Threshold = spec.Threshold
	for role, k := range map[string]ed25519.PublicKey{metadata.TARGETS: spec.Online.Targets, metadata.SNAPSHOT: spec.Online.Snapshot, metadata.TIMESTAMP: spec.Online.Timestamp} {
		if err := addKey(root, k, role); err != nil {
			return nil, err
		}
	}
	return root.ToBytes(true)
}

// SignRoot adds k's signature to a root document (replacing an earlier one
// by the same key).
func SignRoot(data []byte, k ed25519.PrivateKey) ([]byte, error) {
	root, err := metadata.Root().FromBytes(data)
	if err != nil {
		return nil, fmt.Errorf("%w: root: %w", ErrRepo, err)
	}
	if err := sign(root, k); err != nil {
		return nil, err
	}
	return root.ToBytes(true)
}

// RootStatus says what a root document is and whether it is ready.
type RootStatus struct {
	Version   int64
	Expires   time.Time
	Threshold int
	RootKeys  []string // key ids
	Signed    int      // valid signatures by this root's own root keys
	// Complete: the root verifies with its own keys (threshold met). A
	// rotation also needs previous's threshold; see VerifyRotation.
	Complete bool
}

// InspectRoot reads a root document and counts its valid signatures.
func InspectRoot(data []byte) (RootStatus, error) {
	root, err := metadata.Root().FromBytes(data)
	if err != nil {
		return RootStatus{}, fmt.Errorf("%w: root: %w", ErrRepo, err)
	}
	role := root.Signed.Roles[metadata.ROOT]
	st := RootStatus{Version: root.Signed.Version, Expires: root.Signed.Expires, Threshold: role.Threshold, RootKeys: role.KeyIDs}
	st.Signed = countValid(root, root)
	st.Complete = root.VerifyDelegate(metadata.ROOT, root) == nil
	return st, nil
}

// countValid counts signatures on m made by by's root keys.
func countValid(by, m *metadata.Metadata[metadata.RootType]) int {
	n := 0
	for _, id := range by.Signed.Roles[metadata.ROOT].KeyIDs {
		one := *m
		one.Signatures = nil
		for _, s := range m.Signatures {
			if s.KeyID == id {
				one.Signatures = append(one.Signatures, s)
			}
		}
		if len(one.Signatures) == 0 {
			continue
		}
		tmp := *by
		tmp.Signed.Roles = map[string]*metadata.Role{metadata.ROOT: {KeyIDs: []string{id}, Threshold: 1}}
		if tmp.VerifyDelegate(metadata.ROOT, &one) == nil {
			n++
		}
	}
	return n
}

// VerifyRotation checks that next may follow prev, as clients will: the
// next version, signed by a threshold of prev's root keys and of its own.
func VerifyRotation(prev, next []byte) error {
	p, err := metadata.Root().FromBytes(prev)
	if err != nil {
		return fmt.Errorf("%w: previous root: %w", ErrRepo, err)
	}
	n, err := metadata.Root().FromBytes(next)
	if err != nil {
		return fmt.Errorf("%w: new root: %w", ErrRepo, err)
	}
	if n.Signed.Version != p.Signed.Version+1 {
		return fmt.Errorf("%w: new root is version %d, want %d", ErrRepo, n.Signed.Version, p.Signed.Version+1)
	}
	if err := p.VerifyDelegate(metadata.ROOT, n); err != nil {
		return fmt.Errorf("%w: new root lacks a threshold of the previous root keys: %w", ErrRepo, err)
	}
	if err := n.VerifyDelegate(metadata.ROOT, n); err != nil {
		return fmt.Errorf("%w: new root lacks a threshold of its own root keys: %w", ErrRepo, err)
	}
	return nil
}

// Rotation is how the next root differs from the current one.
type Rotation struct {
	// Revoke are root key ids to drop; Add are new root public keys.
	Revoke []string
	Add    []ed25519.PublicKey
	// Threshold of root signatures from now on (0: unchanged).
	Threshold int
	// Online, when set, replaces the hub's targets/snapshot/timestamp keys.
	Online  *OnlinePublic
	Expires time.Time
}

// NextRoot builds the unsigned root that follows current. It needs a
// threshold of signatures from current's root keys and from its own
// (SignRoot) before a hub publishes it and clients accept it.
func NextRoot(current []byte, rot Rotation) ([]byte, error) {
	root, err := metadata.Root().FromBytes(current)
	if err != nil {
		return nil, fmt.Errorf("%w: current root: %w", ErrRepo, err)
	}
	for _, id := range rot.Revoke {
		if err := root.Signed.RevokeKey(id, metadata.ROOT); err != nil {
			return nil, fmt.Errorf("%w: revoke root key %s: %w", ErrRepo, id, err)
		}
	}
	for _, k := range rot.Add {
		if err := addKey(root, k, metadata.ROOT); err != nil {
			return nil, err
		}
	}
	if rot.Threshold > 0 {
		root.Signed.Roles[metadata.ROOT].Threshold = rot.Threshold
	}
	if n, t := len(root.Signed.Roles[metadata.ROOT].KeyIDs), root.Signed.Roles[metadata.ROOT].Threshold; n < t {
		return nil, fmt.Errorf("%w: %d root keys left for threshold %d", ErrRepo, n, t)
	}
	if rot.Online != nil {
		for role, k := range map[string]ed25519.PublicKey{metadata.TARGETS: rot.Online.Targets, metadata.SNAPSHOT: rot.Online.Snapshot, metadata.TIMESTAMP: rot.Online.Timestamp} {
			for _, id := range append([]string(nil), root.Signed.Roles[role].KeyIDs...) {
				if err := root.Signed.RevokeKey(id, role); err != nil {
					return nil, fmt.Errorf("%w: revoke %s key: %w", ErrRepo, role, err)
				}
			}
			if err := addKey(root, k, role); err != nil {
				return nil, err
			}
		}
	}
	root.Signed.Version++
	root.Signed.Expires = rot.Expires.UTC()
	root.ClearSignatures()
	return root.ToBytes(true)
}

// KeyID is the TUF key id of a public key.
func KeyID(k ed25519.PublicKey) (string, error) {
	key, err := metadata.KeyFromPublicKey(k)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrRepo, err)
	}
	return key.ID()
}
