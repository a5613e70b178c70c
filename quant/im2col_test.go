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
		products int // on the pure-Go engine's int8 kernel: lowered Convs and the Gemm
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
		}, 1, 2, 0, 4},
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
		}, 0, 2, 1, 3},
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
		if left := quant.FloatOps(q); len(left) != c.floatCnv || (c.floatCnv > 0 && left[0] != "Conv c0 (3 input channels: int8 would be slower; --all-convs quantizes it)") {
			t.Errorf("%s: FloatOps %q", c.name, left)
		}
		if c.floatCnv > 0 { // AllConvs quantizes the narrow one too
			all, err := quant.Quantize(model, quant.Options{Mode: quant.Dynamic, AllConvs: true})
			if err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
			ai, err := onnx.Inspect(all)
			if err != nil {
				t.Fatal(err)
			}
			if ai.Ops["Conv"] != 0 || ai.Ops["Gather"] != c.lowered+c.floatCnv || len(quant.FloatOps(all)) != 0 {
				t.Errorf("%s: with AllConvs %d Conv and %d Gather left, float ops %v", c.name, ai.Ops["Conv"], ai.Ops["Gather"], quant.FloatOps(all))
			}
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
		if eng.Int8Layers() != c.products {
			t.Errorf("%s: the pure-Go engine runs %d products on its int8 kernel, want %d", c.name, eng.Int8Layers(), c.products)
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

// TestGemmWithoutTransB: a Gemm whose weights are [in, out] (transB 0,
// as hand-written and some exported graphs have it) is quantized both
// ways, runs on ONNX Runtime's integer kernels, and agrees with float;
// nothing is left float, so the report names nothing.
func TestGemmWithoutTransB(t *testing.T) {
	tr := trace(t)
	rng := rand.New(rand.NewPCG(3, 4))
	w := func(n, fan int) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(rng.NormFloat64() / math.Sqrt(float64(fan)))
		}
		return v
	}
	model, err := onnx.NewGraph("gemm").Input("x", "N", 16).
		Initializer("w0", w(16*64, 16), 16, 64).Initializer("b0", w(64, 1), 64).
		Node("Gemm", []string{"x", "w0", "b0"}, []string{"h"}).
		Node("Relu", []string{"h"}, []string{"r"}).
		Initializer("w1", w(64*8, 64), 64, 8).Initializer("b1", w(8, 1), 8).
		Node("Gemm", []string{"r", "w1", "b1"}, []string{"y"}, onnx.Attr{Name: "transB", Value: int64(0)}).
		Output("y", "N", 8).Model("test")
	if err != nil {
		t.Fatal(err)
	}
	f := family{"gemm_no_transb", model, 16}
	calib, held := samples(rng, 128, 16), samples(rng, 256, 16)
	info, err := onnx.Inspect(model)
	if err != nil {
		t.Fatal(err)
	}
	float := runFeeds(t, model, feed(info, flat(held), 16))
	for _, mode := range []string{quant.Static, quant.Dynamic} {
		q, err := quant.Quantize(model, quant.Options{Mode: mode, Samples: calib, Tracer: feedTracer(f)(tr)})
		if err != nil {
			t.Fatalf("%s: %v", mode, err)
		}
		checkFused(t, f, mode, q, 0)
		if left := quant.FloatOps(q); len(left) != 0 {
			t.Errorf("%s: float ops left: %v", mode, left)
		}
		got := runFeeds(t, q, feed(info, flat(held), 16))
		eng, err := goengine.Load(q)
		if err != nil {
			t.Fatalf("%s: pure-Go engine: %v", mode, err)
		}
		if eng.Int8Layers() != 2 {
			t.Errorf("%s: the pure-Go engine runs %d layers in int8, want 2", mode, eng.Int8Layers())
		}
		gotGo, err := eng.Run(flat(held), 16)
		if err != nil {
			t.Fatalf("%s: pure-Go engine: %v", mode, err)
		}
		// One output landing on the other side of a rounding tie differs
		// by one step of the output's quantization, a few in all.
		lo, hi := float[0], float[0]
		for _, v := range float {
			lo, hi = min(lo, v), max(hi, v)
		}
		tol, off := max(goTolerance, 1.01*float64(hi-lo)/255), 0
		for i := range got {
			d := math.Abs(float64(got[i] - gotGo[i]))
			if d > 1e-4 {
				off++
			}
			if d > tol {
				t.Fatalf("%s: the pure-Go engine differs from ONNX Runtime by %.3g (one output step %.3g)", mode, d, tol)
			}
		}
		t.Logf("%s: %d of %d outputs differ between the engines by up to one step", mode, off, len(got))
		if off > len(got)/100 {
			t.Errorf("%s: %d of %d outputs differ between the engines", mode, off, len(got))
		}
		agree := 0
		for i := range held {
			if argmax(got[i*8:(i+1)*8]) == argmax(float[i*8:(i+1)*8]) {
				agree++
			}
		}
		if agree < len(held)*9/10 {
			t.Errorf("%s: agrees with float on %d of %d rows", mode, agree, len(held))
		}
	}
	if left := quant.FloatOps(model); len(left) != 2 {
		t.Errorf("the float model's float ops: %v, want both Gemms", left)
	}
}

