package quant_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/outpost-edge/outpost/models/onnx"
	"github.com/outpost-edge/outpost/models/onnx/onnxpb"
	"github.com/outpost-edge/outpost/models/ort"
	"github.com/outpost-edge/outpost/quant"
)

// family is one model of the benchmark, with rows of its input.
type family struct {
	name     string
	model    []byte
	features int
}

// families: skl2onnx's MLP, a 16-64-128-64-8 MLP in Gemm and in
// MatMul+Add form (as skl2onnx and PyTorch export it), one-layer 1-D and
// 2-D CNNs, and the four-layer sensor CNN and five-layer 96×96 image CNN
// (about 1M parameters) of the tensor-model issue.
func families(tb testing.TB) []family {
	tb.Helper()
	rng := rand.New(rand.NewPCG(16, 8))
	deep := func(matmul bool) []byte {
		var layers []onnx.Dense
		sizes := []int{16, 64, 128, 64, 8}
		for i := 0; i+1 < len(sizes); i++ {
			d := onnx.Dense{B: make([]float32, sizes[i+1])}
			for range sizes[i+1] {
				row := make([]float32, sizes[i])
				for k := range row {
					row[k] = float32(rng.NormFloat64() / 3)
				}
				d.W = append(d.W, row)
			}
			for k := range d.B {
				d.B[k] = float32(rng.NormFloat64() / 10)
			}
			layers = append(layers, d)
		}
		m, err := onnx.MLP(layers, onnx.MLPOptions{Hidden: onnx.Relu, Output: onnx.Softmax, MatMul: matmul})
		if err != nil {
			tb.Fatal(err)
		}
		return m
	}
	c1, err := onnx.CNN1D("wave", 3, 128, 16, 5, 3)
	if err != nil {
		tb.Fatal(err)
	}
	c2, err := onnx.CNN2D("image", 32, 16, 4, 5)
	if err != nil {
		tb.Fatal(err)
	}
	// The tensor-model issue's sensor and image CNNs, the size of models
	// devices run.
	sensor, _, err := onnx.SensorCNN1D(rand.New(rand.NewPCG(3, 200)), false)
	if err != nil {
		tb.Fatal(err)
	}
	image, _, err := onnx.ImageCNN96(rand.New(rand.NewPCG(3, 96)), false)
	if err != nil {
		tb.Fatal(err)
	}
	skl, err := os.ReadFile("../models/testdata/skl2onnx/mlp.onnx")
	if err != nil {
		tb.Fatal(err)
	}
	info, err := onnx.Inspect(skl)
	if err != nil {
		tb.Fatal(err)
	}
	var sklFeatures int
	fmt.Sscan(info.Inputs[0].Shape[1], &sklFeatures)
	return []family{
		{"skl2onnx_mlp", skl, sklFeatures},
		{"mlp_gemm", deep(false), 16},
		{"mlp_matmul_add", deep(true), 16},
		{"cnn1d", c1, 3 * 128},
		{"cnn2d", c2, 3 * 32 * 32},
		{"sensor_cnn1d", sensor, 3 * 200},
		{"image_cnn2d", image, 3 * 96 * 96},
	}
}

// ops counts the op types of a graph ("com.microsoft.QGemm" for another
// domain's).
func ops(tb testing.TB, model []byte) map[string]int {
	tb.Helper()
	var m onnxpb.ModelProto
	if err := proto.Unmarshal(model, &m); err != nil {
		tb.Fatal(err)
	}
	out := map[string]int{}
	for _, n := range m.GetGraph().GetNode() {
		op := n.GetOpType()
		if d := n.GetDomain(); d != "" && d != "ai.onnx" {
			op = d + "." + op
		}
		out[op]++
	}
	return out
}

// outputs counts a graph's outputs.
func outputs(tb testing.TB, model []byte) int {
	tb.Helper()
	var m onnxpb.ModelProto
	if err := proto.Unmarshal(model, &m); err != nil {
		tb.Fatal(err)
	}
	return len(m.GetGraph().GetOutput())
}

func histogram(c map[string]int) string {
	var s []string
	for k, v := range c {
		s = append(s, fmt.Sprintf("%s×%d", k, v))
	}
	sort.Strings(s)
	return strings.Join(s, " ")
}

