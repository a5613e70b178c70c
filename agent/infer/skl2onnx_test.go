package infer_test

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/outpost-edge/outpost/agent/infer"
	"github.com/outpost-edge/outpost/models/manifest"
	"github.com/outpost-edge/outpost/models/ort"
	"github.com/outpost-edge/outpost/test/testenv"
)

// TestExporterPackagesOnTheAgent: scikit-learn models as skl2onnx exports
// them (models/testdata/skl2onnx: label and probabilities outputs,
// ai.onnx.ml ops), packaged unmodified with their outputs named by role,
// load through the agent's loader and self-test on both engines, and score
// a batch as scikit-learn did.
func TestExporterPackagesOnTheAgent(t *testing.T) {
	if err := ort.Init(testenv.ORTLibrary(t)); err != nil {
		t.Fatal(err)
	}
	root, err := testenv.Root()
	if err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob(filepath.Join(root, "models", "testdata", "skl2onnx", "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no exports: %v", err)
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".json")
		var e struct {
			Features int       `json:"features"`
			Width    int       `json:"width"`
			Input    []float32 `json:"input"`
			Scores   string    `json:"scores"`
			Labels   string    `json:"labels"`
			Expected []float64 `json:"expected"`
		}
		raw, err := os.ReadFile(f)
		if err != nil || json.Unmarshal(raw, &e) != nil {
			t.Fatalf("%s: %v", f, err)
		}
		model, err := os.ReadFile(strings.TrimSuffix(f, ".json") + ".onnx")
		if err != nil {
			t.Fatal(err)
		}
		m := &manifest.Manifest{Name: strings.ReplaceAll(name, "_", "-"), Version: 1, Task: "regression",
			Outputs: manifest.Outputs{Scores: e.Scores, Label: e.Labels}}
		if e.Labels != "" {
			m.Task = "classification"
		}
		for i := range e.Features {
			m.Features = append(m.Features, manifest.Feature{Field: "x", Agg: fmt.Sprintf("p%d", i), Std: 1})
		}
		for r := range 4 {
			g := manifest.Golden{Input: e.Input[r*e.Features : (r+1)*e.Features], Tolerance: 1e-4}
			for _, v := range e.Expected[r*e.Width : (r+1)*e.Width] {
				g.Output = append(g.Output, float32(v))
			}
			m.Golden = append(m.Golden, g)
		}
		dir := t.TempDir()
		if err := manifest.Write(dir, m, model); err != nil {
			t.Fatal(err)
		}
		for _, engine := range []string{"onnxruntime", "go"} {
			t.Run(name+"/"+engine, func(t *testing.T) {
				loaded, err := infer.LoadSlot(infer.Config{Dir: dir, Engine: engine}, infer.Active, slog.New(slog.DiscardHandler))
				if err != nil {
					t.Fatal(err)
				}
				defer loaded.Close()
				out, _, err := loaded.Infer(e.Input)
				if err != nil {
					t.Fatal(err)
				}
				if loaded.Outputs() != e.Width || len(out) != len(e.Expected) {
					t.Fatalf("width %d, %d values; want %d, %d", loaded.Outputs(), len(out), e.Width, len(e.Expected))
				}
				for i, want := range e.Expected {
					if d := math.Abs(float64(out[i]) - want); !(d <= 1e-4) {
						t.Fatalf("value %d = %v, scikit-learn %v", i, out[i], want)
					}
				}
			})
		}
	}
}
