package tuf_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/sync/transfer"
	"github.com/outpost-edge/outpost/sync/tuf"
)

func key(t *testing.T) ed25519.PrivateKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// repo is a fresh repository with two of three root keys signing, served
// over HTTP like the hub serves it.
func repo(t *testing.T, now func() time.Time) (*tuf.Repo, string, *httptest.Server) {
	t.Helper()
	dir := t.TempDir()
	r, err := tuf.Init(dir, []ed25519.PrivateKey{key(t), key(t)}, 2,
		tuf.OnlineKeys{Targets: key(t), Snapshot: key(t), Timestamp: key(t)}, now)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.FileServer(http.Dir(dir)))
	t.Cleanup(srv.Close)
	return r, dir, srv
}

func client(t *testing.T, r *tuf.Repo, srv *httptest.Server) *tuf.Client {
	t.Helper()
	root, err := r.TrustedRoot()
	if err != nil {
		t.Fatal(err)
	}
	c, err := tuf.NewClient(root, srv.URL, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

type modelInfo struct {
	Model   string `json:"model"`
	Version int64  `json:"version"`
	Arch    string `json:"arch"`
}

// TestModelTargetRoundTrip: the hub publishes a model as a target with
// custom metadata; the agent refreshes, reads the target info and
// downloads it into place, verified.
func TestModelTargetRoundTrip(t *testing.T) {
	r, _, srv := repo(t, nil)
	payload := bytes.Repeat([]byte("onnx-bytes "), 5000)
	if _, err := r.AddTarget("models/overheat/3/model.onnx", payload, modelInfo{"overheat", 3, "arm64"}); err != nil {
		t.Fatal(err)
	}
	c := client(t, r, srv)
	if err := c.Refresh(); err != nil {
		t.Fatal(err)
	}
	tf, err := c.Target("models/overheat/3/model.onnx")
	if err != nil {
		t.Fatal(err)
	}
	var info modelInfo
	if tf.Custom == nil || json.Unmarshal(*tf.Custom, &info) != nil || info.Version != 3 || info.Arch != "arm64" {
		t.Errorf("custom metadata %v", tf.Custom)
	}
	dst := filepath.Join(t.TempDir(), "model.onnx")
	if err := c.Download(context.Background(), tf, dst); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(dst); !bytes.Equal(got, payload) {
		t.Fatal("downloaded bytes differ")
	}
	// A second version: the client sees it after its next refresh.
	if _, err := r.AddTarget("models/overheat/4/model.onnx", []byte("v4"), modelInfo{"overheat", 4, "arm64"}); err != nil {
		t.Fatal(err)
	}
	if err := c.Refresh(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Target("models/overheat/4/model.onnx"); err != nil {
		t.Fatal(err)
	}
}

// TestTamperedTargetIsRefused: a target file altered on the server (a
// compromised mirror) fails verification and leaves nothing behind.
func TestTamperedTargetIsRefused(t *testing.T) {
	r, dir, srv := repo(t, nil)
	tf, err := r.AddTarget("models/m/1/model.onnx", []byte("the real model"), nil)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "targets", "models", "m", "1", hex.EncodeToString(tf.Hashes["sha256"])+".model.onnx")
	if err := os.WriteFile(file, []byte("the evil model"), 0o644); err != nil { // same length
		t.Fatal(err)
	}
	c := client(t, r, srv)
	if err := c.Refresh(); err != nil {
		t.Fatal(err)
	}
	info, err := c.Target("models/m/1/model.onnx")
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "model.onnx")
	if err := c.Download(context.Background(), info, dst); !errors.Is(err, transfer.ErrVerify) {
		t.Fatalf("err = %v, want ErrVerify", err)
	}
	for _, p := range []string{dst, dst + ".part"} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s left behind after a failed verification", p)
		}
	}
}

// TestTamperedMetadataIsRefused: targets metadata edited on the server
// (to point at other bytes) no longer verifies against its signature.
func TestTamperedMetadataIsRefused(t *testing.T) {
	r, dir, srv := repo(t, nil)
	if _, err := r.AddTarget("models/m/1/model.onnx", []byte("the real model"), nil); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "2.targets.json")
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(file, bytes.Replace(data, []byte(`"length": 14`), []byte(`"length": 15`), 1), 0o644)
	if err := client(t, r, srv).Refresh(); err == nil || !strings.Contains(err.Error(), "tuf: refresh") {
		t.Fatalf("refresh of tampered targets: err = %v, want a verification error", err)
	}
}

// TestExpiredTimestampIsRefused: a repository whose timestamp was not
// refreshed in time (a frozen mirror) is refused.
func TestExpiredTimestampIsRefused(t *testing.T) {
	past := time.Now().Add(-tuf.TimestampExpiry - time.Hour)
	r, _, srv := repo(t, func() time.Time { return past })
	if err := client(t, r, srv).Refresh(); err == nil {
		t.Fatal("refresh accepted an expired timestamp")
	}
	// The hub refreshing its timestamp fixes it.
	r2, _, srv2 := repo(t, nil)
	if err := r2.RefreshTimestamp(); err != nil {
		t.Fatal(err)
	}
	if err := client(t, r2, srv2).Refresh(); err != nil {
		t.Fatal(err)
	}
}

// TestInterruptedDownloadResumes: the connection drops halfway; the next
// try asks only for the rest (Range) and the artifact verifies.
func TestInterruptedDownloadResumes(t *testing.T) {
	r, dir, _ := repo(t, nil)
	payload := bytes.Repeat([]byte("0123456789abcdef"), 64<<10) // 1 MiB
	tf, err := r.AddTarget("agent/outpost-agent", payload, nil)
	if err != nil {
		t.Fatal(err)
	}
	files := http.FileServer(http.Dir(dir))
	var ranges []string
	cut := true
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if !strings.Contains(req.URL.Path, "/targets/") {
			files.ServeHTTP(w, req)
			return
		}
		ranges = append(ranges, req.Header.Get("Range"))
		if cut {
			cut = false
			w.Header().Set("Content-Length", "1048576")
			w.WriteHeader(http.StatusOK)
			w.Write(payload[:300<<10]) // then the connection drops
			return
		}
		files.ServeHTTP(w, req) // ServeContent answers Range with 206
	}))
	defer srv.Close()
	c := client(t, r, srv)
	if err := c.Refresh(); err != nil {
		t.Fatal(err)
	}
	info, err := c.Target("agent/outpost-agent")
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "outpost-agent")
	if err := c.Download(context.Background(), info, dst); err == nil {
		t.Fatal("the interrupted download reported success")
	}
	if err := c.Download(context.Background(), info, dst); err != nil {
		t.Fatal(err)
	}
	if len(ranges) != 2 || ranges[0] != "" || ranges[1] != "bytes=307200-" {
		t.Errorf("requests' Range headers %q, want none then bytes=307200-", ranges)
	}
	if got, _ := os.ReadFile(dst); !bytes.Equal(got, payload) || int64(len(got)) != tf.Length {
		t.Fatal("resumed download differs")
	}
}
