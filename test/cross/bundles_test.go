package cross

import (
	"context"
	"crypto/ed25519"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/outpost-edge/outpost/firmware/build"
	"github.com/outpost-edge/outpost/firmware/bundle"
	"github.com/outpost-edge/outpost/test/testenv"
)

// TestBundlesForEveryArchitecture builds the armv7 and amd64 bundles (the
// arm64 one runs under qemu in test/pipeline): each holds an agent for its
// architecture, ONNX Runtime where npm ships one (not armv7), and verifies.
func TestBundlesForEveryArchitecture(t *testing.T) {
	src, err := testenv.Root()
	if err != nil {
		t.Fatal(err)
	}
	pub, key, _ := ed25519.GenerateKey(nil)
	root := filepath.Join(t.TempDir(), "root.json")
	os.WriteFile(root, []byte("{}"), 0o644)
	for arch, wantORT := range map[string]bool{"armv7": false, "amd64": true} {
		t.Run(arch, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), arch+".bundle")
			var log strings.Builder
			m, err := build.Build(context.Background(), build.Spec{Arch: arch, Version: "cross-test", Build: 3, Source: src,
				HubURL: "https://hub:8080", MQTTURL: "ssl://hub:8883", TrustedRoot: root, Key: key, Out: out, Log: &log})
			if err != nil {
				t.Fatalf("%v\n%s", err, log.String())
			}
			f, err := os.Open(out)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			dir := t.TempDir()
			if _, err := bundle.Extract(f, []ed25519.PublicKey{pub}, dir, nil); err != nil {
				t.Fatal(err)
			}
			ort := false
			for _, bf := range m.Files {
				ort = ort || strings.HasPrefix(bf.Path, bundle.LibDir+"/libonnxruntime")
			}
			if ort != wantORT {
				t.Fatalf("%s bundle has ONNX Runtime: %v, want %v (files %v)", arch, ort, wantORT, m.Files)
			}
			cfg, _ := os.ReadFile(filepath.Join(dir, bundle.ConfigPath))
			if strings.Contains(string(cfg), "onnxruntime_library") != wantORT || !strings.Contains(string(cfg), "self_update: true") {
				t.Fatalf("%s config:\n%s", arch, cfg)
			}
			if !wantORT && !strings.Contains(log.String(), "engine: go") {
				t.Fatalf("no note about the pure-Go engine for %s:\n%s", arch, log.String())
			}
		})
	}
}
