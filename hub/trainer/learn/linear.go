package learn

import (
	"fmt"

	"gorgonia.org/tensor"
)

// Linear is logistic regression (2 classes, one sigmoid output) or
// softmax regression (K > 2 classes): Z = X·W + b.
type Linear struct {
	opt     Optimizer
	w, b    *param // D×K, 1×K
	k, d, t int
	bt      *batch
	z, ones *tensor.Dense
}

// NewLinear makes a linear classifier over d features for classes ≥ 2
// classes. w (d×k, row-major; k = 1 for 2 classes) and b warm-start it
// from a production model; nil starts at zero.
func NewLinear(d, classes int, w, b []float64, opt Optimizer) (*Linear, error) {
	k := classes
	if classes == 2 {
		k = 1
	}
	if d < 1 || classes < 2 || (w != nil && len(w) != d*k) || (b != nil && len(b) != k) {
		return nil, fmt.Errorf("%w: linear %d features, %d classes, %d weights, %d biases", ErrShape, d, classes, len(w), len(b))
	}
	return &Linear{opt: opt, w: newParam(d, k, w), b: newParam(1, k, b), k: k, d: d}, nil
}

// Classes is the number of classes.
func (l *Linear) Classes() int { return max(l.k, 2) }

// Weights returns W (d×k, row-major) and b, for ONNX export.
func (l *Linear) Weights() (w, b []float64) {
	return append([]float64(nil), l.w.data()...), append([]float64(nil), l.b.data()...)
}

func (l *Linear) ensure(n int) {
	if l.bt == nil || l.bt.n != n {
		l.bt = newBatch(n, l.d)
		l.z = dense(n, l.k)
		ones := make([]float64, n)
		for i := range ones {
			ones[i] = 1
		}
		l.ones = tensor.New(tensor.WithShape(1, n), tensor.WithBacking(ones))
	}
}

// Fit takes one gradient step on the batch.
func (l *Linear) Fit(x [][]float64, y []int) (float64, error) {
	if len(x) == 0 || len(x) != len(y) {
		return 0, fmt.Errorf("%w: %d rows, %d labels", ErrShape, len(x), len(y))
	}
	l.ensure(len(x))
	if err := l.bt.fill(x); err != nil {
		return 0, err
	}
	// Z = X·W + b
	if _, err := l.bt.x.MatMul(l.w.w, tensor.WithReuse(l.z)); err != nil {
		return 0, err
	}
	z, b := l.z.Data().([]float64), l.b.data()
	for i := range len(x) {
		for c := 0; c < l.k; c++ {
			z[i*l.k+c] += b[c]
		}
	}
	loss, err := outputs(z, y, l.k)
	if err != nil {
		return 0, err
	}
	// dW = Xᵀ·G, db = 1ᵀ·G
	if _, err := l.bt.xt.MatMul(l.z, tensor.WithReuse(l.w.g)); err != nil {
		return 0, err
	}
	if _, err := l.ones.MatMul(l.z, tensor.WithReuse(l.b.g)); err != nil {
		return 0, err
	}
	l.t++
	l.w.step(l.opt, l.t)
	l.b.step(l.opt, l.t)
	return loss, nil
}

// Predict gives the class probabilities of one row.
func (l *Linear) Predict(x []float64) []float64 {
	w, b := l.w.data(), l.b.data()
	z := append([]float64(nil), b...)
	for j, v := range x {
		for c := 0; c < l.k; c++ {
			z[c] += v * w[j*l.k+c]
		}
	}
	return probs(z)
}

// Clone is an independent copy with the same weights and optimizer
// settings (fresh optimizer state).
func (l *Linear) Clone() Model {
	w, b := l.Weights()
	c, _ := NewLinear(l.d, l.Classes(), w, b, l.opt)
	return c
}
