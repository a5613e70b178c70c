package goengine_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/models/goengine"
	"github.com/outpost-edge/outpost/models/onnx"
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

// convNet is one of models/onnx's CNNs on flat rows (a Reshape in the
// graph), weights drawn from rng.
func convNet(tb testing.TB, rng *rand.Rand, build func(*rand.Rand, bool) ([]byte, int, error), name string, features int) benchModel {
	data, params, err := build(rng, true)
	if err != nil {
		tb.Fatal(err)
	}
	return benchModel{name: name, data: data, features: features, params: params}
}

// cnn1d is a 1-D CNN over 2 s windows of a 3-axis sensor at 100 Hz
// (input [N, 3, 200]), as a human-activity model is commonly built.
func cnn1d(tb testing.TB, rng *rand.Rand) benchModel {
	return convNet(tb, rng, onnx.SensorCNN1D, "cnn1d-3x200", 3*200)
}

// cnn96 is a CNN of about 1M parameters on 96×96 RGB frames (input
// [N, 3, 96, 96]): four stride-2 convolutions and one at stride 1.
func cnn96(tb testing.TB, rng *rand.Rand) benchModel {
	return convNet(tb, rng, onnx.ImageCNN96, "cnn2d-3x96x96", 3*96*96)
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
