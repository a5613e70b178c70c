package quant_test

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/outpost-edge/outpost/models/goengine"
	"github.com/outpost-edge/outpost/models/onnx"
	"github.com/outpost-edge/outpost/quant"
)

// TestDynamicConvsLowered: dynamic int8 of Convs over every geometry
// (1-D and 2-D; strides, dilations, uneven pads, auto_pad, a pointwise
// conv; a grouped conv, which stays ConvInteger; a 3-channel first layer,
// which stays float) agrees with float on ONNX Runtime and on the pure-Go
// engine, and the two engines agree with each other. A wrong window or
// weight order shows as errors of the outputs' own size.
func TestDynamicConvsLowered(t *testing.T) {
	trace(t) // ONNX Runtime, loaded
	rng := rand.New(rand.NewPCG(9, 9))
	w := func(n int, fan int) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(rng.NormFloat64() / math.Sqrt(float64(fan)))
		}
		return v
	}
	type A = onnx.Attr
	cases := []struct {
		name     string
		shape    []int64 // of the input, batch first
		build    func(*onnx.Graph) *onnx.Graph
		integer  int // ConvInteger left in the quantized graph
		lowered  int // Gathers (windows)
		floatCnv int // Convs left float
	}{
		{"2-D strides, dilations, uneven pads, pointwise, SAME_UPPER, groups", []int64{8, 13, 11}, func(g *onnx.Graph) *onnx.Graph {
			return g.Initializer("w0", w(16*8*9, 72), 16, 8, 3, 3).Initializer("b0", w(16, 1), 16).
				Node("Conv", []string{"x", "w0", "b0"}, []string{"c0"}, A{Name: "strides", Value: []int64{2, 1}}, A{Name: "dilations", Value: []int64{1, 2}}, A{Name: "pads", Value: []int64{1, 0, 2, 1}}).
				Node("Relu", []string{"c0"}, []string{"r0"}).
				Initializer("w1", w(16*16, 16), 16, 16, 1, 1).
				Node("Conv", []string{"r0", "w1"}, []string{"c1"}).
				Initializer("w2", w(16*16*9, 144), 16, 16, 3, 3).Initializer("b2", w(16, 1), 16).
				Node("Conv", []string{"c1", "w2", "b2"}, []string{"c2"}, A{Name: "auto_pad", Value: "SAME_UPPER"}, A{Name: "strides", Value: []int64{2, 2}}).
				Initializer("w3", w(8*8*9, 72), 8, 8, 3, 3).
				Node("Conv", []string{"c2", "w3"}, []string{"c3"}, A{Name: "group", Value: int64(2)}, A{Name: "pads", Value: []int64{1, 1, 1, 1}}).
				Node("GlobalAveragePool", []string{"c3"}, []string{"p"}).
				Node("Flatten", []string{"p"}, []string{"f"}).
				Initializer("fw", w(4*8, 8), 4, 8).
				Node("Gemm", []string{"f", "fw"}, []string{"y"}, A{Name: "transB", Value: int64(1)})
		}, 1, 2, 0},
		{"1-D stride 3, dilation 2, pads, MaxPool, 3-channel first layer", []int64{3, 50}, func(g *onnx.Graph) *onnx.Graph {
			return g.Initializer("w0", w(8*3*5, 15), 8, 3, 5).
				Node("Conv", []string{"x", "w0"}, []string{"c0"}, A{Name: "pads", Value: []int64{2, 2}}).
				Node("Relu", []string{"c0"}, []string{"r0"}).
				Initializer("w1", w(12*8*4, 32), 12, 8, 4).Initializer("b1", w(12, 1), 12).
				Node("Conv", []string{"r0", "w1", "b1"}, []string{"c1"}, A{Name: "strides", Value: []int64{3}}, A{Name: "dilations", Value: []int64{2}}, A{Name: "pads", Value: []int64{3, 1}}).
				Node("MaxPool", []string{"c1"}, []string{"m"}, A{Name: "kernel_shape", Value: []int64{2}}, A{Name: "strides", Value: []int64{2}}).
				Initializer("w2", w(12*12*3, 36), 12, 12, 3).
				Node("Conv", []string{"m", "w2"}, []string{"c2"}).
				Node("Flatten", []string{"c2"}, []string{"f"}).
				Initializer("fw", w(5*12*6, 72), 5, 12*6).
				Node("Gemm", []string{"f", "fw"}, []string{"y"}, A{Name: "transB", Value: int64(1)})
		}, 0, 2, 1},
	}
	for _, c := range cases {
		dims := []onnx.Dim{"N"}
		features := int64(1)
		for _, d := range c.shape {
			dims, features = append(dims, onnx.Dim(int(d))), features*d
		}
		model, err := c.build(onnx.NewGraph("convs").Input("x", dims...)).Output("y", "N", onnx.Dim(-1)).Model("test")
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		q, err := quant.Quantize(model, quant.Options{Mode: quant.Dynamic})
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		info, err := onnx.Inspect(q)
		if err != nil {
			t.Fatal(err)
		}
		if info.Ops["ConvInteger"] != c.integer || info.Ops["Gather"] != c.lowered || info.Ops["Conv"] != c.floatCnv {
			t.Errorf("%s: %d ConvInteger, %d Gather, %d Conv; want %d, %d, %d: %v", c.name,
				info.Ops["ConvInteger"], info.Ops["Gather"], info.Ops["Conv"], c.integer, c.lowered, c.floatCnv, info.Ops)
		}
		const rows = 64
		x := flat(samples(rng, rows, int(features)))
		in := onnx.Feed{Name: "x", Shape: append([]int64{rows}, c.shape...), Data: x}
		want := runFeeds(t, model, in)
		got := runFeeds(t, q, in)
		eng, err := goengine.Load(q)
		if err != nil {
			t.Fatalf("%s: pure-Go engine: %v", c.name, err)
		}
		gotGo, err := eng.RunFeeds([]onnx.Feed{in})
		if err != nil {
			t.Fatalf("%s: pure-Go engine: %v", c.name, err)
		}
		var scale, maxErr, goErr float64
		for i := range want {
			scale = max(scale, math.Abs(float64(want[i])))
			maxErr = max(maxErr, math.Abs(float64(want[i]-got[i])))
			goErr = max(goErr, math.Abs(float64(gotGo[i]-got[i])))
		}
		t.Logf("%s: outputs up to %.3f, int8 error %.4f, pure-Go vs ORT %.2g", c.name, scale, maxErr, goErr)
		if maxErr > 0.05*scale {
			t.Errorf("%s: dynamic int8 differs from float by %.4f on outputs up to %.3f", c.name, maxErr, scale)
		}
		if goErr > goTolerance {
			t.Errorf("%s: the pure-Go engine differs from ONNX Runtime by %.3g", c.name, goErr)
		}
	}
}
