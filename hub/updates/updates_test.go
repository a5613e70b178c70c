package updates_test

import (
	"bytes"
	"context"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/outpost-edge/outpost/hub/ctl"
	"github.com/outpost-edge/outpost/hub/updates"
	"github.com/outpost-edge/outpost/models/manifest"
	"github.com/outpost-edge/outpost/models/onnx"
	"github.com/outpost-edge/outpost/sync/tuf"
)

func outpostctl(t *testing.T, args ...string) (int, string) {
	t.Helper()
	var out bytes.Buffer
	code := ctl.Main(context.Background(), args, &out, &out)
	return code, out.String()
}

func pkg(t *testing.T, v int64) (mj, model []byte) {
	t.Helper()
	model, err := onnx.Logistic([][]float32{{1}}, []float32{0})
	if err != nil {
		t.Fatal(err)
	}
	m := &manifest.Manifest{Name: "m", Version: v, Task: "anomaly", Features: []manifest.Feature{{Field: "x", Agg: "mean", Std: 1}},
		Outputs: manifest.Outputs{Threshold: 0.5}, Golden: []manifest.Golden{{Input: []float32{0}, Output: []float32{0.5}, Tolerance: 1e-6}}}
	dir := t.TempDir()
	if err := manifest.Write(dir, m, model); err != nil {
		t.Fatal(err)
	}
	mj, _ = os.ReadFile(filepath.Join(dir, manifest.ManifestFile))
	return mj, model
}

// TestOfflineKeysServeDevicesAndRotate follows the operator guide: keys
// made by outpostctl on an "offline" directory, a hub that has only the
// signed root and the online keys, a device that trusts root v1; then a
// rotation that revokes a root key and replaces the online keys, signed
// one key at a time, which the hub publishes at its next start and the
// device follows.
func TestOfflineKeysServeDevicesAndRotate(t *testing.T) {
	keys, data := t.TempDir(), t.TempDir()
	if code, out := outpostctl(t, "keys", "init", "--dir", keys, "--root-keys", "3", "--threshold", "2"); code != 0 {
		t.Fatalf("keys init: %s", out)
	}
	log := slog.New(slog.DiscardHandler)
	cfg := updates.Config{RootFile: filepath.Join(keys, "root.json"), OnlineKeys: filepath.Join(keys, "online.json")}
	s, err := updates.Open(cfg, data, log)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.PublishModel(pkg(t, 1)); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	root, _ := os.ReadFile(filepath.Join(keys, "root.json"))
	device, err := tuf.NewClient(root, srv.URL, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	fetch := func(v int64) {
		t.Helper()
		if err := device.Refresh(); err != nil {
			t.Fatal(err)
		}
		tf, err := device.Target(tuf.ModelTargetName("m", v))
		if err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(t.TempDir(), "pkg.tar")
		if err := device.Download(context.Background(), tf, dst); err != nil {
			t.Fatal(err)
		}
		f, _ := os.Open(dst)
		defer f.Close()
		m, err := manifest.Unpack(f, t.TempDir())
		if err != nil || m.Version != v {
			t.Fatalf("unpacked %+v, %v", m, err)
		}
	}
	fetch(1)

	next := filepath.Join(keys, "root-v2.json")
	if code, out := outpostctl(t, "keys", "rotate", "--root", filepath.Join(keys, "root.json"), "--out", next,
		"--revoke", filepath.Join(keys, "root-2.key"), "--new-online", "--dir", keys); code != 0 {
		t.Fatalf("keys rotate: %s", out)
	}
	if code, out := outpostctl(t, "keys", "show", next, filepath.Join(keys, "root.json")); code == 0 || !strings.Contains(out, "not ready") {
		t.Fatalf("unsigned rotation shown as ready: %s", out)
	}
	cfg2 := updates.Config{RootFile: next, OnlineKeys: filepath.Join(keys, "online-v2.json")}
	if _, err := updates.Open(cfg2, data, log); err == nil {
		t.Fatal("the hub published an unsigned rotation")
	}
	for _, k := range []string{"root-1.key", "root-3.key"} {
		if code, out := outpostctl(t, "keys", "sign", "--root", next, "--key", filepath.Join(keys, k)); code != 0 {
			t.Fatalf("keys sign %s: %s", k, out)
		}
	}
	if code, out := outpostctl(t, "keys", "show", next, filepath.Join(keys, "root.json")); code != 0 || !strings.Contains(out, "ready") {
		t.Fatalf("signed rotation: %s", out)
	}
	// The old online keys are revoked by v2: a hub still holding them
	// refuses to start rather than sign what every device would refuse.
	if _, err := updates.Open(updates.Config{RootFile: next, OnlineKeys: filepath.Join(keys, "online.json")}, data, log); err == nil {
		t.Fatal("the hub started with online keys the new root revokes")
	}
	s2, err := updates.Open(cfg2, data, log)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s2.PublishModel(pkg(t, 2)); err != nil {
		t.Fatal(err)
	}
	srv2 := httptest.NewServer(s2.Handler())
	defer srv2.Close()
	device2, err := tuf.NewClient(root, srv2.URL, t.TempDir()) // provisioned with v1 long ago
	if err != nil {
		t.Fatal(err)
	}
	device = device2
	fetch(2)
	fetch(1)
}
