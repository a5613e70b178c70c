package quant_test

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/outpost-edge/outpost/models/goengine"
	"github.com/outpost-edge/outpost/models/manifest"
	"github.com/outpost-edge/outpost/models/onnx"
	"github.com/outpost-edge/outpost/models/onnx/onnxpb"
	"github.com/outpost-edge/outpost/models/ort"
	"github.com/outpost-edge/outpost/quant"
	"github.com/outpost-edge/outpost/test/testenv"
)

// goTolerance is how far the pure-Go engine may be from ONNX Runtime on a
// quantized graph (float graphs: 1e-5, models/conformance): one value on
// the other side of a rounding tie moves a tensor by one quantization
// step, and the logits' step under their whole (min-max) range moves a
// softmax probability by up to about 0.006 here.
const goTolerance = 1e-2

type runner interface {
	Run(x []float32, features int) ([]float32, error)
	Close() error
}

// mlp is features → hidden → hidden → classes, ReLU, softmax, random
// weights scaled like a trained net's.
func mlp(tb testing.TB, rng *rand.Rand, features, hidden, classes int, matmul bool) []byte {
	tb.Helper()
	layer := func(in, out int) onnx.Dense {
		d := onnx.Dense{B: make([]float32, out)}
		sd := math.Sqrt(2 / float64(in))
		for range out {
			row := make([]float32, in)
			for i := range row {
				row[i] = float32(rng.NormFloat64() * sd)
			}
			d.W = append(d.W, row)
		}
		return d
	}
	m, err := onnx.MLP([]onnx.Dense{layer(features, hidden), layer(hidden, hidden), layer(hidden, classes)},
		onnx.MLPOptions{Hidden: onnx.Relu, Output: onnx.Softmax, MatMul: matmul})
	if err != nil {
		tb.Fatal(err)
	}
	return m
}

func samples(rng *rand.Rand, n, features int) [][]float32 {
	out := make([][]float32, n)
	for i := range out {
		out[i] = make([]float32, features)
		for j := range out[i] {
			out[i][j] = float32(rng.NormFloat64())
		}
	}
	return out
}

func flat(rows [][]float32) []float32 {
	var out []float32
	for _, r := range rows {
		out = append(out, r...)
	}
	return out
}

func argmax(v []float32) int {
	best := 0
	for i := range v {
		if v[i] > v[best] {
			best = i
		}
	}
	return best
}

