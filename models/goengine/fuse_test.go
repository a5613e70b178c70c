package goengine

import (
	"testing"

	"github.com/outpost-edge/outpost/models/onnx"
)

// TestFoldsConstants: a DequantizeLinear of constant weights is computed
// once at load, not per run.
func TestFoldsConstants(t *testing.T) {
	g := onnx.NewGraph("t").Input("x", "N", 2).
		Initializer("W", []float32{1, 2, 3, 4}, 2, 2).
		Node("Identity", []string{"W"}, []string{"W2"}).
		Node("MatMul", []string{"x", "W2"}, []string{"y"}).
		Output("y", "N", 2)
	model, err := g.Model("test")
	if err != nil {
		t.Fatal(err)
	}
	e, err := Load(model)
	if err != nil {
		t.Fatal(err)
	}
	if len(e.nodes) != 1 || e.nodes[0].op != "MatMul" {
		t.Fatalf("nodes after folding: %+v", e.nodes)
	}
	out, err := e.Run([]float32{1, 1}, 2)
	if err != nil || out[0] != 4 || out[1] != 6 {
		t.Fatalf("out %v, %v", out, err)
	}
}
