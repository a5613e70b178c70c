package tuf_test

import (
	"context"
	"crypto/ed25519"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/outpost-edge/outpost/sync/transfer"
	"github.com/outpost-edge/outpost/sync/tuf"
)

// The attack tests play a malicious or compromised repository on loopback
// against a client that trusts the real root. Each attack must be refused
// with its own error; TestTamperedTargetIsRefused covers tampered targets.

// copyFile makes dst a copy of src.
func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestRollbackAttackIsRefused: after the client has seen timestamp v3, a
// mirror serving the older v2 timestamp (with its still-valid signature)
// is refused: versions never go back.
func TestRollbackAttackIsRefused(t *testing.T) {
	r, dir, srv := repo(t, nil)
	if _, err := r.AddTarget("models/m/1.tar", []byte("one"), nil); err != nil {
		t.Fatal(err)
	}
	old := filepath.Join(t.TempDir(), "timestamp.json")
	copyFile(t, filepath.Join(dir, "timestamp.json"), old) // v2
	if _, err := r.AddTarget("models/m/2.tar", []byte("two"), nil); err != nil {
		t.Fatal(err)
	}
	c := client(t, r, srv)
	if err := c.Refresh(); err != nil {
		t.Fatal(err)
	}
	copyFile(t, old, filepath.Join(dir, "timestamp.json"))
	err := c.Refresh()
	if !errors.Is(err, &metadata.ErrBadVersionNumber{}) {
		t.Fatalf("refresh against a rolled-back timestamp: err = %v, want a bad version number", err)
	}
}

// TestMixAndMatchIsRefused: the timestamp names snapshot v3; a mirror that
// serves an older, validly signed snapshot in its place is refused.
func TestMixAndMatchIsRefused(t *testing.T) {
	r, dir, srv := repo(t, nil)
	for _, n := range []string{"models/m/1.tar", "models/m/2.tar"} {
		if _, err := r.AddTarget(n, []byte(n), nil); err != nil {
			t.Fatal(err)
		}
	}
	copyFile(t, filepath.Join(dir, "2.snapshot.json"), filepath.Join(dir, "3.snapshot.json"))
	err := client(t, r, srv).Refresh()
	if !errors.Is(err, &metadata.ErrBadVersionNumber{}) {
		t.Fatalf("refresh with a mixed-in older snapshot: err = %v, want a bad version number", err)
	}
}

// TestFreezeAttackIsRefused: a mirror that keeps serving a timestamp that
// has expired (it froze the repository) is refused, by the expiry.
func TestFreezeAttackIsRefused(t *testing.T) {
	past := time.Now().Add(-tuf.TimestampExpiry - time.Minute)
	r, _, srv := repo(t, func() time.Time { return past })
	err := client(t, r, srv).Refresh()
	if !errors.Is(err, &metadata.ErrExpiredMetadata{}) {
		t.Fatalf("refresh of a frozen repository: err = %v, want expired metadata", err)
	}
}

// endless answers every request under prefix with a body that never ends.
func endless(next http.Handler, prefix string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, prefix) {
			next.ServeHTTP(w, r)
			return
		}
		buf := make([]byte, 32<<10)
		for i := range buf {
			buf[i] = '{'
		}
		for {
			if _, err := w.Write(buf); err != nil {
				return
			}
		}
	})
}

// TestEndlessDataIsRefused: a server that streams forever, for metadata or
// for an artifact, is cut off at the signed (or configured) length.
func TestEndlessDataIsRefused(t *testing.T) {
	r, dir, _ := repo(t, nil)
	tf, err := r.AddTarget("models/m/1.tar", []byte("a model package"), nil)
	if err != nil {
		t.Fatal(err)
	}
	files := http.FileServer(http.Dir(dir))

	meta := httptest.NewServer(endless(files, "/timestamp.json"))
	defer meta.Close()
	if err := client(t, r, meta).Refresh(); !errors.Is(err, &metadata.ErrDownloadLengthMismatch{}) {
		t.Fatalf("endless timestamp: err = %v, want a download length mismatch", err)
	}

	art := httptest.NewServer(endless(files, "/targets/"))
	defer art.Close()
	c := client(t, r, art)
	if err := c.Refresh(); err != nil {
		t.Fatal(err)
	}
	info, err := c.Target("models/m/1.tar")
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "pkg")
	if err := c.Download(context.Background(), info, dst); !errors.Is(err, transfer.ErrVerify) {
		t.Fatalf("endless artifact: err = %v, want ErrVerify", err)
	}
	if fi, err := os.Stat(dst + ".part"); err == nil && fi.Size() > tf.Length {
		t.Fatalf("staged %d bytes of a %d-byte target", fi.Size(), tf.Length)
	}
}

// TestWrongKeyIsRefused: a repository signed by keys the trusted root does
// not name (an impostor hub) is refused.
func TestWrongKeyIsRefused(t *testing.T) {
	real, _, _ := repo(t, nil)
	_, _, impostor := repo(t, nil) // same layout, other keys
	err := client(t, real, impostor).Refresh()
	if !errors.Is(err, &metadata.ErrUnsignedMetadata{}) {
		t.Fatalf("refresh against an impostor: err = %v, want unsigned metadata", err)
	}
}

