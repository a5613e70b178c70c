package learn

import (
	"math/rand/v2"
	"testing"
)

// benchFit trains m on mini-batches of 32 rows of 16 features and reports
// samples/s. Run with -cpu 1: the target is ≥ 300k samples/s on one core
// (River, the usual peer in Python, does 20–32k).
func benchFit(b *testing.B, m Model) {
	rng := rand.New(rand.NewPCG(1, 2))
	const batches, size = 64, 32
	xs, ys := separable(rng, batches*size, 16, m.Classes())
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		k := (i % batches) * size
		if _, err := m.Fit(xs[k:k+size], ys[k:k+size]); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*size)/b.Elapsed().Seconds(), "samples/s")
}

func BenchmarkOnlineLogistic(b *testing.B) {
	m, _ := NewLinear(16, 2, nil, nil, Optimizer{})
	benchFit(b, m)
}

func BenchmarkOnlineSoftmax(b *testing.B) {
	m, _ := NewLinear(16, 4, nil, nil, Optimizer{})
	benchFit(b, m)
}

// BenchmarkOnlineMLP: 16 features, 32 hidden units, 2 classes.
func BenchmarkOnlineMLP(b *testing.B) {
	m, _ := NewMLP(16, 32, 2, nil, nil, nil, nil, Optimizer{}, 1)
	benchFit(b, m)
}