// TestPureGoEngineRunsInt8Products: on every model family, static and
// dynamic int8, the pure-Go engine runs each quantized Gemm, MatMul and
// Conv on its int8 kernel and gives what ONNX Runtime gives: the same
// decisions, and the same outputs but for at most 1% within one step of
// the output's quantization (a rounding tie landing the other way; after
// a Softmax, one step of a logit moves a probability by up to 0.1). With
// biases added in float, not in the int32 sums as ORT does, the MatMul+Add
// MLP differed on 4% of its outputs.
func TestPureGoEngineRunsInt8Products(t *testing.T) {
	tr := trace(t)
	for _, f := range families(t) {
		before := ops(t, f.model)
		rng := rand.New(rand.NewPCG(8, 1))
		calib, held := samples(rng, 64, f.features), samples(rng, 64, f.features)
		info, err := onnx.Inspect(f.model)
		if err != nil {
			t.Fatal(err)
		}
		in := feed(info, flat(held), f.features)
		float := runFeeds(t, f.model, in)
		lo, hi := float[0], float[0]
		for _, v := range float {
			lo, hi = min(lo, v), max(hi, v)
		}
		for _, mode := range []string{quant.Static, quant.Dynamic} {
			q, err := quant.Quantize(f.model, quant.Options{Mode: mode, Samples: calib, Tracer: feedTracer(f)(tr)})
			if err != nil {
				t.Fatalf("%s %s: %v", f.name, mode, err)
			}
			eng, err := goengine.Load(q)
			if err != nil {
				t.Fatalf("%s %s: %v", f.name, mode, err)
			}
			want := before["Gemm"] + before["MatMul"] + before["Conv"] - floatConvs(f.name, mode)
			if eng.Int8Layers() != want {
				t.Errorf("%s %s: the pure-Go engine runs %d products on its int8 kernel, want %d", f.name, mode, eng.Int8Layers(), want)
			}
			got := runFeeds(t, q, in)
			gotGo, err := eng.RunFeeds([]onnx.Feed{in})
			if err != nil {
				t.Fatalf("%s %s: %v", f.name, mode, err)
			}
			tol, off, worst := max(goTolerance, 1.01*float64(hi-lo)/255), 0, 0.0
			if before["Softmax"] > 0 {
				tol = 0.1
			}
			for i := range got {
				d := math.Abs(float64(got[i] - gotGo[i]))
				worst = max(worst, d)
				if d > 1e-4 {
					off++
				}
			}
			width, same := len(got)/len(held), 0
			for i := range held {
				if quant.Decide(got[i*width:(i+1)*width], 0.5) == quant.Decide(gotGo[i*width:(i+1)*width], 0.5) {
					same++
				}
			}
			t.Logf("%s %s: %d of %d outputs differ, by up to %.3g (bound %.3g); %d of %d decisions the same", f.name, mode, off, len(got), worst, tol, same, len(held))
			if worst > tol || off > max(2, len(got)/100) || same < len(held)*97/100 {
				t.Errorf("%s %s: the pure-Go engine differs from ONNX Runtime on %d of %d outputs, by up to %.3g, and %d of %d decisions", f.name, mode, off, len(got), worst, len(held)-same, len(held))
			}
		}
	}
}

// TestDepthwiseConvsAreQuantized: a depthwise Conv (one channel per
// group) is not a narrow first layer: both modes quantize it, and the
// report leaves nothing float.
func TestDepthwiseConvsAreQuantized(t *testing.T) {
	tr := trace(t)
	rng := rand.New(rand.NewPCG(6, 6))
	w := func(n int) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(rng.NormFloat64() / 3)
		}
		return v
	}
	model, err := onnx.NewGraph("depthwise").Input("x", "N", 16, 8, 8).
		Initializer("w0", w(16*9), 16, 1, 3, 3).
		Node("Conv", []string{"x", "w0"}, []string{"c0"}, onnx.Attr{Name: "group", Value: int64(16)}, onnx.Attr{Name: "pads", Value: []int64{1, 1, 1, 1}}).
		Node("Relu", []string{"c0"}, []string{"r0"}).
		Node("GlobalAveragePool", []string{"r0"}, []string{"p"}).
		Node("Flatten", []string{"p"}, []string{"f"}).
		Initializer("fw", w(4*16), 4, 16).
		Node("Gemm", []string{"f", "fw"}, []string{"y"}, onnx.Attr{Name: "transB", Value: int64(1)}).
		Output("y", "N", 4).Model("test")
	if err != nil {
		t.Fatal(err)
	}
	f := family{"depthwise", model, 16 * 64}
	for _, mode := range []string{quant.Static, quant.Dynamic} {
		q, err := quant.Quantize(model, quant.Options{Mode: mode, Samples: samples(rng, 32, f.features), Tracer: feedTracer(f)(tr)})
		if err != nil {
			t.Fatalf("%s: %v", mode, err)
		}
		if left := quant.FloatOps(q); len(left) != 0 {
			t.Errorf("%s: left float: %v", mode, left)
		}
	}
}