func ortSession(tb testing.TB, model []byte) runner {
	tb.Helper()
	if err := ort.Init(testenv.ORTLibrary(tb)); err != nil {
		tb.Fatal(err)
	}
	s, err := ort.NewSession(model)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

// trace calibrates on ONNX Runtime.
func trace(tb testing.TB) quant.Tracer {
	tb.Helper()
	if err := ort.Init(testenv.ORTLibrary(tb)); err != nil {
		tb.Fatal(err)
	}
	return ort.Trace
}

func run(tb testing.TB, r runner, x []float32, features int) []float32 {
	tb.Helper()
	out, err := r.Run(x, features)
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// TestModesAgreeWithFloat quantizes a 16→256→256→4 MLP (Gemm and MatMul
// forms) every way and every calibration, runs float and quantized models
// on ONNX Runtime and the quantized one on the pure-Go engine too.
func TestModesAgreeWithFloat(t *testing.T) {
	const features, classes = 16, 4
	for _, matmul := range []bool{false, true} {
		rng := rand.New(rand.NewPCG(7, 8))
		model := mlp(t, rng, features, 256, classes, matmul)
		calib, eval := samples(rng, 256, features), samples(rng, 512, features)
		x := flat(eval)
		want := run(t, ortSession(t, model), x, features)
		for _, o := range []quant.Options{
			{Mode: quant.Static, Calibration: quant.MinMax, Samples: calib, Tracer: trace(t)},
			{Mode: quant.Static, Calibration: quant.Percentile, Percentile: 99.9, Samples: calib, Tracer: trace(t)},
			{Mode: quant.Static, Calibration: quant.MSE, Samples: calib, Tracer: trace(t)},
			{Mode: quant.Dynamic},
			{Mode: quant.FP16},
		} {
			q, err := quant.Quantize(model, o)
			if err != nil {
				t.Fatalf("%+v: %v", o.Mode, err)
			}
			got := run(t, ortSession(t, q), x, features)
			eng, err := goengine.Load(q)
			if err != nil {
				t.Fatal(err)
			}
			gotGo := run(t, eng, x, features)
			if want := map[string]int{quant.Static: 3, quant.Dynamic: 3}[o.Mode]; eng.Int8Layers() != want {
				t.Errorf("%s: the pure-Go engine runs %d layers in int8, want %d", o.Mode, eng.Int8Layers(), want)
			}
			var maxErr, goErr float64
			agree := 0
			for i := 0; i < len(eval); i++ {
				w, g := want[i*classes:(i+1)*classes], got[i*classes:(i+1)*classes]
				if argmax(w) == argmax(g) {
					agree++
				}
				for j := range w {
					maxErr = max(maxErr, math.Abs(float64(w[j]-g[j])))
					goErr = max(goErr, math.Abs(float64(gotGo[i*classes+j]-g[j])))
				}
			}
			acc := float64(agree) / float64(len(eval))
			t.Logf("matmul=%v %s %s: size %d → %d (%.2f), max abs error %.4f, argmax agreement %.3f, go vs ort %.2g",
				matmul, o.Mode, o.Calibration, len(model), len(q), float64(len(q))/float64(len(model)), maxErr, acc, goErr)
			if acc < 0.97 {
				t.Errorf("%s %s: quantized model agrees with float on %.1f%% of rows", o.Mode, o.Calibration, 100*acc)
			}
			// One activation landing on the other side of a rounding tie
			// moves an output by about one quantization step.
			if goErr > goTolerance {
				t.Errorf("%s %s: pure-Go engine differs from ONNX Runtime by %.3g (documented tolerance %g)", o.Mode, o.Calibration, goErr, goTolerance)
			}
			if o.Mode != quant.FP16 && float64(len(q)) > 0.3*float64(len(model)) {
				t.Errorf("%s: size ratio %.2f, want ≤ 0.3", o.Mode, float64(len(q))/float64(len(model)))
			}
		}
	}
}

func TestRefusals(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	model := mlp(t, rng, 4, 8, 2, false)
	for name, c := range map[string]struct {
		model []byte
		o     quant.Options
		want  error
	}{
		"mode":        {model, quant.Options{Mode: "int4"}, quant.ErrOptions},
		"no samples":  {model, quant.Options{Mode: quant.Static, Tracer: trace(t)}, quant.ErrOptions},
		"no tracer":   {model, quant.Options{Mode: quant.Static, Samples: samples(rng, 4, 4)}, quant.ErrOptions},
		"calibration": {model, quant.Options{Mode: quant.Static, Calibration: "magic", Samples: samples(rng, 4, 4), Tracer: trace(t)}, quant.ErrOptions},
		"corrupt":     {[]byte("nope"), quant.Options{Mode: quant.Dynamic}, quant.ErrModel},
	} {
		if _, err := quant.Quantize(c.model, c.o); !errors.Is(err, c.want) {
			t.Errorf("%s: err %v, want %v", name, err, c.want)
		}
	}
}

// BenchmarkQuantizedLatency: a 32→256→256→8 MLP, batch 64, float against
// static int8, on ONNX Runtime and on the pure-Go engine, interleaved.
// speedup is float time / int8 time; size_ratio is int8 bytes / float bytes.
func BenchmarkQuantizedLatency(b *testing.B) {
	const features, batch = 32, 64
	rng := rand.New(rand.NewPCG(5, 6))
	model := mlp(b, rng, features, 256, 8, false)
	q, err := quant.Quantize(model, quant.Options{Mode: quant.Static, Samples: samples(rng, 512, features), Tracer: trace(b)})
	if err != nil {
		b.Fatal(err)
	}
	x := flat(samples(rng, batch, features))
	goF, _ := goengine.Load(model)
	goQ, _ := goengine.Load(q)
	engines := map[string][2]runner{"ort": {ortSession(b, model), ortSession(b, q)}, "go": {goF, goQ}}
	for _, name := range []string{"ort", "go"} {
		pair := engines[name]
		b.Run(name, func(b *testing.B) {
			var tf, tq time.Duration // per call of this func: b.Run calls it for each N it tries
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				run(b, pair[0], x, features)
				t1 := time.Now()
				run(b, pair[1], x, features)
				tf, tq = tf+t1.Sub(t0), tq+time.Since(t1)
			}
			b.ReportMetric(float64(tf)/float64(tq), "speedup")
			b.ReportMetric(float64(len(q))/float64(len(model)), "size_ratio")
			b.ReportMetric(float64(tf.Microseconds())/float64(b.N), "float-µs/batch")
			b.ReportMetric(float64(tq.Microseconds())/float64(b.N), "int8-µs/batch")
		})
	}
}

// TestEvaluateNamesUnavailableEngines: an engine that cannot load the
// model is named with its reason, and the next one decides accuracy.
func TestEvaluateNamesUnavailableEngines(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 3))
	model := mlp(t, rng, 4, 8, 2, false)
	q, err := quant.Quantize(model, quant.Options{Mode: quant.Dynamic})
	if err != nil {
		t.Fatal(err)
	}
	refuse := func([]byte) (quant.Runner, error) { return nil, errors.New("unsupported: op Reshape") }
	rep, err := quant.Evaluate(model, q, samples(rng, 16, 4), nil, 0.5, map[string]func([]byte) (quant.Runner, error){
		"picky":       refuse,
		"onnxruntime": func(m []byte) (quant.Runner, error) { return ortSession(t, m), nil },
	}, []string{"picky", "onnxruntime"})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Engine != "onnxruntime" || !strings.Contains(rep.Unavailable["picky"], "Reshape") || !strings.Contains(rep.String(), "picky") {
		t.Errorf("engine %q, unavailable %v, report:\n%s", rep.Engine, rep.Unavailable, rep)
	}
	if _, err := quant.Evaluate(model, q, samples(rng, 16, 4), nil, 0.5, map[string]func([]byte) (quant.Runner, error){"picky": refuse}, []string{"picky"}); !errors.Is(err, quant.ErrModel) {
		t.Errorf("no engine loads it: err %v, want ErrModel", err)
	}
}

