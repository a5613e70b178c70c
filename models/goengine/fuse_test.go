package goengine

import (
	"testing"

	"github.com/outpost-edge/outpost/models/onnx"
	"github.com/outpost-edge/outpost/quant"
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

// TestDynamicProductsRunFolded: on a dynamic int8 MLP as quant writes it,
// each MatMulInteger runs on the packed kernel with its Cast, rescaling Mul
// and bias Add folded in, and no Identity is left to run; only the scales'
// Mul (one a layer) and the Relus stay beside them. (The quant package's
// TestPureGoEngineRunsInt8Products holds the outputs to ONNX Runtime's.)
func TestDynamicProductsRunFolded(t *testing.T) {
	layer := func(in, out int) onnx.Dense {
		d := onnx.Dense{B: make([]float32, out)}
		for o := range out {
			row := make([]float32, in)
			for i := range row {
				row[i] = float32((o*7+i*3)%11-5) / 10
			}
			d.W = append(d.W, row)
			d.B[o] = float32(o%3) / 10
		}
		return d
	}
	model, err := onnx.MLP([]onnx.Dense{layer(6, 16), layer(16, 4)}, onnx.MLPOptions{Hidden: onnx.Relu, Output: onnx.Softmax})
	if err != nil {
		t.Fatal(err)
	}
	q, err := quant.Quantize(model, quant.Options{Mode: quant.Dynamic})
	if err != nil {
		t.Fatal(err)
	}
	e, err := Load(q)
	if err != nil {
		t.Fatal(err)
	}
	ops := map[string]int{}
	for _, n := range e.nodes {
		ops[n.op]++
		if n.op == "MatMulInteger" && (n.qi == nil || n.qi.scale == "" || n.qi.fbias == nil) {
			t.Errorf("MatMulInteger %s runs unfolded", n.out[0])
		}
	}
	if ops["MatMulInteger"] != 2 || ops["Cast"]+ops["Add"]+ops["Identity"] != 0 || ops["Mul"] != 2 {
		t.Errorf("nodes run: %v, want 2 MatMulInteger, 2 Mul (the scales) and no Cast, Add or Identity", ops)
	}
	out, err := e.Run([]float32{1, -2, 3, 0.5, 0, -1}, 6)
	if err != nil || len(out) != 4 {
		t.Fatalf("run: %v, %v", out, err)
	}
}
