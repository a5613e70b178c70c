// Package learn holds the hub's online learners: logistic and softmax
// regression and a one-hidden-layer MLP, trained by mini-batch SGD or Adam
// and warm-started from a production model's weights. The matrix products
// run on gorgonia's tensor package (gorgonia.org/tensor, over gonum's
// BLAS) with the gradients in closed form: gorgonia's graph machine costs
// more per operation than these small models cost to train (a tape-machine
// prototype ran 119k samples/s, against 300k needed).
package learn

import (
	"errors"
	"fmt"
	"math"

	"gorgonia.org/tensor"
)

// ErrShape means a batch or a weight set does not fit the model.
var ErrShape = errors.New("learn: shape mismatch")

// Optimizer settings.
type Optimizer struct {
	Kind         string  // "sgd" or "adam" (default)
	LearningRate float64 // default 0.05 for sgd, 0.01 for adam
	L2           float64 // weight decay
}

func (o Optimizer) rate() float64 {
	switch {
	case o.LearningRate > 0:
		return o.LearningRate
	case o.Kind == "sgd":
		return 0.05
	default:
		return 0.01
	}
}

// param is one weight tensor with its gradient and Adam moments.
type param struct {
	w, g *tensor.Dense
	m, v []float64
	rows int
	cols int
}

func newParam(rows, cols int, init []float64) *param {
	back := make([]float64, rows*cols)
	copy(back, init)
	return &param{
		w: tensor.New(tensor.WithShape(rows, cols), tensor.WithBacking(back)),
		g: tensor.New(tensor.WithShape(rows, cols), tensor.WithBacking(make([]float64, rows*cols))),
		m: make([]float64, rows*cols), v: make([]float64, rows*cols), rows: rows, cols: cols,
	}
}

func (p *param) data() []float64 { return p.w.Data().([]float64) }
func (p *param) grad() []float64 { return p.g.Data().([]float64) }

// step applies the gradient held in p.g.
func (p *param) step(o Optimizer, t int) {
	w, g, lr := p.data(), p.grad(), o.rate()
	if o.Kind == "sgd" {
		for i := range w {
			w[i] -= lr * (g[i] + o.L2*w[i])
		}
		return
	}
	const b1, b2, eps = 0.9, 0.999, 1e-8
	c1, c2 := 1-math.Pow(b1, float64(t)), 1-math.Pow(b2, float64(t))
	for i := range w {
		gi := g[i] + o.L2*w[i]
		p.m[i] = b1*p.m[i] + (1-b1)*gi
		p.v[i] = b2*p.v[i] + (1-b2)*gi*gi
		w[i] -= lr * (p.m[i] / c1) / (math.Sqrt(p.v[i]/c2) + eps)
	}
}

// batch holds one mini-batch as X (B×D) and its transpose (D×B), so the
// weight gradient Xᵀ·G is one product without a transposed view.
type batch struct {
	x, xt *tensor.Dense
	n, d  int
}

func newBatch(n, d int) *batch {
	return &batch{
		x:  tensor.New(tensor.WithShape(n, d), tensor.WithBacking(make([]float64, n*d))),
		xt: tensor.New(tensor.WithShape(d, n), tensor.WithBacking(make([]float64, n*d))),
		n:  n, d: d,
	}
}

func (b *batch) fill(rows [][]float64) error {
	x, xt := b.x.Data().([]float64), b.xt.Data().([]float64)
	for i, r := range rows {
		if len(r) != b.d {
			return fmt.Errorf("%w: row of %d features, model takes %d", ErrShape, len(r), b.d)
		}
		copy(x[i*b.d:], r)
		for j, v := range r {
			xt[j*b.n+i] = v
		}
	}
	return nil
}

func dense(rows, cols int) *tensor.Dense {
	return tensor.New(tensor.WithShape(rows, cols), tensor.WithBacking(make([]float64, rows*cols)))
}

// Model is an online classifier: Fit takes one mini-batch of feature rows
// and class labels (0..Classes-1) and returns the batch's mean loss;
// Predict gives each row's class probabilities.
type Model interface {
	Fit(x [][]float64, y []int) (float64, error)
	Predict(x []float64) []float64
	Classes() int
	Clone() Model
}

func sigmoid(z float64) float64 { return 1 / (1 + math.Exp(-z)) }

// softmaxRow turns logits into probabilities in place.
func softmaxRow(z []float64) {
	m := z[0]
	for _, v := range z[1:] {
		m = max(m, v)
	}
	var s float64
	for i, v := range z {
		z[i] = math.Exp(v - m)
		s += z[i]
	}
	for i := range z {
		z[i] /= s
	}
}

// outputs turns logits (B×K) into probabilities and the loss gradient
// (P−Y)/B in place, returning the mean cross-entropy. K = 1 is binary
// with a sigmoid; K > 1 is softmax.
func outputs(z []float64, y []int, k int) (float64, error) {
	n := len(y)
	var loss float64
	for i := 0; i < n; i++ {
		row := z[i*k : (i+1)*k]
		if y[i] < 0 || y[i] >= max(k, 2) {
			return 0, fmt.Errorf("%w: label %d for %d classes", ErrShape, y[i], max(k, 2))
		}
		if k == 1 {
			p := sigmoid(row[0])
			t := float64(y[i])
			loss -= t*math.Log(p+1e-12) + (1-t)*math.Log(1-p+1e-12)
			row[0] = (p - t) / float64(n)
			continue
		}
		softmaxRow(row)
		loss -= math.Log(row[y[i]] + 1e-12)
		row[y[i]]--
		for j := range row {
			row[j] /= float64(n)
		}
	}
	return loss / float64(n), nil
}

// probs maps logits to class probabilities for one row.
func probs(z []float64) []float64 {
	if len(z) == 1 {
		p := sigmoid(z[0])
		return []float64{1 - p, p}
	}
	out := append([]float64(nil), z...)
	softmaxRow(out)
	return out
}