// slowRunner takes at least delay per run: a quantized model that is
// slower by construction, whatever the machine's noise.
type slowRunner struct {
	runner
	delay time.Duration
}

func (s slowRunner) Run(x []float32, features int) ([]float32, error) {
	for t0 := time.Now(); time.Since(t0) < s.delay; {
	}
	return s.runner.Run(x, features)
}

// TestPackageRefusals: --require-faster refuses a quantized model slower
// than float, and states the slowdown plainly; --max-size-ratio refuses a
// larger one; neither writes the package.
func TestPackageRefusals(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	model := mlp(t, rng, 4, 8, 2, false)
	in := t.TempDir()
	m := &manifest.Manifest{Name: "m", Version: 1, Task: "classification"}
	for i := range 4 {
		m.Features = append(m.Features, manifest.Feature{Field: "f", Agg: fmt.Sprint("p", i), Std: 1})
	}
	rows := samples(rng, 50, 4)
	y := run(t, ortSession(t, model), rows[0], 4)
	m.Golden = []manifest.Golden{{Input: rows[0], Output: y, Tolerance: 1e-5}}
	if err := manifest.Write(in, m, model); err != nil {
		t.Fatal(err)
	}
	var float []byte
	engines := map[string]func([]byte) (quant.Runner, error){"onnxruntime": func(b []byte) (quant.Runner, error) {
		s := ortSession(t, b)
		if string(b) == string(float) {
			return s, nil
		}
		return slowRunner{s, 2 * time.Millisecond}, nil
	}}
	float = model
	for name, c := range map[string]struct {
		po   quant.PackageOptions
		want error
	}{
		"slower": {quant.PackageOptions{RequireFaster: true}, quant.ErrSlower},
		"size":   {quant.PackageOptions{MaxSizeRatio: 0.01}, quant.ErrSize},
	} {
		po := c.po
		po.Options, po.Rows, po.MaxDrop, po.Engines, po.Order = quant.Options{Mode: quant.Dynamic}, rows, 1, engines, []string{"onnxruntime"}
		out := filepath.Join(t.TempDir(), "q")
		rep, err := quant.QuantizePackage(in, out, po)
		if !errors.Is(err, c.want) || !quant.Refused(err) || rep == nil {
			t.Fatalf("%s: err %v, want %v", name, err, c.want)
		}
		if _, serr := os.Stat(out); !os.IsNotExist(serr) {
			t.Errorf("%s: refused, yet wrote %s", name, out)
		}
		if name == "slower" && (!strings.Contains(err.Error(), "× slower") || !strings.Contains(rep.String(), "× slower")) {
			t.Errorf("the slowdown is not stated plainly: %v\n%s", err, rep)
		}
	}
}

