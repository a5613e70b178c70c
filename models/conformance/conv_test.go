package conformance

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/outpost-edge/outpost/models/goengine"
	"github.com/outpost-edge/outpost/models/onnx"
	"github.com/outpost-edge/outpost/models/ort"
)

func weights(rng *rand.Rand, n int) []float32 {
	w := make([]float32, n)
	for i := range w {
		w[i] = rng.Float32()*2 - 1
	}
	return w
}

// TestConvAndPoolingAgreeWithONNXRuntime: 1-D and 2-D convolutions
// (pads, strides, dilations, groups, auto_pad), pooling (ceil_mode,
// count_include_pad), global pooling and BatchNormalization, in small CNNs
// over rows reshaped to [N, C, L] or [N, C, H, W], give what ONNX Runtime
// gives.
func TestConvAndPoolingAgreeWithONNXRuntime(t *testing.T) {
	engines(t)
	rng := rand.New(rand.NewPCG(11, 11))
	tests := []struct {
		name            string
		g               *onnx.Graph
		consts          map[string][]int64
		features, width int
	}{
		{"Conv1d pads, Relu, MaxPool", onnx.NewGraph("g").Input("x", "N", 12).
			Initializer("w", weights(rng, 4*2*3), 4, 2, 3).Initializer("b", weights(rng, 4), 4).
			Node("Reshape", []string{"x", "s"}, []string{"r"}).
			Node("Conv", []string{"r", "w", "b"}, []string{"c"}, A{Name: "kernel_shape", Value: []int64{3}}, A{Name: "pads", Value: []int64{1, 1}}).
			Node("Relu", []string{"c"}, []string{"a"}).
			Node("MaxPool", []string{"a"}, []string{"p"}, A{Name: "kernel_shape", Value: []int64{2}}, A{Name: "strides", Value: []int64{2}}).
			Node("Flatten", []string{"p"}, []string{"y"}),
			map[string][]int64{"s": {-1, 2, 6}}, 12, 12},
		{"Conv1d groups, dilations, strides", onnx.NewGraph("g").Input("x", "N", 12).
			Initializer("w", weights(rng, 4*1*2), 4, 1, 2).
			Node("Reshape", []string{"x", "s"}, []string{"r"}).
			Node("Conv", []string{"r", "w"}, []string{"c"}, A{Name: "group", Value: int64(2)},
				A{Name: "dilations", Value: []int64{2}}, A{Name: "strides", Value: []int64{2}}).
			Node("Flatten", []string{"c"}, []string{"y"}),
			map[string][]int64{"s": {-1, 2, 6}}, 12, 8},
		{"Conv2d, BatchNormalization, AveragePool, GlobalAveragePool", onnx.NewGraph("g").Input("x", "N", 16).
			Initializer("w", weights(rng, 3*9), 3, 1, 3, 3).Initializer("b", weights(rng, 3), 3).
			Initializer("sc", []float32{1.5, 0.5, -1}, 3).Initializer("bb", []float32{0.1, 0, -0.2}, 3).
			Initializer("mu", []float32{0.2, -0.1, 0}, 3).Initializer("var", []float32{1, 0.25, 2}, 3).
			Node("Reshape", []string{"x", "s"}, []string{"r"}).
			Node("Conv", []string{"r", "w", "b"}, []string{"c"}, A{Name: "pads", Value: []int64{1, 1, 1, 1}}).
			Node("BatchNormalization", []string{"c", "sc", "bb", "mu", "var"}, []string{"n"}, A{Name: "epsilon", Value: float32(1e-3)}).
			Node("AveragePool", []string{"n"}, []string{"p"}, A{Name: "kernel_shape", Value: []int64{3, 3}}, A{Name: "pads", Value: []int64{1, 1, 1, 1}}, A{Name: "strides", Value: []int64{2, 2}}).
			Node("Flatten", []string{"p"}, []string{"f"}).
			Node("GlobalAveragePool", []string{"n"}, []string{"gp"}).
			Node("Flatten", []string{"gp"}, []string{"gf"}).
			Node("Concat", []string{"f", "gf"}, []string{"y"}, A{Name: "axis", Value: int64(1)}),
			map[string][]int64{"s": {-1, 1, 4, 4}}, 16, 15},
		{"Conv2d SAME_UPPER strides, two channels in", onnx.NewGraph("g").Input("x", "N", 18).
			Initializer("w", weights(rng, 2*2*2*2), 2, 2, 2, 2).
			Node("Reshape", []string{"x", "s"}, []string{"r"}).
			Node("Conv", []string{"r", "w"}, []string{"c"}, A{Name: "auto_pad", Value: "SAME_UPPER"}, A{Name: "strides", Value: []int64{2, 2}}).
			Node("Flatten", []string{"c"}, []string{"y"}),
			map[string][]int64{"s": {-1, 2, 3, 3}}, 18, 8},
		{"MaxPool ceil_mode, AveragePool count_include_pad, GlobalMaxPool", onnx.NewGraph("g").Input("x", "N", 16).
			Node("Reshape", []string{"x", "s"}, []string{"r"}).
			Node("MaxPool", []string{"r"}, []string{"a"}, A{Name: "kernel_shape", Value: []int64{3, 3}}, A{Name: "strides", Value: []int64{2, 2}}, A{Name: "ceil_mode", Value: int64(1)}).
			Node("AveragePool", []string{"r"}, []string{"b"}, A{Name: "kernel_shape", Value: []int64{2, 2}}, A{Name: "pads", Value: []int64{1, 1, 1, 1}},
				A{Name: "strides", Value: []int64{2, 2}}, A{Name: "count_include_pad", Value: int64(1)}).
			Node("GlobalMaxPool", []string{"r"}, []string{"c"}).
			Node("Flatten", []string{"a"}, []string{"fa"}).Node("Flatten", []string{"b"}, []string{"fb"}).Node("Flatten", []string{"c"}, []string{"fc"}).
			Node("Concat", []string{"fa", "fb", "fc"}, []string{"y"}, A{Name: "axis", Value: int64(1)}),
			map[string][]int64{"s": {-1, 1, 4, 4}}, 16, 4 + 9 + 1},
		{"AveragePool ceil_mode with count_include_pad", onnx.NewGraph("g").Input("x", "N", 25).
			Node("Reshape", []string{"x", "s"}, []string{"r"}).
			Node("AveragePool", []string{"r"}, []string{"a"}, A{Name: "kernel_shape", Value: []int64{3, 3}}, A{Name: "pads", Value: []int64{1, 1, 0, 0}},
				A{Name: "strides", Value: []int64{2, 2}}, A{Name: "count_include_pad", Value: int64(1)}, A{Name: "ceil_mode", Value: int64(1)}).
			Node("AveragePool", []string{"r"}, []string{"b"}, A{Name: "kernel_shape", Value: []int64{2, 2}}, A{Name: "strides", Value: []int64{2, 2}}, A{Name: "ceil_mode", Value: int64(1)}).
			Node("Flatten", []string{"a"}, []string{"fa"}).Node("Flatten", []string{"b"}, []string{"fb"}).
			Node("Concat", []string{"fa", "fb"}, []string{"y"}, A{Name: "axis", Value: int64(1)}),
			map[string][]int64{"s": {-1, 1, 5, 5}}, 25, 9 + 9},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			model, err := tc.g.Output("y", "N", tc.width).Model("conv")
			if err != nil {
				t.Fatal(err)
			}
			model = ints(t, model, tc.consts)
			ref, err := ort.NewSession(model)
			if err != nil {
				t.Fatal(err)
			}
			defer ref.Close()
			eng, err := goengine.Load(model)
			if err != nil {
				t.Fatal(err)
			}
			for _, batch := range []int{1, 3} {
				x := weights(rng, batch*tc.features)
				want, err := ref.Run(x, tc.features)
				if err != nil {
					t.Fatal(err)
				}
				got, err := eng.Run(x, tc.features)
				if err != nil {
					t.Fatalf("batch %d: %v", batch, err)
				}
				if len(got) != len(want) {
					t.Fatalf("batch %d: %d values, onnxruntime %d", batch, len(got), len(want))
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