// TestFusion: ONNX Runtime's optimised graph of each of our int8 models
// has no float Gemm, MatMul or Conv left: each one runs on an integer
// kernel; and a static model's integer path runs unbroken from its input
// to its outputs, through pools, Flatten and a final Gemm.
func TestFusion(t *testing.T) {
	tr := trace(t)
	for _, f := range families(t) {
		for _, mode := range []string{quant.Static, quant.Dynamic} {
			rng := rand.New(rand.NewPCG(1, 2))
			q, err := quant.Quantize(f.model, quant.Options{Mode: mode, Samples: samples(rng, 64, f.features), Tracer: feedTracer(f)(tr)})
			if err != nil {
				t.Fatalf("%s %s: %v", f.name, mode, err)
			}
			checkFused(t, f, mode, q, floatConvs(f.name, mode))
		}
	}
}

// TestSchemesFuseAndAgree: per-tensor weights, symmetric activations and
// each calibration method give models that ONNX Runtime fuses as fully as
// the default, that are built as asked (scalar weight scales; zero
// points of 0), and that agree with float on held-out rows.
func TestSchemesFuseAndAgree(t *testing.T) {
	tr := trace(t)
	schemes := []struct {
		name string
		o    quant.Options
	}{
		{"per-tensor", quant.Options{PerTensor: true}},
		{"per-channel", quant.Options{PerChannel: true}},
		{"symmetric", quant.Options{Symmetric: true}},
		{"entropy", quant.Options{Calibration: quant.Entropy}},
		{"percentile", quant.Options{Calibration: quant.Percentile, Percentile: 99.9}},
		{"mse", quant.Options{Calibration: quant.MSE}},
	}
	for _, f := range families(t) {
		if f.name != "mlp_matmul_add" && f.name != "cnn2d" && f.name != "sensor_cnn1d" {
			continue
		}
		info, err := onnx.Inspect(f.model)
		if err != nil {
			t.Fatal(err)
		}
		rng := rand.New(rand.NewPCG(5, 6))
		calib, held := samples(rng, 128, f.features), samples(rng, 256, f.features)
		float := runFeeds(t, f.model, feed(info, flat(held), f.features))
		for _, sc := range schemes {
			o := sc.o
			// Every Conv, the 3-channel first layers too, so that each
			// scheme is held on convs.
			o.Mode, o.Samples, o.Tracer, o.AllConvs = quant.Static, calib, feedTracer(f)(tr), true
			q, err := quant.Quantize(f.model, o)
			if err != nil {
				t.Fatalf("%s %s: %v", f.name, sc.name, err)
			}
			checkFused(t, f, sc.name, q, 0)
			var m onnxpb.ModelProto
			if err := proto.Unmarshal(q, &m); err != nil {
				t.Fatal(err)
			}
			inits := map[string]*onnxpb.TensorProto{}
			for _, init := range m.GetGraph().GetInitializer() {
				inits[init.GetName()] = init
			}
			centred := 0
			for _, n := range m.GetGraph().GetNode() {
				switch op, in := n.GetOpType(), n.GetInput(); {
				case op == "DequantizeLinear" && inits[in[0]] != nil: // a weight's
					if s := inits[in[1]]; o.PerTensor && len(s.GetDims()) != 0 {
						t.Errorf("%s %s: weight scale %s has dims %v, want a scalar", f.name, sc.name, in[1], s.GetDims())
					}
				case op == "QuantizeLinear" && o.Symmetric: // an activation's
					// 0, or -128 for a tensor never negative (a Relu's)
					switch zp := int8(inits[in[2]].GetRawData()[0]); zp {
					case 0:
						centred++
					case -128:
					default:
						t.Errorf("%s %s: activation zero point %s is %d, want 0 (or -128 after a Relu)", f.name, sc.name, in[2], zp)
					}
				}
			}
			if o.Symmetric && centred == 0 {
				t.Errorf("%s %s: no activation has zero point 0", f.name, sc.name)
			}
			got := runFeeds(t, q, feed(info, flat(held), f.features))
			width, agree := len(float)/len(held), 0
			for i := range held {
				if quant.Decide(got[i*width:(i+1)*width], 0.5) == quant.Decide(float[i*width:(i+1)*width], 0.5) {
					agree++
				}
			}
			t.Logf("%s %s: agreement with float %d/%d", f.name, sc.name, agree, len(held))
			if agree < len(held)*9/10 {
				t.Errorf("%s %s: agrees with float on %d of %d held-out rows", f.name, sc.name, agree, len(held))
			}
		}
	}
}

