package quant_test

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/outpost-edge/outpost/models/onnx"
	"github.com/outpost-edge/outpost/quant"
)

// mixture draws n labelled points from k Gaussian clusters in d dims.
func mixture(rng *rand.Rand, centers [][]float64, sigma float64, n int) ([][]float32, []int) {
	xs, ys := make([][]float32, n), make([]int, n)
	for i := range xs {
		c := rng.IntN(len(centers))
		x := make([]float32, len(centers[c]))
		for j := range x {
			x[j] = float32(centers[c][j] + sigma*rng.NormFloat64())
		}
		xs[i], ys[i] = x, c
	}
	return xs, ys
}

// solve solves A·x = b for symmetric positive definite A (Cholesky).
func solve(a [][]float64, b []float64) []float64 {
	n := len(a)
	l := make([][]float64, n)
	for i := range l {
		l[i] = make([]float64, n)
		for j := 0; j <= i; j++ {
			s := a[i][j]
			for k := 0; k < j; k++ {
				s -= l[i][k] * l[j][k]
			}
			if i == j {
				l[i][i] = math.Sqrt(s)
			} else {
				l[i][j] = s / l[j][j]
			}
		}
	}
	y := make([]float64, n)
	for i := 0; i < n; i++ {
		s := b[i]
		for k := 0; k < i; k++ {
			s -= l[i][k] * y[k]
		}
		y[i] = s / l[i][i]
	}
	x := make([]float64, n)
	for i := n - 1; i >= 0; i-- {
		s := y[i]
		for k := i + 1; k < n; k++ {
			s -= l[k][i] * x[k]
		}
		x[i] = s / l[i][i]
	}
	return x
}

// trainedMLP fits a 16→256→4 network to the mixture: a random ReLU hidden
// layer and a readout fitted by ridge regression to one-hot targets (an
// extreme learning machine), so its decisions have the margins of a
// trained model rather than of random weights.
func trainedMLP(t *testing.T, rng *rand.Rand, xs [][]float32, ys []int, hidden, classes int) []byte {
	t.Helper()
	in := len(xs[0])
	h1 := onnx.Dense{B: make([]float32, hidden)}
	for j := 0; j < hidden; j++ {
		row := make([]float32, in)
		for i := range row {
			row[i] = float32(rng.NormFloat64() / math.Sqrt(float64(in)))
		}
		h1.W = append(h1.W, row)
		h1.B[j] = float32(rng.NormFloat64() * 0.5)
	}
	feat := func(x []float32) []float64 {
		h := make([]float64, hidden+1)
		for j := 0; j < hidden; j++ {
			s := float64(h1.B[j])
			for i, v := range x {
				s += float64(h1.W[j][i] * v)
			}
			h[j] = math.Max(0, s)
		}
		h[hidden] = 1 // bias column
		return h
	}
	m := hidden + 1
	ata := make([][]float64, m)
	for i := range ata {
		ata[i] = make([]float64, m)
		ata[i][i] = 1e-2 // ridge
	}
	atb := make([][]float64, classes)
	for c := range atb {
		atb[c] = make([]float64, m)
	}
	for n, x := range xs {
		h := feat(x)
		for i := 0; i < m; i++ {
			for j := 0; j <= i; j++ {
				ata[i][j] += h[i] * h[j]
			}
			atb[ys[n]][i] += h[i]
		}
	}
	for i := 0; i < m; i++ {
		for j := i + 1; j < m; j++ {
			ata[i][j] = ata[j][i]
		}
	}
	out := onnx.Dense{B: make([]float32, classes)}
	for c := 0; c < classes; c++ {
		w := solve(ata, atb[c])
		row := make([]float32, hidden)
		for j := range row {
			row[j] = float32(w[j])
		}
		out.W = append(out.W, row)
		out.B[c] = float32(w[hidden])
	}
	model, err := onnx.MLP([]onnx.Dense{h1, out}, onnx.MLPOptions{Hidden: onnx.Relu, Output: onnx.Softmax})
	if err != nil {
		t.Fatal(err)
	}
	return model
}

// TestStaticInt8KeepsAccuracy: on a trained classifier, static int8 costs
// at most one point of accuracy against the true labels (the issue's
// target), on ONNX Runtime and on the pure-Go engine.
func TestStaticInt8KeepsAccuracy(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	const d, classes = 16, 4
	centers := make([][]float64, classes)
	for c := range centers {
		centers[c] = make([]float64, d)
		for j := range centers[c] {
			centers[c][j] = rng.NormFloat64()
		}
	}
	trainX, trainY := mixture(rng, centers, 1.4, 4000)
	testX, testY := mixture(rng, centers, 1.4, 3000)
	model := trainedMLP(t, rng, trainX, trainY, 256, classes)
	for _, calib := range []string{quant.MinMax, quant.Percentile, quant.MSE} {
		q, err := quant.Quantize(model, quant.Options{Mode: quant.Static, Calibration: calib, Percentile: 99.99, Samples: trainX[:512], Tracer: trace(t)})
		if err != nil {
			t.Fatal(err)
		}
		rep, err := quant.Evaluate(model, q, testX, testY, 0.5, map[string]func([]byte) (quant.Runner, error){
			"onnxruntime": func(m []byte) (quant.Runner, error) { return ortSession(t, m), nil },
		}, []string{"onnxruntime"})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: accuracy %.2f%% → %.2f%% (drop %.2f points), size ratio %.2f", calib, 100*rep.AccuracyBefore, 100*rep.AccuracyAfter, 100*rep.Drop(), rep.SizeRatio)
		if rep.AccuracyBefore < 0.8 {
			t.Fatalf("the float model is not trained: %.1f%%", 100*rep.AccuracyBefore)
		}
		if rep.Drop() > 0.01 {
			t.Errorf("%s: static int8 lost %.2f points, target ≤ 1", calib, 100*rep.Drop())
		}
	}
}
