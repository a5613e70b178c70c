package tuf

import (
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"strings"
)

// Key files hold an ed25519 seed in hex, one key per file, mode 0600: root
// keys live on offline media, the online keys on the hub.

// GenerateKey makes a new ed25519 signing key.
func GenerateKey() (ed25519.PrivateKey, error) {
	_, k, err := ed25519.GenerateKey(nil)
	if err != nil {
		return nil, fmt.Errorf("tuf: generate key: %w", err)
	}
	return k, nil
}

// WriteKey stores k at path, refusing to overwrite an existing key.
func WriteKey(path string, k ed25519.PrivateKey) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("tuf: write key: %w", err)
	}
	if _, err := f.WriteString(hex.EncodeToString(k.Seed()) + "\n"); err != nil {
		f.Close()
		return fmt.Errorf("tuf: write key %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("tuf: write key %s: %w", path, err)
	}
	return f.Close()
}

// ReadKey loads a key written by WriteKey.
func ReadKey(path string) (ed25519.PrivateKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tuf: read key: %w", err)
	}
	seed, err := hex.DecodeString(strings.TrimSpace(string(data)))
	if err != nil || len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("tuf: key %s: not a hex ed25519 seed", path)
	}
	return ed25519.NewKeyFromSeed(seed), nil
}

// GenerateOnlineKeys makes the three keys the hub signs with.
func GenerateOnlineKeys() (OnlineKeys, error) {
	var k OnlineKeys
	var err error
	for _, p := range []*ed25519.PrivateKey{&k.Targets, &k.Snapshot, &k.Timestamp} {
		if *p, err = GenerateKey(); err != nil {
			return OnlineKeys{}, err
		}
	}
	return k, nil
}

type onlineFile struct {
	Targets   string `json:"targets"`
	Snapshot  string `json:"snapshot"`
	Timestamp string `json:"timestamp"`
}

// WriteOnlineKeys stores the online keys in one file (mode 0600) for the
// hub's updates.online_keys setting.
func WriteOnlineKeys(path string, k OnlineKeys) error {
	data, _ := json.MarshalIndent(onlineFile{
		Targets:   hex.EncodeToString(k.Targets.Seed()),
		Snapshot:  hex.EncodeToString(k.Snapshot.Seed()),
		Timestamp: hex.EncodeToString(k.Timestamp.Seed()),
	}, "", "  ")
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("tuf: write online keys: %w", err)
	}
	if _, err := f.Write(append(data, '\n')); err != nil {
		f.Close()
		return fmt.Errorf("tuf: write online keys: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("tuf: write online keys: %w", err)
	}
	return f.Close()
}

// ReadOnlineKeys loads a file written by WriteOnlineKeys.
func ReadOnlineKeys(path string) (OnlineKeys, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return OnlineKeys{}, fmt.Errorf("tuf: online keys: %w", err)
	}
	var f onlineFile
	if err := json.Unmarshal(data, &f); err != nil {
		return OnlineKeys{}, fmt.Errorf("tuf: online keys %s: %w", path, err)
	}
	var k OnlineKeys
	for _, p := range []struct {
		role string
		hex  string
		key  *ed25519.PrivateKey
	}{{"targets", f.Targets, &k.Targets}, {"snapshot", f.Snapshot, &k.Snapshot}, {"timestamp", f.Timestamp, &k.Timestamp}} {
		seed, err := hex.DecodeString(p.hex)
		if err != nil || len(seed) != ed25519.SeedSize {
			return OnlineKeys{}, fmt.Errorf("tuf: online keys %s: %s is not a hex ed25519 seed", path, p.role)
		}
		*p.key = ed25519.NewKeyFromSeed(seed)
	}
	return k, nil
}