// TestRevokedKeyAfterRotationIsRefused: root v2 replaces the timestamp key
// (say it leaked). A client that has seen v2 refuses a timestamp the old
// key signs, while the repository signed with the new key is accepted;
// and the hub will not sign with a key its newest root does not name.
func TestRevokedKeyAfterRotationIsRefused(t *testing.T) {
	rootA, rootB := key(t), key(t)
	oldKeys := tuf.OnlineKeys{Targets: key(t), Snapshot: key(t), Timestamp: key(t)}
	dir := t.TempDir()
	r, err := tuf.Init(dir, []ed25519.PrivateKey{rootA, rootB}, 2, oldKeys, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.AddTarget("models/m/1.tar", []byte("one"), nil); err != nil {
		t.Fatal(err)
	}
	// A snapshot of the repository before the rotation, kept by the thief.
	stolen := t.TempDir()
	for _, f := range []string{"1.root.json", "2.targets.json", "2.snapshot.json", "timestamp.json"} {
		copyFile(t, filepath.Join(dir, f), filepath.Join(stolen, f))
	}

	newKeys := oldKeys
	newKeys.Timestamp = key(t)
	spec := tuf.RootSpec{Version: 2, RootKeys: []ed25519.PublicKey{rootA.Public().(ed25519.PublicKey), rootB.Public().(ed25519.PublicKey)},
		Threshold: 2, Online: newKeys.Public(), Expires: time.Now().Add(tuf.RootExpiry)}
	v2, err := tuf.NewRoot(spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.UpdateRoot(v2, newKeys); err == nil {
		t.Fatal("the hub published an unsigned root")
	}
	for _, k := range []ed25519.PrivateKey{rootA, rootB} {
		if v2, err = tuf.SignRoot(v2, k); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.UpdateRoot(v2, oldKeys); err == nil {
		t.Fatal("the hub kept signing with the revoked timestamp key")
	}
	if err := r.UpdateRoot(v2, newKeys); err != nil {
		t.Fatal(err)
	}
	if reopened, err := tuf.Open(dir, oldKeys, nil); err != nil || reopened.CheckKeys() == nil {
		t.Fatalf("the repository accepts the revoked key (open: %v)", err)
	}

	srv := httptest.NewServer(http.FileServer(http.Dir(dir)))
	defer srv.Close()
	c := client(t, r, srv)
	if err := c.Refresh(); err != nil {
		t.Fatalf("refresh across the rotation: %v", err)
	}

	// The thief signs a fresh timestamp with the revoked key and serves it
	// with the rest of the real repository.
	thief, err := tuf.Open(stolen, oldKeys, nil)
	if err != nil || thief.CheckKeys() != nil {
		t.Fatal(err)
	}
	for range 5 {
		if err := thief.RefreshTimestamp(); err != nil {
			t.Fatal(err)
		}
	}
	copyFile(t, filepath.Join(stolen, "timestamp.json"), filepath.Join(dir, "timestamp.json"))
	err = c.Refresh()
	if !errors.Is(err, &metadata.ErrUnsignedMetadata{}) {
		t.Fatalf("refresh with a timestamp signed by the revoked key: err = %v, want unsigned metadata", err)
	}
}

// TestRepoReopens: a hub restart loads what it published and goes on.
func TestRepoReopens(t *testing.T) {
	online := tuf.OnlineKeys{Targets: key(t), Snapshot: key(t), Timestamp: key(t)}
	dir := t.TempDir()
	r, err := tuf.Init(dir, []ed25519.PrivateKey{key(t)}, 1, online, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.AddTarget("models/m/1.tar", []byte("one"), nil); err != nil {
		t.Fatal(err)
	}
	r2, err := tuf.Open(dir, online, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !r2.Has("models/m/1.tar") {
		t.Fatal("reopened repository lost its target")
	}
	if _, err := r2.AddTarget("models/m/2.tar", []byte("two"), nil); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.FileServer(http.Dir(dir)))
	defer srv.Close()
	c := client(t, r2, srv)
	if err := c.Refresh(); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"models/m/1.tar", "models/m/2.tar"} {
		if _, err := c.Target(n); err != nil {
			t.Fatal(err)
		}
	}
}

// TestFailingServerIsTriedOnce: a request that fails is not retried
// inside Refresh (go-tuf's fetcher with a custom client would retry for
// minutes); the update machine decides when to try again.
func TestFailingServerIsTriedOnce(t *testing.T) {
	r, _, _ := repo(t, nil)
	var requests atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		requests.Add(1)
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	root, _ := r.TrustedRoot()
	c, err := tuf.NewClientWith(root, srv.URL, t.TempDir(), &http.Client{})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Refresh(); err == nil {
		t.Fatal("refresh against a failing server succeeded")
	}
	// 2.root.json answers 503 (not 404): the root update stops there.
	if n := requests.Load(); n != 1 {
		t.Fatalf("%d requests, want 1", n)
	}
}
