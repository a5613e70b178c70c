package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/outpost-edge/outpost/agent/infer"
	"github.com/outpost-edge/outpost/agent/pipeline"
	"github.com/outpost-edge/outpost/models/manifest"
	"github.com/outpost-edge/outpost/models/onnx"
)

// writeModel packages a logistic model over v.agg. CheckModels reads the
// manifest and checks the file's sha256; it runs no engine, so the golden
// vector need not be real.
func writeModel(t *testing.T, dir, agg string) {
	t.Helper()
	model, err := onnx.Logistic([][]float32{{1}}, []float32{0})
	if err != nil {
		t.Fatal(err)
	}
	m := &manifest.Manifest{Name: "m-" + agg, Version: 1, Task: "anomaly",
		Features: []manifest.Feature{{Field: "v", Agg: agg, Std: 1}},
		Golden:   []manifest.Golden{{Input: []float32{0}, Output: []float32{0.5}, Tolerance: 1e-5}}}
	if err := manifest.Write(dir, m, model); err != nil {
		t.Fatal(err)
	}
}

// TestCheckModelsAcceptsARollbackTarget: in a dir with update slots, a
// package the pipeline cannot run in active is let through when the other
// slot holds one it can: Recover rolls a crash loop back to it, which a
// check that refused the start would prevent. Without a fitting slot the
// error names the package active names.
func TestCheckModelsAcceptsARollbackTarget(t *testing.T) {
	dir := t.TempDir()
	writeModel(t, filepath.Join(dir, "a"), "mean")
	writeModel(t, filepath.Join(dir, "b"), "rms")
	if err := os.Symlink("b", filepath.Join(dir, infer.Active)); err != nil {
		t.Fatal(err)
	}
	c := Defaults()
	p := pipeline.Config{Name: "p", Aggregations: []string{"mean"}, Model: &infer.Config{Dir: dir}}
	p.Decode.Fields = []string{"v"}
	c.Pipelines = []pipeline.Config{p}
	if err := c.CheckModels(); err != nil {
		t.Fatalf("the other slot fits: %v", err)
	}
	if err := os.RemoveAll(filepath.Join(dir, "a")); err != nil {
		t.Fatal(err)
	}
	if err := c.CheckModels(); err == nil || !strings.Contains(err.Error(), "pipelines[0].model: model m-rms needs v.rms") {
		t.Fatalf("no fitting slot: %v", err)
	}
}
