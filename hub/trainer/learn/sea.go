package learn

import "math/rand/v2"

// SEAThresholds are the four concepts of the SEA benchmark (Street and
// Kim, 2001): a point of three features in [0, 10) is positive when
// f1 + f2 ≤ θ; the third feature is noise.
var SEAThresholds = []float64{8, 9, 7, 9.5}

// SEA generates perConcept samples of each concept in turn, with noise
// (a share of flipped labels), from seed. Features are scaled to [0, 1).
func SEA(seed uint64, perConcept int, noise float64) ([][]float64, []int) {
	rng := rand.New(rand.NewPCG(seed, 0x5ea))
	var xs [][]float64
	var ys []int
	for _, theta := range SEAThresholds {
		for i := 0; i < perConcept; i++ {
			f := []float64{rng.Float64() * 10, rng.Float64() * 10, rng.Float64() * 10}
			y := 0
			if f[0]+f[1] <= theta {
				y = 1
			}
			if rng.Float64() < noise {
				y = 1 - y
			}
			xs = append(xs, []float64{f[0] / 10, f[1] / 10, f[2] / 10})
			ys = append(ys, y)
		}
	}
	return xs, ys
}

// Replay keeps a uniform sample (reservoir) of the rows seen since its
// last Reset, mixed into each training batch so a model updated on the
// newest rows does not forget the rest of the current concept.
type Replay struct {
	rng  *rand.Rand
	cap  int
	seen int
	x    [][]float64
	y    []int
}

// NewReplay makes a buffer of capacity rows.
func NewReplay(capacity int, seed uint64) *Replay {
	return &Replay{rng: rand.New(rand.NewPCG(seed, 0x7e1)), cap: capacity}
}

// Add offers one row to the reservoir.
func (r *Replay) Add(x []float64, y int) {
	r.seen++
	if len(r.x) < r.cap {
		r.x, r.y = append(r.x, x), append(r.y, y)
		return
	}
	if j := r.rng.IntN(r.seen); j < r.cap {
		r.x[j], r.y[j] = x, y
	}
}

// Mix returns the batch with n rows drawn from the reservoir appended.
func (r *Replay) Mix(x [][]float64, y []int, n int) ([][]float64, []int) {
	if len(r.x) == 0 {
		return x, y
	}
	x, y = append([][]float64(nil), x...), append([]int(nil), y...)
	for range n {
		j := r.rng.IntN(len(r.x))
		x, y = append(x, r.x[j]), append(y, r.y[j])
	}
	return x, y
}

// Reset forgets everything: after a drift the old concept's rows teach
// the wrong thing.
func (r *Replay) Reset() { r.x, r.y, r.seen = r.x[:0], r.y[:0], 0 }

// Len is the number of rows held.
func (r *Replay) Len() int { return len(r.x) }

// Prequential is test-then-train accuracy: every row is predicted before
// the model learns from it. Recent is the accuracy over a sliding window.
type Prequential struct {
	Seen, Correct int
	window        []bool
	next, inWin   int
	okInWin       int
}

// NewPrequential keeps a recent window of w rows beside the running total.
func NewPrequential(w int) *Prequential { return &Prequential{window: make([]bool, w)} }

// Add records one prediction's outcome.
func (p *Prequential) Add(correct bool) {
	p.Seen++
	if correct {
		p.Correct++
	}
	if p.inWin == len(p.window) {
		if p.window[p.next] {
			p.okInWin--
		}
	} else {
		p.inWin++
	}
	p.window[p.next] = correct
	if correct {
		p.okInWin++
	}
	p.next = (p.next + 1) % len(p.window)
}

// Accuracy is the share of rows predicted right so far.
func (p *Prequential) Accuracy() float64 {
	if p.Seen == 0 {
		return 0
	}
	return float64(p.Correct) / float64(p.Seen)
}

// Recent is the accuracy over the window.
func (p *Prequential) Recent() float64 {
	if p.inWin == 0 {
		return 0
	}
	return float64(p.okInWin) / float64(p.inWin)
}

// Argmax is the predicted class of a probability vector.
func Argmax(p []float64) int {
	best := 0
	for c := range p {
		if p[c] > p[best] {
			best = c
		}
	}
	return best
}