// TestEntropyClipsOutliers: entropy calibration cuts a range that one
// outlier stretched back to where the values are, and keeps a range the
// values fill.
func TestEntropyClipsOutliers(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	gauss := make([]float32, 20000)
	for i := range gauss {
		gauss[i] = float32(rng.NormFloat64())
	}
	gauss[0] = 1000
	uniform := make([]float32, 20000)
	for i := range uniform {
		uniform[i] = rng.Float32()*2 - 1
	}
	got := quant.CalibrateRange(quant.Entropy, gauss)
	if got[1] > 100 || got[1] < 2 || got[0] > -2 {
		t.Errorf("normal values with an outlier at 1000: entropy range %v, want it clipped below 100 and wider than ±2", got)
	}
	if got := quant.CalibrateRange(quant.Entropy, uniform); got[1] < 0.9 || got[0] > -0.9 {
		t.Errorf("uniform values in ±1: entropy range %v, want about ±1", got)
	}
	if got := quant.CalibrateRange(quant.MinMax, gauss); got[1] != 1000 {
		t.Errorf("minmax range %v, want it to reach the outlier", got)
	}
}

// TestOutOfRangeInt8WeightsRunInFloat: an INT8 weight stored as
// int32_data outside [-128, 127] (nothing checks the range on load) is
// not run by the SWAR kernel, whose lanes it would overflow (it made the
// block length 0 and the kernel loop forever): that layer runs in float.
func TestOutOfRangeInt8WeightsRunInFloat(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	model := mlp(t, rng, 8, 16, 3, false)
	q, err := quant.Quantize(model, quant.Options{Mode: quant.Static, Samples: samples(rng, 64, 8), Tracer: trace(t)})
	if err != nil {
		t.Fatal(err)
	}
	var m onnxpb.ModelProto
	if err := proto.Unmarshal(q, &m); err != nil {
		t.Fatal(err)
	}
	rewritten := ""
	for _, init := range m.GetGraph().GetInitializer() {
		if init.GetDataType() == int32(onnxpb.TensorProto_INT8) && len(init.GetDims()) == 2 && rewritten == "" {
			n := len(init.GetRawData())
			init.RawData, init.Int32Data = nil, make([]int32, n)
			for i := range init.Int32Data {
				init.Int32Data[i] = 5000
			}
			rewritten = init.GetName()
		}
	}
	if rewritten == "" {
		t.Fatal("no int8 weight to rewrite")
	}
	bad, err := proto.Marshal(&m)
	if err != nil {
		t.Fatal(err)
	}
	good, err := goengine.Load(q)
	if err != nil {
		t.Fatal(err)
	}
	eng, err := goengine.Load(bad)
	if err != nil {
		t.Fatal(err)
	}
	if eng.Int8Layers() != good.Int8Layers()-1 {
		t.Fatalf("%d int8 layers with %s out of range, want %d", eng.Int8Layers(), rewritten, good.Int8Layers()-1)
	}
	if _, err := eng.Run(flat(samples(rng, 4, 8)), 8); err != nil {
		t.Fatal(err)
	}
}

