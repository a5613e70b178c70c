package learn

import (
	"fmt"
	"math/rand/v2"

	"gorgonia.org/tensor"

	"github.com/outpost-edge/outpost/models/onnx"
)

// Autoencoder is a dense autoencoder for anomaly scores: a row's score is
// its mean squared reconstruction error through relu(X·W1 + b1)·W2 + b2,
// and a row scoring at or above Threshold is anomalous (class 1). It
// learns from normal rows only (class 0), the usual way for anomalies.
type Autoencoder struct {
	opt            Optimizer
	w1, b1, w2, b2 *param // d×h, 1×h, h×d, 1×d
	d, h, t        int
	Threshold      float64
	bt             *batch
	hid, hidT, rec *tensor.Dense
	dh, ones, w2t  *tensor.Dense
}

// NewAutoencoder makes a d-h-d autoencoder; weights warm-start it (nil:
// random from seed).
func NewAutoencoder(d, h int, w1, b1, w2, b2 []float64, threshold float64, opt Optimizer, seed uint64) (*Autoencoder, error) {
	if d < 1 || h < 1 {
		return nil, fmt.Errorf("%w: autoencoder %d-%d-%d", ErrShape, d, h, d)
	}
	if w1 == nil {
		rng := rand.New(rand.NewPCG(seed, 2))
		w1, w2, b1, b2 = make([]float64, d*h), make([]float64, h*d), make([]float64, h), make([]float64, d)
		for i := range w1 {
			w1[i] = rng.NormFloat64() / float64(d)
		}
		for i := range w2 {
			w2[i] = rng.NormFloat64() / float64(h)
		}
	}
	if len(w1) != d*h || len(b1) != h || len(w2) != h*d || len(b2) != d {
		return nil, fmt.Errorf("%w: autoencoder %d-%d-%d weights", ErrShape, d, h, d)
	}
	return &Autoencoder{opt: opt, w1: newParam(d, h, w1), b1: newParam(1, h, b1), w2: newParam(h, d, w2), b2: newParam(1, d, b2),
		d: d, h: h, Threshold: threshold}, nil
}

// Classes is 2: normal and anomalous.
func (a *Autoencoder) Classes() int { return 2 }

// Weights returns w1, b1, w2, b2 (row-major), for ONNX export.
func (a *Autoencoder) Weights() (w1, b1, w2, b2 []float64) {
	cp := func(p *param) []float64 { return append([]float64(nil), p.data()...) }
	return cp(a.w1), cp(a.b1), cp(a.w2), cp(a.b2)
}

// Clone is an independent copy with fresh optimizer state.
func (a *Autoencoder) Clone() Model {
	w1, b1, w2, b2 := a.Weights()
	c, _ := NewAutoencoder(a.d, a.h, w1, b1, w2, b2, a.Threshold, a.opt, 0)
	return c
}

// Score is the row's mean squared reconstruction error.
func (a *Autoencoder) Score(x []float64) float64 {
	w1, b1, w2, b2 := a.w1.data(), a.b1.data(), a.w2.data(), a.b2.data()
	hid := append([]float64(nil), b1...)
	for j, v := range x {
		for u := 0; u < a.h; u++ {
			hid[u] += v * w1[j*a.h+u]
		}
	}
	var s float64
	for o := 0; o < a.d; o++ {
		r := b2[o]
		for u, hv := range hid {
			if hv > 0 {
				r += hv * w2[u*a.d+o]
			}
		}
		s += (r - x[o]) * (r - x[o])
	}
	return s / float64(a.d)
}

// Predict is [1, 0] for a normal row and [0, 1] for an anomalous one.
func (a *Autoencoder) Predict(x []float64) []float64 {
	if a.Score(x) >= a.Threshold {
		return []float64{0, 1}
	}
	return []float64{1, 0}
}

// Fit takes one step on the batch's normal rows (y nil: all rows) and
// returns their mean reconstruction error.
func (a *Autoencoder) Fit(x [][]float64, y []int) (float64, error) {
	var rows [][]float64
	for i, r := range x {
		if y == nil || y[i] == 0 {
			rows = append(rows, r)
		}
	}
	if len(rows) == 0 {
		return 0, nil
	}
	n := len(rows)
	if a.bt == nil || a.bt.n != n {
		a.bt = newBatch(n, a.d)
		a.hid, a.hidT, a.rec, a.dh, a.w2t = dense(n, a.h), dense(a.h, n), dense(n, a.d), dense(n, a.h), dense(a.d, a.h)
		ones := make([]float64, n)
		for i := range ones {
			ones[i] = 1
		}
		a.ones = tensor.New(tensor.WithShape(1, n), tensor.WithBacking(ones))
	}
	if err := a.bt.fill(rows); err != nil {
		return 0, err
	}
	if _, err := a.bt.x.MatMul(a.w1.w, tensor.WithReuse(a.hid)); err != nil {
		return 0, err
	}
	hid, hidT, b1 := a.hid.Data().([]float64), a.hidT.Data().([]float64), a.b1.data()
	for i := 0; i < n; i++ {
		for j := 0; j < a.h; j++ {
			v := max(hid[i*a.h+j]+b1[j], 0)
			hid[i*a.h+j], hidT[j*n+i] = v, v
		}
	}
	if _, err := a.hid.MatMul(a.w2.w, tensor.WithReuse(a.rec)); err != nil {
		return 0, err
	}
	// G = 2(R − X)/(n·d), the gradient of the mean squared error.
	rec, xs, b2 := a.rec.Data().([]float64), a.bt.x.Data().([]float64), a.b2.data()
	var loss float64
	for i := 0; i < n; i++ {
		for o := 0; o < a.d; o++ {
			diff := rec[i*a.d+o] + b2[o] - xs[i*a.d+o]
			loss += diff * diff
			rec[i*a.d+o] = 2 * diff / float64(n*a.d)
		}
	}
	if _, err := a.hidT.MatMul(a.rec, tensor.WithReuse(a.w2.g)); err != nil {
		return 0, err
	}
	if _, err := a.ones.MatMul(a.rec, tensor.WithReuse(a.b2.g)); err != nil {
		return 0, err
	}
	w2, w2t := a.w2.data(), a.w2t.Data().([]float64)
	for u := 0; u < a.h; u++ {
		for o := 0; o < a.d; o++ {
			w2t[o*a.h+u] = w2[u*a.d+o]
		}
	}
	if _, err := a.rec.MatMul(a.w2t, tensor.WithReuse(a.dh)); err != nil {
		return 0, err
	}
	dh := a.dh.Data().([]float64)
	for i := range dh {
		if hid[i] <= 0 {
			dh[i] = 0
		}
	}
	if _, err := a.bt.xt.MatMul(a.dh, tensor.WithReuse(a.w1.g)); err != nil {
		return 0, err
	}
	if _, err := a.ones.MatMul(a.dh, tensor.WithReuse(a.b1.g)); err != nil {
		return 0, err
	}
	a.t++
	for _, p := range []*param{a.w1, a.b1, a.w2, a.b2} {
		p.step(a.opt, a.t)
	}
	return loss / float64(n*a.d), nil
}

func (a *Autoencoder) export() ([]byte, error) {
	w1, b1, w2, b2 := a.Weights()
	return onnx.Autoencoder([]onnx.Dense{dense32(w1, b1, a.d, a.h)}, []onnx.Dense{dense32(w2, b2, a.h, a.d)}, onnx.Relu)
}
