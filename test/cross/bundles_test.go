package cross

import (
	"context"
	"crypto/ed25519"
	"flag"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/outpost-edge/outpost/agent"
	"github.com/outpost-edge/outpost/agent/infer"
	"github.com/outpost-edge/outpost/deploy/config"
	"github.com/outpost-edge/outpost/firmware/build"
	"github.com/outpost-edge/outpost/firmware/bundle"
	"github.com/outpost-edge/outpost/hub/ctl"
	"github.com/outpost-edge/outpost/models/goengine"
	"github.com/outpost-edge/outpost/models/manifest"
	"github.com/outpost-edge/outpost/models/onnx"
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

// TestBundleFromARelease is the installer's path from a release, without
// a source tree or cross compilers: make dist's layout (an arm64 agent,
// ONNX Runtime in lib/ beside it), outpostctl firmware build --dist, and a
// model from a directory named otherwise than the model. It lands in
// models/<manifest name>/, where the default config's pipeline names it,
// and the agent's own check and loader take it from the flashed tree.
func TestBundleFromARelease(t *testing.T) {
	work := t.TempDir()
	dist := filepath.Join(work, "dist")
	standIn(t, filepath.Join(dist, "linux-arm64", "outpost-agent"))
	cache, err := testenv.Cache()
	if err != nil {
		t.Fatal(err)
	}
	lib := filepath.Join(dist, "linux-arm64", "lib", "libonnxruntime.so.1")
	os.MkdirAll(filepath.Dir(lib), 0o755)
	if err := os.Symlink(filepath.Join(cache, "onnxruntime", testenv.ORTVersion, "linux-arm64", "libonnxruntime.so.1"), lib); err != nil {
		t.Fatal(err)
	}
	export := filepath.Join(work, "exports", "health-2026-03-run7")
	writeHealthModel(t, export)
	pipelines := filepath.Join(work, "pipelines.yaml")
	os.WriteFile(pipelines, []byte(`- name: machine
  source: {type: simulator, simulator: {sensors: 2, rate: 10}}
  decode: {key_field: sensor, time_field: ts, fields: [vibration, current], max_skew: 1h}
  window: {kind: tumbling, size: 1s, max_out_of_order: 100ms}
  aggregations: [max, mean]
  model: {dir: /var/lib/outpost/models/health, engine: go}
`), 0o644)
	root := filepath.Join(work, "root.json")
	os.WriteFile(root, []byte("{}"), 0o644)
	keys := filepath.Join(work, "keys")
	out := filepath.Join(work, "release.bundle")
	for _, args := range [][]string{
		{"firmware", "keygen", "--dir", keys},
		{"firmware", "build", "--arch", "arm64", "--dist", dist, "--source", filepath.Join(work, "no-source-tree"),
			"--key", filepath.Join(keys, "bundle.key"), "--root", root, "--hub-url", "https://hub:8080", "--mqtt-url", "ssl://hub:8883",
			"--pipelines", pipelines, "--model", export, "--out", out},
	} {
		var o, e strings.Builder
		if rc := ctl.Main(context.Background(), args, &o, &e); rc != 0 {
			t.Fatalf("outpostctl %s: rc %d\n%s%s", strings.Join(args, " "), rc, o.String(), e.String())
		}
	}

	pub, err := bundle.ReadPublicKey(filepath.Join(keys, "bundle.pub"))
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dev := t.TempDir()
	m, err := bundle.Extract(f, []ed25519.PublicKey{pub}, dev, nil)
	if err != nil {
		t.Fatal(err)
	}
	if m.Arch != "arm64" {
		t.Fatalf("bundle for %s", m.Arch)
	}
	for _, p := range []string{bundle.AgentPath, bundle.LibDir + "/libonnxruntime.so.1", bundle.ModelsDir + "/health/manifest.json"} {
		if _, err := os.Stat(filepath.Join(dev, p)); err != nil {
			t.Errorf("flashed tree lacks %s: %v", p, err)
		}
	}

	// The shipped config as the agent reads it, its absolute paths into
	// the flashed tree.
	cfg := agent.Defaults()
	if err := config.NewLoader("OUTPOST_AGENT", cfg, flag.NewFlagSet("agent", flag.ContinueOnError)).Load(cfg, filepath.Join(dev, bundle.ConfigPath), nil); err != nil {
		t.Fatal(err)
	}
	mc := cfg.Pipelines[0].Model
	mc.Dir = filepath.Join(dev, mc.Dir)
	if err := cfg.CheckModels(); err != nil {
		t.Fatalf("the agent's check of the shipped config: %v", err)
	}
	model, err := infer.LoadSlot(*mc, infer.Active, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("the pipeline's model: %v", err)
	}
	defer model.Close()
	if model.Manifest.Name != "health" {
		t.Fatalf("loaded %s", model.Manifest.Name)
	}
}

// standIn writes an arm64 program at path: the release's agent, of which
// the build checks only the ELF machine. Built without cgo, it needs no
// cross compiler.
func standIn(t *testing.T, path string) {
	t.Helper()
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "go.mod"), []byte("module standin\n\ngo 1.26\n"), 0o644)
	os.WriteFile(filepath.Join(src, "main.go"), []byte("package main\n\nfunc main() {}\n"), 0o644)
	cmd := exec.Command("go", "build", "-o", path, ".")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=arm64", "GOWORK=off", "GOFLAGS=")
	run(t, cmd)
}

// writeHealthModel packages a logistic model "health" over vibration.max
// and current.mean, its golden vector from the pure-Go engine.
func writeHealthModel(t *testing.T, dir string) {
	t.Helper()
	model, err := onnx.Logistic([][]float32{{8, 0}}, []float32{0})
	if err != nil {
		t.Fatal(err)
	}
	eng, err := goengine.Load(model)
	if err != nil {
		t.Fatal(err)
	}
	in := []float32{0.5, 0.1}
	out, err := eng.Run(in, len(in))
	if err != nil {
		t.Fatal(err)
	}
	if err := manifest.Write(dir, &manifest.Manifest{Name: "health", Version: 1, Task: "anomaly", Outputs: manifest.Outputs{Threshold: 0.5},
		Features: []manifest.Feature{{Field: "vibration", Agg: "max", Std: 1}, {Field: "current", Agg: "mean", Std: 1}},
		Golden:   []manifest.Golden{{Input: in, Output: out, Tolerance: 1e-5}}}, model); err != nil {
		t.Fatal(err)
	}
}
