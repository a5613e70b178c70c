package goengine_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/outpost-edge/outpost/models/goengine"
	"github.com/outpost-edge/outpost/models/onnx"
	"github.com/outpost-edge/outpost/models/onnx/onnxpb"
	"github.com/outpost-edge/outpost/models/ort"
	"github.com/outpost-edge/outpost/test/testenv"
)

// benchModel is a model both engines run, over rows of features values.
type benchModel struct {
	name     string
	data     []byte
	features int
	params   int
}

func randFloats(rng *rand.Rand, n int, scale float32) []float32 {
	out := make([]float32, n)
	for i := range out {
		out[i] = (rng.Float32()*2 - 1) * scale
	}
	return out
}

// mlp is a dense MLP with Relu hidden layers in the Gemm form the trainer
// writes or in the MatMul+Add form exporters write.
func mlp(tb testing.TB, rng *rand.Rand, matmul bool, sizes ...int) benchModel {
	var layers []onnx.Dense
	params := 0
	for i := 1; i < len(sizes); i++ {
		d := onnx.Dense{B: randFloats(rng, sizes[i], 0.1)}
		for range sizes[i] {
			d.W = append(d.W, randFloats(rng, sizes[i-1], 1/float32(sizes[i-1])))
		}
		layers = append(layers, d)
		params += sizes[i-1]*sizes[i] + sizes[i]
	}
	data, err := onnx.MLP(layers, onnx.MLPOptions{Hidden: onnx.Relu, MatMul: matmul})
	if err != nil {
		tb.Fatal(err)
	}
	form := "gemm"
	if matmul {
		form = "matmul"
	}
	name := form
	for _, s := range sizes {
		name += fmt.Sprintf("-%d", s)
	}
	return benchModel{name: "mlp-" + name, data: data, features: sizes[0], params: params}
}

// convLayer is one Conv (+ Relu) of a CNN: out channels, kernel, stride
// and padding, the same along every spatial axis.
type convLayer struct{ out, kernel, stride, pad int }

// cnn builds an exporter-style CNN: the rows reshaped to [N, C, spatial...],
// Conv+Relu layers, GlobalAveragePool, Flatten and a Gemm to classes, with
// fixed-seed He-scaled weights.
func cnn(tb testing.TB, rng *rand.Rand, name string, channels int, spatial []int, layers []convLayer, classes int) benchModel {
	features := channels
	for _, s := range spatial {
		features *= s
	}
	g := onnx.NewGraph(name).Input("x", "N", onnx.Dim(features))
	shape := append([]int64{-1, int64(channels)}, func() []int64 {
		var s []int64
		for _, v := range spatial {
			s = append(s, int64(v))
		}
		return s
	}()...)
	g.Node("Reshape", []string{"x", "shape"}, []string{"r"})
	cur, in, params := "r", channels, 0
	rank := len(spatial)
	rep := func(v int) []int64 {
		out := make([]int64, rank)
		for i := range out {
			out[i] = int64(v)
		}
		return out
	}
	for i, l := range layers {
		k := 1
		dims := []int64{int64(l.out), int64(in)}
		for range rank {
			k *= l.kernel
			dims = append(dims, int64(l.kernel))
		}
		fan := in * k
		w, b := fmt.Sprintf("w%d", i), fmt.Sprintf("b%d", i)
		g.Initializer(w, randFloats(rng, l.out*fan, 1.7/float32(fan)), dims...).
			Initializer(b, randFloats(rng, l.out, 0.05), int64(l.out)).
			Node("Conv", []string{cur, w, b}, []string{fmt.Sprintf("c%d", i)},
				onnx.Attr{Name: "kernel_shape", Value: rep(l.kernel)}, onnx.Attr{Name: "strides", Value: rep(l.stride)},
				onnx.Attr{Name: "pads", Value: append(rep(l.pad), rep(l.pad)...)}).
			Node("Relu", []string{fmt.Sprintf("c%d", i)}, []string{fmt.Sprintf("a%d", i)})
		params += l.out*fan + l.out
		cur, in = fmt.Sprintf("a%d", i), l.out
	}
	g.Node("GlobalAveragePool", []string{cur}, []string{"gap"}).
		Node("Flatten", []string{"gap"}, []string{"flat"}).
		Initializer("fw", randFloats(rng, classes*in, 1/float32(in)), int64(classes), int64(in)).
		Initializer("fb", randFloats(rng, classes, 0.05), int64(classes)).
		Node("Gemm", []string{"flat", "fw", "fb"}, []string{"y"}, onnx.Attr{Name: "transB", Value: int64(1)})
	params += classes*in + classes
	data, err := g.Output("y", "N", onnx.Dim(classes)).Model("bench")
	if err != nil {
		tb.Fatal(err)
	}
	var m onnxpb.ModelProto
	if err := proto.Unmarshal(data, &m); err != nil {
		tb.Fatal(err)
	}
	m.Graph.Initializer = append(m.Graph.Initializer, &onnxpb.TensorProto{Name: proto.String("shape"),
		DataType: proto.Int32(int32(onnxpb.TensorProto_INT64)), Dims: []int64{int64(len(shape))}, Int64Data: shape})
	if data, err = proto.Marshal(&m); err != nil {
		tb.Fatal(err)
	}
	return benchModel{name: name, data: data, features: features, params: params}
}

