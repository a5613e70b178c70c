package learn

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/outpost-edge/outpost/models/goengine"
)

// normalRows lie near a 2-D plane inside 6-D space; anomalies do not.
func normalRows(rng *rand.Rand, n int, anomaly bool) [][]float64 {
	out := make([][]float64, n)
	for i := range out {
		a, b := rng.NormFloat64(), rng.NormFloat64()
		x := []float64{a, b, a + b, a - b, 0.5 * a, -b}
		for j := range x {
			x[j] += rng.NormFloat64() * 0.05
			if anomaly {
				x[j] = rng.NormFloat64() * 2
			}
		}
		out[i] = x
	}
	return out
}

func TestAutoencoderScoresAnomaliesHigher(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	a, err := NewAutoencoder(6, 3, nil, nil, nil, nil, 0, Optimizer{LearningRate: 0.01}, 1)
	if err != nil {
		t.Fatal(err)
	}
	train := normalRows(rng, 4096, false)
	for e := 0; e < 30; e++ {
		for i := 0; i+32 <= len(train); i += 32 {
			if _, err := a.Fit(train[i:i+32], nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	mean := func(rows [][]float64) float64 {
		var s float64
		for _, r := range rows {
			s += a.Score(r)
		}
		return s / float64(len(rows))
	}
	normal, anomalous := mean(normalRows(rng, 500, false)), mean(normalRows(rng, 500, true))
	if anomalous < 5*normal {
		t.Fatalf("mean score normal %.4f, anomalous %.4f: want anomalies 5× higher", normal, anomalous)
	}
	a.Threshold = 3 * normal
	if p := a.Predict(normalRows(rng, 1, true)[0]); p[1] != 1 {
		t.Fatalf("an anomaly predicted %v", p)
	}

	// Export: the ONNX autoencoder's score is the learner's; warm start reads it back.
	data, err := Export(a)
	if err != nil {
		t.Fatal(err)
	}
	eng, err := goengine.Load(data)
	if err != nil {
		t.Fatal(err)
	}
	back, err := FromPackage(a.Threshold, data, Optimizer{})
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range normalRows(rng, 20, true) {
		in := make([]float32, len(x))
		for i, v := range x {
			in[i] = float32(v)
		}
		out, err := eng.Run(in, len(in))
		if err != nil {
			t.Fatal(err)
		}
		if s := a.Score(x); math.Abs(float64(out[0])-s) > 1e-4*max(1, s) {
			t.Fatalf("exported score %v, learner %v", out[0], s)
		}
		if back.(*Autoencoder).Score(x) != a.Score(x) && math.Abs(back.(*Autoencoder).Score(x)-a.Score(x)) > 1e-5 {
			t.Fatalf("warm start score %v, learner %v", back.(*Autoencoder).Score(x), a.Score(x))
		}
	}
}

// BenchmarkOnlineAutoencoder: 16-8-16, batch 32, one core.
func BenchmarkOnlineAutoencoder(b *testing.B) {
	m, _ := NewAutoencoder(16, 8, nil, nil, nil, nil, 1, Optimizer{}, 1)
	benchFit(b, m)
}