// TestPassThroughChainsKeepOneScale: a MaxPool between two Convs
// quantizes with its input's scale (ORT drops the pair only then), under
// a clipping calibration too; a Flatten between the last Gemm and the
// Softmax keeps the logits' whole range; and non-finite calibration
// values are an error, not a panic.
func TestPassThroughChainsKeepOneScale(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 4))
	w := func(n int) []float32 {
		out := make([]float32, n)
		for i := range out {
			out[i] = float32(rng.NormFloat64() / 4)
		}
		return out
	}
	model, err := onnx.NewGraph("pool").
		Input("x", "N", 2, 16).
		Initializer("w1", w(4*2*3), 4, 2, 3).Initializer("b1", w(4), 4).
		Initializer("w2", w(4*4*3), 4, 4, 3).Initializer("b2", w(4), 4).
		Initializer("fw", w(3*4), 3, 4).Initializer("fb", w(3), 3).
		Node("Conv", []string{"x", "w1", "b1"}, []string{"c1"}, onnx.Attr{Name: "kernel_shape", Value: []int64{3}}).
		Node("Relu", []string{"c1"}, []string{"r1"}).
		Node("MaxPool", []string{"r1"}, []string{"m"}, onnx.Attr{Name: "kernel_shape", Value: []int64{2}}, onnx.Attr{Name: "strides", Value: []int64{2}}).
		Node("Conv", []string{"m", "w2", "b2"}, []string{"c2"}, onnx.Attr{Name: "kernel_shape", Value: []int64{3}}).
		Node("Relu", []string{"c2"}, []string{"r2"}).
		Node("GlobalAveragePool", []string{"r2"}, []string{"p"}).
		Node("Flatten", []string{"p"}, []string{"f"}).
		Node("Gemm", []string{"f", "fw", "fb"}, []string{"z"}, onnx.Attr{Name: "transB", Value: int64(1)}).
		Node("Flatten", []string{"z"}, []string{"zf"}).
		Node("Softmax", []string{"zf"}, []string{"y"}, onnx.Attr{Name: "axis", Value: int64(1)}).
		Output("y", "N", 3).
		Model("outpost")
	if err != nil {
		t.Fatal(err)
	}
	calib := samples(rng, 256, 32)
	tr := feedTracer(family{name: "pool", model: model, features: 32})(trace(t))
	scale := func(q []byte, tensor string) float32 {
		var m onnxpb.ModelProto
		if err := proto.Unmarshal(q, &m); err != nil {
			t.Fatal(err)
		}
		inits := map[string]*onnxpb.TensorProto{}
		for _, init := range m.GetGraph().GetInitializer() {
			inits[init.GetName()] = init
		}
		for _, n := range m.GetGraph().GetNode() {
			if n.GetOpType() == "QuantizeLinear" && n.GetInput()[0] == tensor {
				return inits[n.GetInput()[1]].GetFloatData()[0]
			}
		}
		t.Fatalf("no pair on %s", tensor)
		return 0
	}
	minmax, err := quant.Quantize(model, quant.Options{Mode: quant.Static, AllConvs: true, Samples: calib, Tracer: tr})
	if err != nil {
		t.Fatal(err)
	}
	for _, method := range []string{quant.Percentile, quant.Entropy} {
		q, err := quant.Quantize(model, quant.Options{Mode: quant.Static, AllConvs: true, Calibration: method, Percentile: 99, Samples: calib, Tracer: tr})
		if err != nil {
			t.Fatal(err)
		}
		if a, b := scale(q, "r1"), scale(q, "m"); a != b {
			t.Errorf("%s: MaxPool's input scale %v, its output's %v: ORT keeps a float pool between", method, a, b)
		}
		if a, b := scale(q, "zf"), scale(minmax, "zf"); a != b {
			t.Errorf("%s: the logits Softmax reads through a Flatten have scale %v, min-max %v: clipped", method, a, b)
		}
	}
	inf := func(model []byte, names []string, x []float32, features int) (map[string][]float32, error) {
		out := map[string][]float32{}
		for _, n := range names {
			out[n] = []float32{1, float32(math.Inf(1))}
		}
		return out, nil
	}
	if _, err := quant.Quantize(model, quant.Options{Mode: quant.Static, AllConvs: true, Calibration: quant.Entropy, Samples: calib, Tracer: inf}); !errors.Is(err, quant.ErrModel) {
		t.Fatalf("infinite calibration values: %v, want ErrModel", err)
	}
}
