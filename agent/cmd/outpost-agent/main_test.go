package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/outpost-edge/outpost/deploy/daemon"
	"github.com/outpost-edge/outpost/models/goengine"
	"github.com/outpost-edge/outpost/models/manifest"
	"github.com/outpost-edge/outpost/models/onnx"
)

// writeModel packages a logistic model named name over v's aggregations
// aggs, with a golden vector from the pure-Go engine.
func writeModel(t *testing.T, dir, name string, aggs ...string) {
	t.Helper()
	w := make([]float32, len(aggs))
	m := &manifest.Manifest{Name: name, Version: 1, Task: "anomaly", Outputs: manifest.Outputs{Threshold: 0.5}}
	for i, a := range aggs {
		w[i] = 1
		m.Features = append(m.Features, manifest.Feature{Field: "v", Agg: a, Std: 1})
	}
	model, err := onnx.Logistic([][]float32{w}, []float32{0})
	if err != nil {
		t.Fatal(err)
	}
	eng, err := goengine.Load(model)
	if err != nil {
		t.Fatal(err)
	}
	in := make([]float32, len(aggs))
	out, err := eng.Run(in, len(in))
	if err != nil {
		t.Fatal(err)
	}
	m.Golden = []manifest.Golden{{Input: in, Output: out, Tolerance: 1e-5}}
	if err := manifest.Write(dir, m, model); err != nil {
		t.Fatal(err)
	}
}

// agentConfig is a config whose second pipeline runs the model in
// modelDir; the first has none, so the path names the right one.
func agentConfig(t *testing.T, dir, modelDir string) string {
	t.Helper()
	pipe := func(name, model string) string {
		return "  - name: " + name + "\n    source: {type: stdin}\n    decode: {key_field: k, fields: [v]}\n" +
			"    window: {kind: count, count: 10}\n    aggregations: [mean, max]\n" + model
	}
	cfg := "device: {id: dev-1}\ndata_dir: " + filepath.Join(dir, "data") + "\nmetrics: {listen: \"\"}\npipelines:\n" +
		pipe("plain", "") + pipe("scored", "    model: {dir: "+modelDir+", engine: go}\n")
	f := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(f, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

// TestCheckConfigChecksModelPackages: --check-config and a start both
// refuse a pipeline whose model dir holds no package, or a model that
// reads an aggregation the pipeline does not compute, naming the field;
// a start refuses before Run, so before enrolment spends a token.
func TestCheckConfigChecksModelPackages(t *testing.T) {
	dir := t.TempDir()
	models := filepath.Join(dir, "models")
	writeModel(t, filepath.Join(models, "fits"), "overheat", "mean", "max")
	writeModel(t, filepath.Join(models, "rms"), "pump-cnn", "mean", "rms")
	for _, tt := range []struct {
		name, modelDir string
		args           []string
		code           int
		want           string
	}{
		{"fits", filepath.Join(models, "fits"), []string{"--check-config"}, daemon.ExitOK, "configuration OK"},
		{"missing", filepath.Join(models, "health"), []string{"--check-config"}, daemon.ExitConfig,
			"pipelines[1].model.dir: no model package in " + filepath.Join(models, "health") + ": manifest: open "},
		{"missing at start", filepath.Join(models, "health"), nil, daemon.ExitConfig, "pipelines[1].model.dir: no model package"},
		{"needs an aggregation", filepath.Join(models, "rms"), []string{"--check-config"}, daemon.ExitConfig,
			"pipelines[1].model: model pump-cnn needs v.rms, which the pipeline does not aggregate"},
	} {
		var out, errb bytes.Buffer
		args := append([]string{"--config", agentConfig(t, dir, tt.modelDir)}, tt.args...)
		code := daemon.Main(spec, args, nil, &out, &errb)
		if code != tt.code || !strings.Contains(out.String()+errb.String(), tt.want) {
			t.Errorf("%s: exit %d, want %d with %q\nstdout %s\nstderr %s", tt.name, code, tt.code, tt.want, out.String(), errb.String())
		}
	}
	// Run makes the data dir first: the refused start never reached it.
	if _, err := os.Stat(filepath.Join(dir, "data")); !os.IsNotExist(err) {
		t.Errorf("a refused start ran the agent: data dir %v", err)
	}
}
