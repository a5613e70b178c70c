package learn

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/outpost-edge/outpost/models/goengine"
)

// TestExportMatchesTheLearner: the exported ONNX graph, run by the
// pure-Go engine the agent uses, gives what the learner predicts.
func TestExportMatchesTheLearner(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 5))
	for _, c := range []struct {
		name    string
		classes int
		m       func() Model
	}{
		{"logistic", 2, func() Model { m, _ := NewLinear(4, 2, nil, nil, Optimizer{}); return m }},
		{"softmax", 3, func() Model { m, _ := NewLinear(4, 3, nil, nil, Optimizer{}); return m }},
		{"mlp", 2, func() Model { m, _ := NewMLP(4, 8, 2, nil, nil, nil, nil, Optimizer{}, 3); return m }},
		{"mlp-softmax", 3, func() Model { m, _ := NewMLP(4, 8, 3, nil, nil, nil, nil, Optimizer{}, 3); return m }},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := c.m()
			xs, ys := separable(rng, 640, 4, c.classes)
			train(t, m, xs, ys, 2)
			data, err := Export(m)
			if err != nil {
				t.Fatal(err)
			}
			eng, err := goengine.Load(data)
			if err != nil {
				t.Fatal(err)
			}
			// Warm start: the model read back predicts what the learner did.
			back, err := FromONNX(data, Optimizer{})
			if err != nil {
				t.Fatal(err)
			}
			for _, x := range xs[:50] {
				in := []float32{float32(x[0]), float32(x[1]), float32(x[2]), float32(x[3])}
				out, err := eng.Run(in, 4)
				if err != nil {
					t.Fatal(err)
				}
				p := m.Predict(x)
				want := p
				if c.classes == 2 {
					want = p[1:] // one score: the positive class
				}
				for j := range out {
					if math.Abs(float64(out[j])-want[j]) > 1e-5 {
						t.Fatalf("exported %v, learner %v", out, want)
					}
				}
				for j, v := range back.Predict(x) {
					if math.Abs(v-p[j]) > 1e-5 {
						t.Fatalf("warm-started %v, learner %v", back.Predict(x), p)
					}
				}
			}
		})
	}
}
