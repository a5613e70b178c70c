package learn

import (
	"fmt"
	"math/rand/v2"

	"gorgonia.org/tensor"
)

// MLP is a classifier with one ReLU hidden layer:
// Z = relu(X·W1 + b1)·W2 + b2, sigmoid (2 classes) or softmax outputs.
type MLP struct {
	opt            Optimizer
	w1, b1, w2, b2 *param
	d, h, k, t     int
	bt             *batch
	hid, hidT, z   *tensor.Dense // B×H, H×B, B×K
	dh, ones       *tensor.Dense
	w2t            *tensor.Dense
}

// NewMLP makes an MLP over d features with h hidden units. Weights (w1
// d×h, b1 h, w2 h×k, b2 k; k = 1 for 2 classes) warm-start it; nil
// initialises them randomly from seed.
func NewMLP(d, h, classes int, w1, b1, w2, b2 []float64, opt Optimizer, seed uint64) (*MLP, error) {
	k := classes
	if classes == 2 {
		k = 1
	}
	if d < 1 || h < 1 || classes < 2 {
		return nil, fmt.Errorf("%w: mlp %d-%d-%d", ErrShape, d, h, classes)
	}
	if w1 == nil {
		rng := rand.New(rand.NewPCG(seed, 1))
		w1, w2 = make([]float64, d*h), make([]float64, h*k)
		for i := range w1 {
			w1[i] = rng.NormFloat64() * 0.5 / float64(d)
		}
		for i := range w2 {
			w2[i] = rng.NormFloat64() * 0.5 / float64(h)
		}
		b1 = make([]float64, h)
		for i := range b1 {
			b1[i] = 0.01
		}
	}
	if len(w1) != d*h || len(b1) != h || len(w2) != h*k || (b2 != nil && len(b2) != k) {
		return nil, fmt.Errorf("%w: mlp %d-%d-%d weights", ErrShape, d, h, classes)
	}
	return &MLP{opt: opt, w1: newParam(d, h, w1), b1: newParam(1, h, b1), w2: newParam(h, k, w2), b2: newParam(1, k, b2), d: d, h: h, k: k}, nil
}

// Classes is the number of classes.
func (m *MLP) Classes() int { return max(m.k, 2) }

// Weights returns w1, b1, w2, b2 (row-major), for ONNX export.
func (m *MLP) Weights() (w1, b1, w2, b2 []float64) {
	cp := func(p *param) []float64 { return append([]float64(nil), p.data()...) }
	return cp(m.w1), cp(m.b1), cp(m.w2), cp(m.b2)
}

func (m *MLP) ensure(n int) {
	if m.bt != nil && m.bt.n == n {
		return
	}
	m.bt = newBatch(n, m.d)
	m.hid, m.hidT, m.z, m.dh = dense(n, m.h), dense(m.h, n), dense(n, m.k), dense(n, m.h)
	m.w2t = dense(m.k, m.h)
	ones := make([]float64, n)
	for i := range ones {
		ones[i] = 1
	}
	m.ones = tensor.New(tensor.WithShape(1, n), tensor.WithBacking(ones))
}

// Fit takes one gradient step on the batch.
func (m *MLP) Fit(x [][]float64, y []int) (float64, error) {
	if len(x) == 0 || len(x) != len(y) {
		return 0, fmt.Errorf("%w: %d rows, %d labels", ErrShape, len(x), len(y))
	}
	n := len(x)
	m.ensure(n)
	if err := m.bt.fill(x); err != nil {
		return 0, err
	}
	// Forward: H = relu(X·W1 + b1), Z = H·W2 + b2.
	if _, err := m.bt.x.MatMul(m.w1.w, tensor.WithReuse(m.hid)); err != nil {
		return 0, err
	}
	hid, hidT, b1 := m.hid.Data().([]float64), m.hidT.Data().([]float64), m.b1.data()
	for i := 0; i < n; i++ {
		for j := 0; j < m.h; j++ {
			v := max(hid[i*m.h+j]+b1[j], 0)
			hid[i*m.h+j], hidT[j*n+i] = v, v
		}
	}
	if _, err := m.hid.MatMul(m.w2.w, tensor.WithReuse(m.z)); err != nil {
		return 0, err
	}
	z, b2 := m.z.Data().([]float64), m.b2.data()
	for i := 0; i < n; i++ {
		for c := 0; c < m.k; c++ {
			z[i*m.k+c] += b2[c]
		}
	}
	loss, err := outputs(z, y, m.k)
	if err != nil {
		return 0, err
	}
	// Backward: dW2 = Hᵀ·G, db2 = 1ᵀ·G, dH = G·W2ᵀ ⊙ [H > 0],
	// dW1 = Xᵀ·dH, db1 = 1ᵀ·dH.
	if _, err := m.hidT.MatMul(m.z, tensor.WithReuse(m.w2.g)); err != nil {
		return 0, err
	}
	if _, err := m.ones.MatMul(m.z, tensor.WithReuse(m.b2.g)); err != nil {
		return 0, err
	}
	w2, w2t := m.w2.data(), m.w2t.Data().([]float64)
	for j := 0; j < m.h; j++ {
		for c := 0; c < m.k; c++ {
			w2t[c*m.h+j] = w2[j*m.k+c]
		}
	}
	if _, err := m.z.MatMul(m.w2t, tensor.WithReuse(m.dh)); err != nil {
		return 0, err
	}
	dh := m.dh.Data().([]float64)
	for i := range dh {
		if hid[i] <= 0 {
			dh[i] = 0
		}
	}
	if _, err := m.bt.xt.MatMul(m.dh, tensor.WithReuse(m.w1.g)); err != nil {
		return 0, err
	}
	if _, err := m.ones.MatMul(m.dh, tensor.WithReuse(m.b1.g)); err != nil {
		return 0, err
	}
	m.t++
	for _, p := range []*param{m.w1, m.b1, m.w2, m.b2} {
		p.step(m.opt, m.t)
	}
	return loss, nil
}

// Predict gives the class probabilities of one row.
func (m *MLP) Predict(x []float64) []float64 {
	w1, b1, w2, b2 := m.w1.data(), m.b1.data(), m.w2.data(), m.b2.data()
	hid := append([]float64(nil), b1...)
	for j, v := range x {
		for u := 0; u < m.h; u++ {
			hid[u] += v * w1[j*m.h+u]
		}
	}
	z := append([]float64(nil), b2...)
	for u, hv := range hid {
		if hv <= 0 {
			continue
		}
		for c := 0; c < m.k; c++ {
			z[c] += hv * w2[u*m.k+c]
		}
	}
	return probs(z)
}

// Clone is an independent copy with the same weights and optimizer
// settings (fresh optimizer state).
func (m *MLP) Clone() Model {
	w1, b1, w2, b2 := m.Weights()
	c, _ := NewMLP(m.d, m.h, m.Classes(), w1, b1, w2, b2, m.opt, 0)
	return c
}
