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

// bytesInit adds an int8 or uint8 initializer, as quantizers write them.
func bytesInit(t *testing.T, model []byte, name string, dt onnxpb.TensorProto_DataType, values []int, dims ...int64) []byte {
	t.Helper()
	var m onnxpb.ModelProto
	if err := proto.Unmarshal(model, &m); err != nil {
		t.Fatal(err)
	}
	raw := make([]byte, len(values))
	for i, v := range values {
		raw[i] = byte(v)
	}
	m.Graph.Initializer = append(m.Graph.Initializer, &onnxpb.TensorProto{Name: proto.String(name),
		DataType: proto.Int32(int32(dt)), Dims: dims, RawData: raw})
	out, err := proto.Marshal(&m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestQuantizedOpsAgreeWithONNXRuntime: what onnxruntime.quantization
// writes for a dynamically quantized MatMul (DynamicQuantizeLinear,
// MatMulInteger with int8 weights, Cast, the scales' Mul) and a
// QLinearMatMul between QuantizeLinear and DequantizeLinear give what
// ONNX Runtime gives.
func TestQuantizedOpsAgreeWithONNXRuntime(t *testing.T) {
	engines(t)
	rng := rand.New(rand.NewPCG(12, 12))
	// 7-bit weights, as quantizers write them for x86: ONNX Runtime's
	// u8×s8 kernels saturate pairs of full 8-bit products in int16, where
	// the spec (and this engine) sums exactly.
	w := make([]int, 6*4)
	for i := range w {
		w[i] = rng.IntN(127) - 63
	}
	wu := make([]int, 6*4)
	for i := range wu {
		wu[i] = rng.IntN(256)
	}
	dynamic, err := onnx.NewGraph("dq").Input("x", "N", 6).
		Initializer("ws", []float32{0.013}).Initializer("b", []float32{0.5, -0.25, 0, 1}, 4).
		Node("DynamicQuantizeLinear", []string{"x"}, []string{"xq", "xs", "xz"}).
		Node("MatMulInteger", []string{"xq", "w", "xz"}, []string{"p"}).
		Node("Cast", []string{"p"}, []string{"pf"}, A{Name: "to", Value: int64(onnxpb.TensorProto_FLOAT)}).
		Node("Mul", []string{"xs", "ws"}, []string{"s"}).
		Node("Mul", []string{"pf", "s"}, []string{"m"}).
		Node("Add", []string{"m", "b"}, []string{"y"}).
		Output("y", "N", 4).Model("q")
	if err != nil {
		t.Fatal(err)
	}
	dynamic = bytesInit(t, dynamic, "w", onnxpb.TensorProto_INT8, w, 6, 4)
	qlinear, err := onnx.NewGraph("ql").Input("x", "N", 6).
		Initializer("xs", []float32{0.02}).Initializer("ws", []float32{0.01}).Initializer("ys", []float32{0.05}).
		Node("QuantizeLinear", []string{"x", "xs", "xz"}, []string{"xq"}).
		Node("QLinearMatMul", []string{"xq", "xs", "xz", "w", "ws", "wz", "ys", "yz"}, []string{"yq"}).
		Node("DequantizeLinear", []string{"yq", "ys", "yz"}, []string{"y"}).
		Output("y", "N", 4).Model("q")
	if err != nil {
		t.Fatal(err)
	}
	for _, z := range []struct {
		name string
		v    int
	}{{"xz", 128}, {"wz", 120}, {"yz", 100}} {
		qlinear = bytesInit(t, qlinear, z.name, onnxpb.TensorProto_UINT8, []int{z.v})
	}
	qlinear = bytesInit(t, qlinear, "w", onnxpb.TensorProto_UINT8, wu, 6, 4)
	for name, model := range map[string][]byte{"dynamic MatMulInteger": dynamic, "QLinearMatMul": qlinear} {
		t.Run(name, func(t *testing.T) {
			ref, err := ort.NewSession(model)
			if err != nil {
				t.Fatal(err)
			}
			defer ref.Close()
			eng, err := goengine.Load(model)
			if err != nil {
				t.Fatal(err)
			}
			for _, batch := range []int{1, 7} {
				x := weights(rng, batch*6)
				want, err := ref.Run(x, 6)
				if err != nil {
					t.Fatal(err)
				}
				got, err := eng.Run(x, 6)
				if err != nil {
					t.Fatal(err)
				}
				for i := range want {
					if d := math.Abs(float64(got[i] - want[i])); !(d <= tolerance) {
						t.Fatalf("batch %d value %d: go %v, onnxruntime %v\ngo  %v\nort %v", batch, i, got[i], want[i], got, want)
					}
				}
			}
		})
	}
}