// runFeeds runs model once on ONNX Runtime.
func runFeeds(tb testing.TB, model []byte, in onnx.Feed) []float32 {
	tb.Helper()
	s, err := ort.NewSessionWith(model, ort.Options{IntraOpThreads: 1})
	if err != nil {
		tb.Fatal(err)
	}
	defer s.Close()
	y, err := s.RunFeeds([]onnx.Feed{in})
	if err != nil {
		tb.Fatal(err)
	}
	return y
}

// checkFused holds ORT's optimised graph of q, a quantized f, to integer
// kernels for every Gemm, MatMul and Conv but floatConvs Convs left float,
// and (static) to an unbroken integer path.
func checkFused(t *testing.T, f family, what string, q []byte, floatConvs int) {
	t.Helper()
	opt, err := ort.Optimized(q, ort.Options{IntraOpThreads: 1})
	if err != nil {
		t.Fatalf("%s %s: %v", f.name, what, err)
	}
	got := ops(t, opt)
	t.Logf("%s %s: %s", f.name, what, histogram(got))
	before := ops(t, f.model)
	want := before["Gemm"] + before["MatMul"] + before["Conv"]
	kernels := []string{"com.microsoft.QGemm", "QLinearMatMul", "com.microsoft.MatMulIntegerToFloat", "com.microsoft.DynamicQuantizeMatMul", "QLinearConv", "com.microsoft.QLinearConv", "ConvInteger", "MatMulInteger"}
	want -= floatConvs
	if what == quant.Dynamic {
		// Every product runs fused (ConvInteger and a bare MatMulInteger
		// run unfused, slower than float).
		kernels = []string{"com.microsoft.DynamicQuantizeMatMul", "com.microsoft.MatMulIntegerToFloat"}
	}
	integer := 0
	for _, k := range kernels {
		integer += got[k]
	}
	if integer != want {
		t.Errorf("%s %s: %d fused integer kernels for %d Gemm, MatMul and Conv: %s", f.name, what, integer, want, histogram(got))
	}
	// Static: one QuantizeLinear at the input and one DequantizeLinear per
	// output at most; any other breaks the integer path (a pool or the
	// last Gemm run in float between).
	if what != quant.Dynamic && (got["QuantizeLinear"] > 1 || got["DequantizeLinear"] > outputs(t, opt)) {
		t.Errorf("%s %s: the integer path is broken: %d QuantizeLinear, %d DequantizeLinear for %d outputs: %s",
			f.name, what, got["QuantizeLinear"], got["DequantizeLinear"], outputs(t, opt), histogram(got))
	}
	convs := 0
	for _, float := range []string{"Gemm", "MatMul", "Conv", "com.microsoft.FusedGemm", "com.microsoft.FusedMatMul", "com.microsoft.FusedConv", "com.microsoft.nchwc.Conv"} {
		if strings.HasSuffix(float, "Conv") {
			convs += got[float]
			continue
		}
		if got[float] > 0 {
			t.Errorf("%s %s: ONNX Runtime still runs %d float %s: %s", f.name, what, got[float], float, histogram(got))
		}
	}
	if convs != floatConvs {
		t.Errorf("%s %s: ONNX Runtime runs %d float Conv, want %d: %s", f.name, what, convs, floatConvs, histogram(got))
	}
}

// floatConvs is how many Convs of the family named stay float in mode
// (unless AllConvs): the 3-channel first layers, but for the sensor
// CNN's in static int8, a 1-D Conv whose output a quantized Conv reads.
func floatConvs(name, mode string) int {
	switch name {
	case "cnn1d", "cnn2d", "image_cnn2d":
		return 1
	case "sensor_cnn1d":
		if mode == quant.Static {
			return 0
		}
		return 1
	}
	return 0
}

// feedTracer shapes rows as the family's graph input wants them.
func feedTracer(f family) func(quant.Tracer) quant.Tracer {
	return func(quant.Tracer) quant.Tracer {
		return func(model []byte, names []string, x []float32, features int) (map[string][]float32, error) {
			info, err := onnx.Inspect(model)
			if err != nil {
				return nil, err
			}
			return ort.TraceFeeds(model, names, []onnx.Feed{feed(info, x, features)})
		}
	}
}

// feed shapes rows of x as the graph's one input: [N, F], [N, C, T] or
// [N, C, H, W].
func feed(info *onnx.Info, x []float32, features int) onnx.Feed {
	in := info.Inputs[0]
	shape := []int64{int64(len(x) / features)}
	for _, d := range in.Shape[1:] {
		var n int64
		fmt.Sscan(d, &n)
		shape = append(shape, n)
	}
	return onnx.Feed{Name: in.Name, Shape: shape, Data: x}
}
