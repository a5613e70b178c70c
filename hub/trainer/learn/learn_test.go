package learn

import (
	"math"
	"math/rand/v2"
	"testing"
)

// separable draws points whose class is which side of a hyperplane they
// lie on (classes 2) or the nearest of k centres.
func separable(rng *rand.Rand, n, d, classes int) ([][]float64, []int) {
	xs, ys := make([][]float64, n), make([]int, n)
	for i := range xs {
		x := make([]float64, d)
		for j := range x {
			x[j] = rng.Float64()*2 - 1
		}
		xs[i] = x
		if classes == 2 {
			if x[0]+0.5*x[1] > 0.1 {
				ys[i] = 1
			}
			continue
		}
		ys[i] = int(math.Floor((x[0] + 1) / 2 * float64(classes)))
		ys[i] = min(ys[i], classes-1)
	}
	return xs, ys
}

func accuracy(m Model, xs [][]float64, ys []int) float64 {
	ok := 0
	for i, x := range xs {
		p := m.Predict(x)
		best := 0
		for c := range p {
			if p[c] > p[best] {
				best = c
			}
		}
		if best == ys[i] {
			ok++
		}
	}
	return float64(ok) / float64(len(xs))
}

func train(t *testing.T, m Model, xs [][]float64, ys []int, epochs int) {
	t.Helper()
	for e := 0; e < epochs; e++ {
		for i := 0; i+32 <= len(xs); i += 32 {
			if _, err := m.Fit(xs[i:i+32], ys[i:i+32]); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func TestModelsLearn(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	for _, c := range []struct {
		name    string
		classes int
		make    func() (Model, error)
		want    float64
	}{
		{"logistic/adam", 2, func() (Model, error) { return NewLinear(4, 2, nil, nil, Optimizer{}) }, 0.95},
		{"logistic/sgd", 2, func() (Model, error) { return NewLinear(4, 2, nil, nil, Optimizer{Kind: "sgd", LearningRate: 0.5}) }, 0.95},
		{"softmax/adam", 3, func() (Model, error) { return NewLinear(4, 3, nil, nil, Optimizer{LearningRate: 0.05}) }, 0.9},
		{"mlp/adam", 2, func() (Model, error) { return NewMLP(4, 16, 2, nil, nil, nil, nil, Optimizer{LearningRate: 0.02}, 1) }, 0.95},
		{"mlp-softmax/adam", 3, func() (Model, error) {
			return NewMLP(4, 16, 3, nil, nil, nil, nil, Optimizer{LearningRate: 0.02}, 1)
		}, 0.9},
	} {
		t.Run(c.name, func(t *testing.T) {
			m, err := c.make()
			if err != nil {
				t.Fatal(err)
			}
			xs, ys := separable(rng, 4096, 4, c.classes)
			test, tys := separable(rng, 1000, 4, c.classes)
			before := accuracy(m, test, tys)
			train(t, m, xs, ys, 5)
			after := accuracy(m, test, tys)
			if after < c.want {
				t.Fatalf("accuracy %.3f after training (%.3f before), want ≥ %.2f", after, before, c.want)
			}
		})
	}
}

// TestWarmStartKeepsTheModel: a model warm-started from weights predicts
// what those weights say before any step.
func TestWarmStartKeepsTheModel(t *testing.T) {
	l, err := NewLinear(2, 2, []float64{2, -1}, []float64{0.5}, Optimizer{})
	if err != nil {
		t.Fatal(err)
	}
	p := l.Predict([]float64{1, 1})
	want := 1 / (1 + math.Exp(-(2 - 1 + 0.5)))
	if math.Abs(p[1]-want) > 1e-12 {
		t.Fatalf("p = %v, want %v", p[1], want)
	}
	if _, err := NewLinear(2, 2, []float64{1}, nil, Optimizer{}); err == nil {
		t.Fatal("wrong weight count accepted")
	}
	if _, err := l.Fit([][]float64{{1, 2, 3}}, []int{1}); err == nil {
		t.Fatal("a row of the wrong width accepted")
	}
	if _, err := l.Fit([][]float64{{1, 2}}, []int{2}); err == nil {
		t.Fatal("a label out of range accepted")
	}
}

// TestGradientsMatchFiniteDifferences checks the closed-form gradients.
func TestGradientsMatchFiniteDifferences(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 3))
	xs, ys := separable(rng, 8, 3, 3)
	m, _ := NewMLP(3, 4, 3, nil, nil, nil, nil, Optimizer{Kind: "sgd"}, 9)
	loss := func() float64 {
		var l float64
		for i, x := range xs {
			l -= math.Log(m.Predict(x)[ys[i]])
		}
		return l / float64(len(xs))
	}
	params := []*param{m.w1, m.b1, m.w2, m.b2}
	var saved [][]float64
	for _, p := range params {
		saved = append(saved, append([]float64(nil), p.data()...))
	}
	if _, err := m.Fit(xs, ys); err != nil {
		t.Fatal(err)
	}
	for i, p := range params { // back to where the gradients were taken
		copy(p.data(), saved[i])
	}
	for pi, p := range params {
		w, g := p.data(), p.grad()
		for i := range w {
			const h = 1e-6
			orig := w[i]
			w[i] = orig + h
			up := loss()
			w[i] = orig - h
			down := loss()
			w[i] = orig
			if num := (up - down) / (2 * h); math.Abs(num-g[i]) > 1e-5 {
				t.Fatalf("param %d [%d]: gradient %g, finite difference %g", pi, i, g[i], num)
			}
		}
	}
}
