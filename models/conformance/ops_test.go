package conformance

import (
	"math"
	"math/rand/v2"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/outpost-edge/outpost/models/goengine"
	"github.com/outpost-edge/outpost/models/onnx"
	"github.com/outpost-edge/outpost/models/onnx/onnxpb"
	"github.com/outpost-edge/outpost/models/ort"
)

// ints adds int64 initializers (shapes, axes, indices) that the builder,
// which writes float weights, does not.
func ints(t *testing.T, model []byte, consts map[string][]int64) []byte {
	t.Helper()
	var m onnxpb.ModelProto
	if err := proto.Unmarshal(model, &m); err != nil {
		t.Fatal(err)
	}
	for name, v := range consts {
		m.Graph.Initializer = append(m.Graph.Initializer, &onnxpb.TensorProto{Name: proto.String(name),
			DataType: proto.Int32(int32(onnxpb.TensorProto_INT64)), Dims: []int64{int64(len(v))}, Int64Data: v})
	}
	out, err := proto.Marshal(&m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

type A = onnx.Attr

// TestOpsAgreeWithONNXRuntime: each standard op the pure-Go engine lists,
// in a small graph over [N, 6] rows, gives what ONNX Runtime gives.
func TestOpsAgreeWithONNXRuntime(t *testing.T) {
	engines(t) // initialises ONNX Runtime
	row := []float32{0.5, -2, 1.5, 3, -0.25, 1}
	tests := []struct {
		name   string
		g      *onnx.Graph
		consts map[string][]int64
		width  int
	}{
		{"Reshape ReduceSum keepdims 0", onnx.NewGraph("g").Input("x", "N", 6).
			Node("Reshape", []string{"x", "s"}, []string{"r"}).
			Node("ReduceSum", []string{"r", "ax"}, []string{"y"}, A{Name: "keepdims", Value: int64(0)}),
			map[string][]int64{"s": {-1, 2, 3}, "ax": {2}}, 2},
		{"Transpose Flatten", onnx.NewGraph("g").Input("x", "N", 6).
			Node("Reshape", []string{"x", "s"}, []string{"r"}).
			Node("Transpose", []string{"r"}, []string{"t"}, A{Name: "perm", Value: []int64{0, 2, 1}}).
			Node("Flatten", []string{"t"}, []string{"y"}),
			map[string][]int64{"s": {0, 2, 3}}, 6},
		{"Unsqueeze Squeeze", onnx.NewGraph("g").Input("x", "N", 6).
			Node("Unsqueeze", []string{"x", "ax"}, []string{"u"}).
			Node("Squeeze", []string{"u", "ax"}, []string{"y"}),
			map[string][]int64{"ax": {1}}, 6},
		{"Concat Abs Neg", onnx.NewGraph("g").Input("x", "N", 6).
			Node("Abs", []string{"x"}, []string{"a"}).Node("Neg", []string{"x"}, []string{"n"}).
			Node("Concat", []string{"a", "x", "n"}, []string{"y"}, A{Name: "axis", Value: int64(1)}),
			nil, 18},
		{"Pad: uneven pads on a 3-D view, a constant value", onnx.NewGraph("g").Input("x", "N", 6).
			Initializer("v", []float32{-7}).
			Node("Reshape", []string{"x", "s"}, []string{"r"}).
			Node("Pad", []string{"r", "p", "v"}, []string{"q"}).
			Node("Flatten", []string{"q"}, []string{"y"}),
			map[string][]int64{"s": {-1, 2, 3}, "p": {0, 1, 2, 0, 2, 1}}, 5 * 6},
		{"Pad: negative pads crop", onnx.NewGraph("g").Input("x", "N", 6).
			Node("Reshape", []string{"x", "s"}, []string{"r"}).
			Node("Pad", []string{"r", "p"}, []string{"q"}).
			Node("Flatten", []string{"q"}, []string{"y"}),
			map[string][]int64{"s": {-1, 2, 3}, "p": {0, -1, 1, 0, 0, -2}}, 2},
		{"Gather", onnx.NewGraph("g").Input("x", "N", 6).
			Node("Gather", []string{"x", "i"}, []string{"y"}, A{Name: "axis", Value: int64(1)}),
			map[string][]int64{"i": {4, 0, -1}}, 3},
		{"ReduceMean ReduceMax ReduceMin", onnx.NewGraph("g").Input("x", "N", 6).
			Node("ReduceMean", []string{"x"}, []string{"a"}, A{Name: "axes", Value: []int64{1}}).
			Node("ReduceMax", []string{"x"}, []string{"b"}, A{Name: "axes", Value: []int64{-1}}).
			Node("ReduceMin", []string{"x"}, []string{"c"}, A{Name: "axes", Value: []int64{1}}).
			Node("Concat", []string{"a", "b", "c"}, []string{"y"}, A{Name: "axis", Value: int64(1)}),
			nil, 3},
		{"ArgMax Cast", onnx.NewGraph("g").Input("x", "N", 6).
			Node("ArgMax", []string{"x"}, []string{"a"}, A{Name: "axis", Value: int64(1)}).
			Node("Cast", []string{"a"}, []string{"y"}, A{Name: "to", Value: int64(onnxpb.TensorProto_FLOAT)}),
			nil, 1},
		{"Softmax LogSoftmax on an inner axis", onnx.NewGraph("g").Input("x", "N", 6).
			Node("Reshape", []string{"x", "s"}, []string{"r"}).
			Node("Softmax", []string{"r"}, []string{"a"}, A{Name: "axis", Value: int64(1)}).
			Node("LogSoftmax", []string{"r"}, []string{"b"}).
			Node("Concat", []string{"a", "b"}, []string{"c"}, A{Name: "axis", Value: int64(2)}).
			Node("Flatten", []string{"c"}, []string{"y"}),
			map[string][]int64{"s": {-1, 2, 3}}, 12},
		{"Div Pow Sqrt Log Exp", onnx.NewGraph("g").Input("x", "N", 6).
			Initializer("d", []float32{2, 4, 0.5, 1, 8, 3}, 6).Initializer("p", []float32{2}, 1).Initializer("one", []float32{1}).
			Node("Div", []string{"x", "d"}, []string{"a"}).
			Node("Pow", []string{"a", "p"}, []string{"b"}).
			Node("Sqrt", []string{"b"}, []string{"c"}).
			Node("Add", []string{"c", "one"}, []string{"e"}).
			Node("Log", []string{"e"}, []string{"f"}).
			Node("Exp", []string{"f"}, []string{"y"}),
			nil, 6},
		{"Clip LeakyRelu Max Min", onnx.NewGraph("g").Input("x", "N", 6).
			Initializer("lo", []float32{-1}).Initializer("hi", []float32{2}).Initializer("m", []float32{0.25, 0, 0, 1, 0, 0}, 1, 6).
			Node("Clip", []string{"x", "lo", "hi"}, []string{"a"}).
			Node("LeakyRelu", []string{"x"}, []string{"b"}, A{Name: "alpha", Value: float32(0.1)}).
			Node("Max", []string{"a", "m"}, []string{"c"}).
			Node("Min", []string{"b", "m"}, []string{"d"}).
			Node("Concat", []string{"c", "d"}, []string{"y"}, A{Name: "axis", Value: int64(-1)}),
			nil, 12},
		{"batched MatMul, Gemm with transA", onnx.NewGraph("g").Input("x", "N", 6).
			Initializer("w", []float32{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, 3, 4).
			Initializer("wa", []float32{1, -1, 0.5, 2, 0, 1}, 2, 3).Initializer("c", []float32{0.5, -0.5, 1}, 3).
			Node("Reshape", []string{"x", "s"}, []string{"r"}).
			Node("MatMul", []string{"r", "w"}, []string{"m"}).
			Node("Flatten", []string{"m"}, []string{"f"}).
			Node("Gemm", []string{"wa", "wa", "c"}, []string{"g"}, A{Name: "transA", Value: int64(1)}, A{Name: "beta", Value: float32(2)}).
			Node("ReduceSum", []string{"g"}, []string{"gs"}, A{Name: "keepdims", Value: int64(0)}).
			Node("Add", []string{"f", "gs"}, []string{"y"}),
			map[string][]int64{"s": {-1, 2, 3}}, 8},
		{"Shape Gather Div", onnx.NewGraph("g").Input("x", "N", 6).
			Node("Shape", []string{"x"}, []string{"s"}).
			Node("Gather", []string{"s", "i"}, []string{"k"}, A{Name: "axis", Value: int64(0)}).
			Node("Cast", []string{"k"}, []string{"kf"}, A{Name: "to", Value: int64(onnxpb.TensorProto_FLOAT)}).
			Node("Div", []string{"x", "kf"}, []string{"y"}),
			map[string][]int64{"i": {1}}, 6},
	}
	rng := rand.New(rand.NewPCG(7, 7))
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			model, err := tc.g.Output("y", "N", tc.width).Model("ops")
			if err != nil {
				t.Fatal(err)
			}
			model = ints(t, model, tc.consts)
			ref, err := ort.NewSession(model)
			if err != nil {
				t.Fatal(err)
			}
			defer ref.Close()
			got, err := goengine.Load(model)
			if err != nil {
				t.Fatal(err)
			}
			for _, batch := range []int{1, 5} {
				x := append([]float32(nil), row...)
				for len(x) < batch*6 {
					x = append(x, rng.Float32()*6-3)
				}
				want, err := ref.Run(x, 6)
				if err != nil {
					t.Fatal(err)
				}
				out, err := got.Run(x, 6)
				if err != nil {
					t.Fatalf("batch %d: %v", batch, err)
				}
				if len(out) != len(want) {
					t.Fatalf("batch %d: %d values, onnxruntime %d", batch, len(out), len(want))
				}
				for i := range want {
					if d := math.Abs(float64(out[i] - want[i])); !(d <= tolerance*max(1, math.Abs(float64(want[i])))) {
						t.Fatalf("batch %d value %d: go %v, onnxruntime %v", batch, i, out[i], want[i])
					}
				}
			}
		})
	}
}
