package goengine

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/outpost-edge/outpost/models/onnx"
	"github.com/outpost-edge/outpost/models/onnx/onnxpb"
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

// TestFloatTracesKeepIdentities: a float model's trace, which static
// calibration reads, still holds an Identity's output after load.
func TestFloatTracesKeepIdentities(t *testing.T) {
	model, err := onnx.NewGraph("t").Input("x", "N", 2).
		Initializer("W", []float32{1, 2, 3, 4}, 2, 2).
		Node("Identity", []string{"x"}, []string{"xi"}).
		Node("MatMul", []string{"xi", "W"}, []string{"y"}).
		Output("y", "N", 2).Model("test")
	if err != nil {
		t.Fatal(err)
	}
	e, err := Load(model)
	if err != nil {
		t.Fatal(err)
	}
	vals, err := e.Trace([]float32{1, 2}, 2)
	if err != nil {
		t.Fatal(err)
	}
	if got := vals["xi"]; len(got) != 2 || got[0] != 1 || got[1] != 2 {
		t.Fatalf("trace of xi: %v (of %d values)", got, len(vals))
	}
}

// TestRescaleFoldKeepsOrder: a MatMulInteger rescaled by the scale of a
// DynamicQuantizeLinear other than the one feeding it (made after it) is
// not folded, and the graph runs in its order.
func TestRescaleFoldKeepsOrder(t *testing.T) {
	g := onnx.NewGraph("t").Input("x", "N", 2).
		Initializer("W", []float32{1, -2, 3, 4}, 2, 2).
		Initializer("ws", []float32{0.5, 0.25}, 2).
		Node("DynamicQuantizeLinear", []string{"x"}, []string{"xq", "xs", "xz"}).
		Node("MatMulInteger", []string{"xq", "W", "xz"}, []string{"m"}).
		Node("Cast", []string{"m"}, []string{"c"}, onnx.Attr{Name: "to", Value: int64(onnxpb.TensorProto_FLOAT)}).
		Node("DynamicQuantizeLinear", []string{"x"}, []string{"xq2", "xs2", "xz2"}).
		Node("Mul", []string{"xs2", "ws"}, []string{"sm"}).
		Node("Mul", []string{"c", "sm"}, []string{"y"}).
		Output("y", "N", 2)
	raw, err := g.Model("test")
	if err != nil {
		t.Fatal(err)
	}
	var m onnxpb.ModelProto
	if err := proto.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	for _, init := range m.GetGraph().GetInitializer() {
		if init.GetName() == "W" { // int8 weights
			var b []byte
			for _, v := range init.GetFloatData() {
				b = append(b, byte(int8(v)))
			}
			init.DataType, init.FloatData, init.RawData = proto.Int32(int32(onnxpb.TensorProto_INT8)), nil, b
		}
	}
	model, err := proto.Marshal(&m)
	if err != nil {
		t.Fatal(err)
	}
	e, err := Load(model)
	if err != nil {
		t.Fatal(err)
	}
	out, err := e.Run([]float32{1, -0.5}, 2)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	// x quantizes to [255, 0] with zero point 85 (scale 1.5/255): sums
	// 170·1 − 85·3 and 170·(−2) − 85·4, rescaled by (1.5/255)·ws.
	s := float32(1.5 / 255)
	want := []float32{float32(170*1-85*3) * (s * 0.5), float32(170*-2-85*4) * (s * 0.25)}
	for i := range want {
		if d := out[i] - want[i]; d > 1e-5 || d < -1e-5 {
			t.Fatalf("out %v, want %v", out, want)
		}
	}
}
