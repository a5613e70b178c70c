package build

import (
	"context"
	"crypto/ed25519"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/outpost-edge/outpost/firmware/bundle"
	"github.com/outpost-edge/outpost/models/goengine"
	"github.com/outpost-edge/outpost/models/manifest"
	"github.com/outpost-edge/outpost/models/onnx"
	"github.com/outpost-edge/outpost/test/testenv"
)

// writeModel packages a logistic model called name over vibration.max and
// current.mean (the demo's health model), in dir.
func writeModel(t *testing.T, dir, name string) {
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
	m := &manifest.Manifest{Name: name, Version: 1, Task: "anomaly", Outputs: manifest.Outputs{Threshold: 0.5},
		Features: []manifest.Feature{{Field: "vibration", Agg: "max", Std: 1}, {Field: "current", Agg: "mean", Std: 1}},
		Golden:   []manifest.Golden{{Input: in, Output: out, Tolerance: 1e-5}}}
	if err := manifest.Write(dir, m, model); err != nil {
		t.Fatal(err)
	}
}

// spec is an armv7 build (no ONNX Runtime to find) of a default config
// whose one pipeline aggregates aggs of vibration and current and runs
// the model in modelDir.
func spec(t *testing.T, modelDir string, aggs string, models ...string) Spec {
	t.Helper()
	dir := t.TempDir()
	pipelines := filepath.Join(dir, "pipelines.yaml")
	yaml := "- name: machine\n  source: {type: stdin}\n  decode: {key_field: k, fields: [vibration, current]}\n" +
		"  window: {kind: count, count: 10}\n  aggregations: [" + aggs + "]\n  model: {dir: " + modelDir + ", engine: go}\n"
	if err := os.WriteFile(pipelines, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(dir, "root.json")
	os.WriteFile(root, []byte("{}"), 0o644)
	_, key, _ := ed25519.GenerateKey(nil)
	return Spec{Arch: "armv7", Version: "test", HubURL: "https://hub:8080", MQTTURL: "ssl://hub:8883", TrustedRoot: root,
		Pipelines: pipelines, Models: models, Key: key, Out: filepath.Join(dir, "out", "device.bundle")}
}

// TestBuildChecksTheModelsItShips: the bundle's config must name models
// the bundle installs, under their manifests' names, and each pipeline
// must compute what its model reads; else nothing is written, and the
// error names the field.
func TestBuildChecksTheModelsItShips(t *testing.T) {
	pkgs := t.TempDir()
	export := filepath.Join(pkgs, "health-export-7") // the directory's name is not the model's
	writeModel(t, export, "health")
	other := filepath.Join(pkgs, "copy")
	writeModel(t, other, "health")
	for _, tt := range []struct {
		name string
		s    Spec
		want string
	}{
		{"no such model", spec(t, "/var/lib/outpost/models/health", "max, mean"),
			"the default config: pipelines[0].model.dir: /var/lib/outpost/models/health is no model this bundle installs (it installs none"},
		{"by its directory's name", spec(t, "/var/lib/outpost/models/health-export-7", "max, mean", export),
			"pipelines[0].model.dir: /var/lib/outpost/models/health-export-7 is no model this bundle installs (it installs /var/lib/outpost/models/health)"},
		{"an aggregation missing", spec(t, "/var/lib/outpost/models/health", "mean", export),
			"pipelines[0].model: model health needs vibration.max, which the pipeline does not aggregate"},
		{"two of a name", spec(t, "/var/lib/outpost/models/health", "max, mean", export, other),
			`models ` + export + ` and ` + other + ` are both named "health"`},
	} {
		_, err := Build(context.Background(), tt.s)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want %q", tt.name, err, tt.want)
		}
		if _, err := os.Stat(filepath.Dir(tt.s.Out)); !os.IsNotExist(err) {
			t.Errorf("%s: a refused build wrote into %s", tt.name, filepath.Dir(tt.s.Out))
		}
	}
}

// TestModelInstalledUnderItsManifestName: --model DIR lands in
// models/<manifest name>/, where the pipeline names it.
func TestModelInstalledUnderItsManifestName(t *testing.T) {
	arch, ok := map[string]string{"amd64": "amd64", "arm64": "arm64"}[runtime.GOARCH]
	if !ok {
		t.Fatalf("no bundle architecture with ONNX Runtime for %s", runtime.GOARCH)
	}
	export := filepath.Join(t.TempDir(), "health-export-7")
	writeModel(t, export, "health")
	s := spec(t, "/var/lib/outpost/models/health", "max, mean", export)
	// This test binary stands in for the agent: Build checks only its
	// ELF machine.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	s.Arch, s.Agent, s.ORTDir = arch, self, filepath.Dir(testenv.ORTLibrary(t))
	m, err := Build(context.Background(), s)
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, f := range m.Files {
		paths = append(paths, f.Path)
	}
	for _, want := range []string{bundle.ModelsDir + "/health/manifest.json", bundle.ModelsDir + "/health/model.onnx"} {
		if !slices.Contains(paths, want) {
			t.Errorf("bundle lacks %s: %v", want, paths)
		}
	}
}

// TestBuildFromDist: --dist takes the agent make dist wrote for the
// architecture; a release without one is named, with the path, and one
// for another machine is refused.
func TestBuildFromDist(t *testing.T) {
	dist := t.TempDir()
	s := spec(t, "/var/lib/outpost/models/health", "max, mean")
	s.Pipelines, s.Dist = "", dist
	want := filepath.Join(dist, "linux-armv7", "outpost-agent")
	if _, err := Build(context.Background(), s); err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "make dist") {
		t.Fatalf("no agent in the release: %v", err)
	}
	// This test binary, for this machine, is no armv7 agent.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Dir(want), 0o755)
	if err := os.Symlink(self, want); err != nil {
		t.Fatal(err)
	}
	if _, err := Build(context.Background(), s); err == nil || !strings.Contains(err.Error(), "not armv7") {
		t.Fatalf("an agent for another machine: %v", err)
	}
	s.Agent = self
	if _, err := Build(context.Background(), s); err == nil || !strings.Contains(err.Error(), "give one") {
		t.Fatalf("--agent and --dist together: %v", err)
	}
}