// cnn1d is a 1-D CNN over 2 s windows of a 3-axis sensor at 100 Hz
// (input [N, 3, 200]), as a human-activity model is commonly built.
func cnn1d(tb testing.TB, rng *rand.Rand) benchModel {
	return cnn(tb, rng, "cnn1d-3x200", 3, []int{200},
		[]convLayer{{32, 5, 1, 2}, {64, 5, 2, 2}, {64, 5, 2, 2}, {128, 3, 2, 1}}, 6)
}

// cnn96 is a CNN of about 1M parameters on 96×96 RGB frames (input
// [N, 3, 96, 96]): four stride-2 convolutions and one at stride 1.
func cnn96(tb testing.TB, rng *rand.Rand) benchModel {
	return cnn(tb, rng, "cnn2d-3x96x96", 3, []int{96, 96},
		[]convLayer{{32, 3, 2, 1}, {64, 3, 2, 1}, {128, 3, 2, 1}, {256, 3, 2, 1}, {256, 3, 1, 1}}, 10)
}

// sideBySide times run functions in interleaved rounds, rotating their
// order, so that a noisy neighbour disturbs all of them alike. It returns
// each one's total seconds and the median per-round ratio of each to the
// first.
func sideBySide(b *testing.B, runs ...func() error) (totals []float64, ratios []float64) {
	rounds := min(b.N, 15)
	per := max(b.N/rounds, 1)
	totals = make([]float64, len(runs))
	perRound := make([][]float64, len(runs))
	b.ResetTimer()
	for r := range rounds {
		t := make([]float64, len(runs))
		for k := range runs {
			i := (r + k) % len(runs)
			start := time.Now()
			for range per {
				if err := runs[i](); err != nil {
					b.Fatal(err)
				}
			}
			t[i] = time.Since(start).Seconds()
		}
		for i := range runs {
			totals[i] += t[i]
			perRound[i] = append(perRound[i], t[0]/t[i])
		}
	}
	b.StopTimer()
	for i := range runs {
		slices.Sort(perRound[i])
		ratios = append(ratios, perRound[i][len(perRound[i])/2])
		totals[i] /= float64(rounds * per)
	}
	return totals, ratios
}

// BenchmarkEngines runs the pure-Go engine and ONNX Runtime side by side
// on the same models and batches: dense MLPs (the trainer's Gemm form and
// the exporters' MatMul+Add form), a 1-D CNN on [N, 3, 200] windows and a
// ~1M-parameter CNN on [N, 3, 96, 96] frames. ONNX Runtime runs with one
// intra-op thread (the pure-Go engine's budget) and with its default.
// Reported per row (window, frame): go-ns/row, ort1-ns/row, ort-ns/row,
// and go/ort1 and go/ort, the medians of the per-round ratios.
func BenchmarkEngines(b *testing.B) {
	if err := ort.Init(testenv.ORTLibrary(b)); err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(7, 7))
	models := []benchModel{
		mlp(b, rng, false, 16, 32, 16, 4),
		mlp(b, rng, true, 16, 32, 16, 4),
		mlp(b, rng, false, 64, 256, 128, 10),
		mlp(b, rng, true, 64, 256, 128, 10),
		mlp(b, rng, false, 256, 512, 256, 10),
		mlp(b, rng, true, 256, 512, 256, 10),
		cnn1d(b, rng),
		cnn96(b, rng),
	}
	for _, m := range models {
		for _, batch := range []int{1, 32} {
			b.Run(fmt.Sprintf("%s/batch=%d", m.name, batch), func(b *testing.B) {
				eng, err := goengine.Load(m.data)
				if err != nil {
					b.Fatal(err)
				}
				ort1, err := ort.NewSessionWith(m.data, ort.Options{IntraOpThreads: 1})
				if err != nil {
					b.Fatal(err)
				}
				defer ort1.Close()
				ortd, err := ort.NewSession(m.data)
				if err != nil {
					b.Fatal(err)
				}
				defer ortd.Close()
				x := randFloats(rand.New(rand.NewPCG(1, 2)), batch*m.features, 1)
				for _, run := range []func() error{
					func() error { _, err := eng.Run(x, m.features); return err },
					func() error { _, err := ort1.RunShared(x, m.features); return err },
					func() error { _, err := ortd.RunShared(x, m.features); return err },
				} {
					if err := run(); err != nil { // grow buffers, bind tensors
						b.Fatal(err)
					}
				}
				got, _ := eng.Run(x, m.features)
				want, _ := ort1.Run(x, m.features)
				for i := range want {
					if d := math.Abs(float64(got[i] - want[i])); d > 1e-4*(1+math.Abs(float64(want[i]))) {
						b.Fatalf("value %d: go %v, onnxruntime %v", i, got[i], want[i])
					}
				}
				totals, ratios := sideBySide(b,
					func() error { _, err := eng.Run(x, m.features); return err },
					func() error { _, err := ort1.RunShared(x, m.features); return err },
					func() error { _, err := ortd.RunShared(x, m.features); return err },
				)
				rows := float64(batch)
				b.ReportMetric(totals[0]/rows*1e9, "go-ns/row")
				b.ReportMetric(totals[1]/rows*1e9, "ort1-ns/row")
				b.ReportMetric(totals[2]/rows*1e9, "ort-ns/row")
				b.ReportMetric(ratios[1], "go/ort1")
				b.ReportMetric(ratios[2], "go/ort")
				b.ReportMetric(float64(m.params), "params")
			})
		}
	}
}
