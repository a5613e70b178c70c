package onnx_test

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/outpost-edge/outpost/models/goengine"
	"github.com/outpost-edge/outpost/models/onnx"
)

// TestLayersReadExporterStacks: skl2onnx's MLPClassifier (Cast, MatMul +
// Add, Relu, Softmax, Identity, and a label branch) reads back as a dense
// stack that predicts what scikit-learn predicted (the reader used to stop
// at "op Cast").
func TestLayersReadExporterStacks(t *testing.T) {
	dir := filepath.Join("..", "testdata", "skl2onnx")
	model, err := os.ReadFile(filepath.Join(dir, "mlp.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	var want struct {
		Features int       `json:"features"`
		Input    []float32 `json:"input"`
		Expected []float64 `json:"expected"`
	}
	raw, err := os.ReadFile(filepath.Join(dir, "mlp.json"))
	if err != nil || json.Unmarshal(raw, &want) != nil {
		t.Fatalf("mlp.json: %v", err)
	}
	layers, o, err := onnx.Layers(model)
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != 2 || o.Hidden != onnx.Relu || o.Output != onnx.Softmax || !o.MatMul {
		t.Fatalf("read %d layers, %+v", len(layers), o)
	}
	rebuilt, err := onnx.MLP(layers, o)
	if err != nil {
		t.Fatal(err)
	}
	e, err := goengine.Load(rebuilt)
	if err != nil {
		t.Fatal(err)
	}
	got, err := e.Run(want.Input, want.Features)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range want.Expected {
		if d := math.Abs(float64(got[i]) - v); d > 1e-5 {
			t.Fatalf("value %d: %v, scikit-learn %v", i, got[i], v)
		}
	}
	// Graphs that are not dense stacks stay refused.
	forest, _ := os.ReadFile(filepath.Join(dir, "random_forest.onnx"))
	if _, _, err := onnx.Layers(forest); err == nil {
		t.Fatal("a tree ensemble read as dense layers")
	}
}
