package conformance

import (
	"encoding/binary"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/outpost-edge/outpost/models/goengine"
	"github.com/outpost-edge/outpost/models/onnx"
	"github.com/outpost-edge/outpost/models/onnx/onnxpb"
	"github.com/outpost-edge/outpost/models/ort"
)

// int32Init adds an int32 initializer: QLinearConv's bias, as quantizers
// write it (scale x_scale·w_scale, zero point 0).
func int32Init(t *testing.T, model []byte, name string, values []int32, dims ...int64) []byte {
	t.Helper()
	var m onnxpb.ModelProto
	if err := proto.Unmarshal(model, &m); err != nil {
		t.Fatal(err)
	}
	raw := make([]byte, 4*len(values))
	for i, v := range values {
		binary.LittleEndian.PutUint32(raw[4*i:], uint32(v))
	}
	m.Graph.Initializer = append(m.Graph.Initializer, &onnxpb.TensorProto{Name: proto.String(name),
		DataType: proto.Int32(int32(onnxpb.TensorProto_INT32)), Dims: dims, RawData: raw})
	out, err := proto.Marshal(&m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// qbytes is a quantized initializer's values and type.
type qbytes struct {
	dt     onnxpb.TensorProto_DataType
	values []int
	dims   []int64
}

// ranged draws n integers in [lo, hi].
func ranged(rng *rand.Rand, n, lo, hi int) []int {
	v := make([]int, n)
	for i := range v {
		v[i] = lo + rng.IntN(hi-lo+1)
	}
	return v
}

// TestQuantizedConvAgreesWithONNXRuntime: what onnxruntime.quantization
// writes for CNNs, QLinearConv (QOperator, between QuantizeLinear and
// DequantizeLinear) and ConvInteger (dynamic: DynamicQuantizeLinear,
// ConvInteger, Cast, the scales' Mul), 1-D and 2-D, with pads, strides,
// dilations, groups and auto_pad, uint8 and int8, per-tensor and
// per-output-channel weight scales, with and without an int32 bias, give
// what ONNX Runtime gives: the same quantized values.
//
// Int8 weights are 7-bit ([-63, 63]), as quantizers write them for x86:
// ONNX Runtime's u8×s8 kernels add pairs of products in int16 and
// saturate with full 8-bit weights, where the spec (and this engine) sums
// exactly in int32 (with weights in [-128, 127] the per-channel case
// below differs from ONNX Runtime 1.24 on x86). Uint8 weights (u8×u8 kernels, exact) use the full
// range.
func TestQuantizedConvAgreesWithONNXRuntime(t *testing.T) {
	engines(t)
	rng := rand.New(rand.NewPCG(13, 13))
	s8, u8 := onnxpb.TensorProto_INT8, onnxpb.TensorProto_UINT8
	qlinear := func(shape []int64, attrs ...A) *onnx.Graph {
		return onnx.NewGraph("qconv").Input("x", "N", int(shape[1]*size64(shape[2:]))).
			Node("Reshape", []string{"x", "s"}, []string{"r"}).
			Node("QuantizeLinear", []string{"r", "xs", "xz"}, []string{"xq"}).
			Node("QLinearConv", []string{"xq", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"}, []string{"yq"}, attrs...).
			Node("DequantizeLinear", []string{"yq", "ys", "yz"}, []string{"d"}).
			Node("Flatten", []string{"d"}, []string{"y"})
	}
	tests := []struct {
		name  string
		g     *onnx.Graph
		shape []int64 // the rows reshaped: [-1, C, (H,) W]
		width int
		bytes map[string]qbytes
		bias  []int32
	}{
		{name: "QLinearConv 1-D u8×s8, bias, pads, strides, dilations",
			g: qlinear([]int64{-1, 2, 10}, A{Name: "kernel_shape", Value: []int64{3}}, A{Name: "pads", Value: []int64{2, 1}},
				A{Name: "strides", Value: []int64{2}}, A{Name: "dilations", Value: []int64{2}}).
				Initializer("xs", []float32{0.01}).Initializer("ws", []float32{0.012}).Initializer("ys", []float32{0.02}),
			shape: []int64{-1, 2, 10}, width: 4 * 5,
			bytes: map[string]qbytes{"xz": {u8, []int{128}, nil}, "w": {s8, ranged(rng, 4*2*3, -63, 63), []int64{4, 2, 3}},
				"wz": {s8, []int{0}, nil}, "yz": {u8, []int{120}, nil}},
			bias: []int32{500, -1200, 0, 3000}},
		{name: "QLinearConv 2-D u8×s8 per-channel scales, groups, pads, strides",
			g: qlinear([]int64{-1, 4, 5, 5}, A{Name: "group", Value: int64(2)}, A{Name: "pads", Value: []int64{1, 1, 1, 1}},
				A{Name: "strides", Value: []int64{2, 2}}).
				Initializer("xs", []float32{0.01}).Initializer("ws", []float32{0.004, 0.01, 0.02, 0.007, 0.013, 0.009}, 6).
				Initializer("ys", []float32{0.03}),
			shape: []int64{-1, 4, 5, 5}, width: 6 * 3 * 3,
			bytes: map[string]qbytes{"xz": {u8, []int{128}, nil}, "w": {s8, ranged(rng, 6*2*3*3, -63, 63), []int64{6, 2, 3, 3}},
				"wz": {s8, []int{0, 0, 0, 0, 0, 0}, []int64{6}}, "yz": {u8, []int{128}, nil}},
			bias: []int32{-4000, 100, 2500, 0, -700, 9000}},
		{name: "QLinearConv 2-D u8×u8 zero points, SAME_UPPER, strides",
			g: qlinear([]int64{-1, 2, 4, 4}, A{Name: "auto_pad", Value: "SAME_UPPER"}, A{Name: "strides", Value: []int64{2, 2}}).
				Initializer("xs", []float32{0.01}).Initializer("ws", []float32{0.004}).Initializer("ys", []float32{0.05}),
			shape: []int64{-1, 2, 4, 4}, width: 3 * 2 * 2,
			bytes: map[string]qbytes{"xz": {u8, []int{128}, nil}, "w": {u8, ranged(rng, 3*2*2*2, 0, 255), []int64{3, 2, 2, 2}},
				"wz": {u8, []int{120}, nil}, "yz": {u8, []int{100}, nil}},
			bias: []int32{0, 250, -250}},
		{name: "QLinearConv 1-D s8×s8 depthwise, s8 out",
			g: qlinear([]int64{-1, 4, 6}, A{Name: "group", Value: int64(4)}, A{Name: "pads", Value: []int64{1, 1}}).
				Initializer("xs", []float32{0.01}).Initializer("ws", []float32{0.02}).Initializer("ys", []float32{0.01}),
			shape: []int64{-1, 4, 6}, width: 4 * 6,
			bytes: map[string]qbytes{"xz": {s8, []int{-3}, nil}, "w": {s8, ranged(rng, 4*1*3, -63, 63), []int64{4, 1, 3}},
				"wz": {s8, []int{0}, nil}, "yz": {s8, []int{5}, nil}},
			bias: []int32{10, -20, 300, 0}},
		{name: "ConvInteger 2-D dynamic, u8 weights with a zero point, pads, dilations",
			g: onnx.NewGraph("ci").Input("x", "N", 3*6*6).
				Initializer("ws", []float32{0.006}).Initializer("bf", []float32{0.5, -0.25, 0, 1}, 4, 1, 1).
				Node("Reshape", []string{"x", "s"}, []string{"r"}).
				Node("DynamicQuantizeLinear", []string{"r"}, []string{"xq", "xs", "xz"}).
				Node("ConvInteger", []string{"xq", "w", "xz", "wz"}, []string{"p"}, A{Name: "pads", Value: []int64{1, 1, 1, 1}},
					A{Name: "dilations", Value: []int64{2, 2}}).
				Node("Cast", []string{"p"}, []string{"pf"}, A{Name: "to", Value: int64(onnxpb.TensorProto_FLOAT)}).
				Node("Mul", []string{"xs", "ws"}, []string{"sc"}).
				Node("Mul", []string{"pf", "sc"}, []string{"m"}).
				Node("Add", []string{"m", "bf"}, []string{"a"}).
				Node("Flatten", []string{"a"}, []string{"y"}),
			shape: []int64{-1, 3, 6, 6}, width: 4 * 4 * 4,
			bytes: map[string]qbytes{"w": {u8, ranged(rng, 4*3*3*3, 0, 255), []int64{4, 3, 3, 3}}, "wz": {u8, []int{110}, nil}}},
		// ONNX Runtime refuses dilations with auto_pad SAME_*.
		{name: "ConvInteger 1-D s8 weights, groups, SAME_LOWER, strides, no zero points",
			g: onnx.NewGraph("ci").Input("x", "N", 2*8).
				Initializer("xs", []float32{0.01}).
				Node("Reshape", []string{"x", "s"}, []string{"r"}).
				Node("QuantizeLinear", []string{"r", "xs", "xz"}, []string{"xq"}).
				Node("ConvInteger", []string{"xq", "w"}, []string{"p"}, A{Name: "group", Value: int64(2)},
					A{Name: "auto_pad", Value: "SAME_LOWER"}, A{Name: "strides", Value: []int64{2}}).
				Node("Cast", []string{"p"}, []string{"pf"}, A{Name: "to", Value: int64(onnxpb.TensorProto_FLOAT)}).
				Node("Flatten", []string{"pf"}, []string{"y"}),
			shape: []int64{-1, 2, 8}, width: 4 * 4,
			bytes: map[string]qbytes{"xz": {u8, []int{128}, nil}, "w": {s8, ranged(rng, 4*1*3, -63, 63), []int64{4, 1, 3}}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			model, err := tc.g.Output("y", "N", tc.width).Model("qconv")
			if err != nil {
				t.Fatal(err)
			}
			model = ints(t, model, map[string][]int64{"s": tc.shape})
			for _, name := range slices.Sorted(maps.Keys(tc.bytes)) {
				b := tc.bytes[name]
				model = bytesInit(t, model, name, b.dt, b.values, b.dims...)
			}
			if tc.bias != nil {
				model = int32Init(t, model, "b", tc.bias, int64(len(tc.bias)))
			}
			ref, err := ort.NewSession(model)
			if err != nil {
				t.Fatal(err)
			}
			defer ref.Close()
			eng, err := goengine.Load(model)
			if err != nil {
				t.Fatal(err)
			}
			features := int(size64(tc.shape[1:]))
			var worst float64
			for _, batch := range []int{1, 3} {
				x := weights(rng, batch*features)
				want, err := ref.Run(x, features)
				if err != nil {
					t.Fatal(err)
				}
				got, err := eng.Run(x, features)
				if err != nil {
					t.Fatalf("batch %d: %v", batch, err)
				}
				if len(got) != len(want) || len(want) != batch*tc.width {
					t.Fatalf("batch %d: %d values, onnxruntime %d, want %d", batch, len(got), len(want), batch*tc.width)
				}
				for i := range want {
					d := math.Abs(float64(got[i] - want[i]))
					if !(d <= tolerance) {
						t.Fatalf("batch %d value %d: go %v, onnxruntime %v\ngo  %v\nort %v", batch, i, got[i], want[i], got, want)
					}
					worst = max(worst, d)
				}
				// A check worth its name: the outputs are not one
				// saturated value.
				if distinct := len(slices.Compact(slices.Sorted(slices.Values(want)))); distinct < len(want)/4 {
					t.Fatalf("batch %d: %d distinct values of %d: the case tests little", batch, distinct, len(want))
				}
			}
			t.Logf("max abs error against onnxruntime %.2g", worst)
		})
	}
}

func size64(d []int64) int64 {
	n := int64(1)
	for _, v := range d {
		n *= v
	}
	return n
}
