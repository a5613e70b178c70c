package drift

import "math"

// ADWIN is the adaptive windowing change detector (Bifet & Gavaldà, 2007):
// it keeps a window of recent values in exponential-histogram buckets
// (O(log W) memory) and drops its older part whenever the means of the two
// parts differ by more than the Hoeffding/Bernstein bound for confidence
// Delta allows. Feed it an error stream (1 for a wrong prediction).
type ADWIN struct {
	Delta float64 // confidence; smaller means fewer false alarms and later detections
	// MaxBuckets per level and Clock (updates between checks) trade
	// precision for speed, as in the reference implementation.
	MaxBuckets, Clock int

	rows     [][]bucket // rows[i] holds buckets of 2^i values, oldest first
	width    int64
	total    float64
	variance float64 // sum of squared deviations over the window
	t        int
}

type bucket struct{ total, variance float64 }

// NewADWIN is ADWIN with the usual settings: delta 0.002, 5 buckets per
// level, a check every 32 values.
func NewADWIN(delta float64) *ADWIN {
	return &ADWIN{Delta: delta, MaxBuckets: 5, Clock: 32}
}

// Mean is the mean of the current window.
func (a *ADWIN) Mean() float64 {
	if a.width == 0 {
		return 0
	}
	return a.total / float64(a.width)
}

// Width is how many values the window holds.
func (a *ADWIN) Width() int64 { return a.width }

// Update adds x and reports whether a change was detected (the window
// then holds only what came after it).
func (a *ADWIN) Update(x float64) bool {
	if a.width > 0 {
		d := x - a.total/float64(a.width)
		a.variance += float64(a.width) * d * d / float64(a.width+1)
	}
	a.width++
	a.total += x
	if len(a.rows) == 0 {
		a.rows = append(a.rows, nil)
	}
	a.rows[0] = append(a.rows[0], bucket{total: x})
	a.compress()
	a.t++
	if a.t%a.Clock != 0 || a.width < 10 {
		return false
	}
	return a.detect()
}

// compress merges the two oldest buckets of any level that is over
// MaxBuckets into one of the next level.
func (a *ADWIN) compress() {
	for i := 0; i < len(a.rows); i++ {
		if len(a.rows[i]) <= a.MaxBuckets {
			return
		}
		b1, b2 := a.rows[i][0], a.rows[i][1]
		n := math.Ldexp(1, i)
		d := b1.total/n - b2.total/n
		merged := bucket{total: b1.total + b2.total, variance: b1.variance + b2.variance + n*n*d*d/(2*n)}
		a.rows[i] = append(a.rows[i][:0], a.rows[i][2:]...)
		if i+1 == len(a.rows) {
			a.rows = append(a.rows, nil)
		}
		a.rows[i+1] = append(a.rows[i+1], merged)
	}
}

// detect looks for a split of the window into an older and a newer part
// whose means differ significantly, dropping the oldest bucket until none.
func (a *ADWIN) detect() bool {
	changed := false
	for a.width > 10 {
		if !a.cutExists() {
			break
		}
		a.dropOldest()
		changed = true
	}
	return changed
}

func (a *ADWIN) cutExists() bool {
	v := a.variance / float64(a.width)
	dd := math.Log(2 * math.Log(float64(a.width)) / a.Delta)
	var n0, s0 float64
	n1, s1 := float64(a.width), a.total
	for i := len(a.rows) - 1; i >= 0; i-- {
		size := math.Ldexp(1, i)
		for _, b := range a.rows[i] {
			n0, s0 = n0+size, s0+b.total
			n1, s1 = n1-size, s1-b.total
			if n1 < 5 {
				return false
			}
			if n0 < 5 {
				continue
			}
			m := 1 / (1/n0 + 1/n1)
			eps := math.Sqrt(2/m*v*dd) + 2/(3*m)*dd
			if math.Abs(s0/n0-s1/n1) > eps {
				return true
			}
		}
	}
	return false
}

// dropOldest removes the oldest bucket from the window.
func (a *ADWIN) dropOldest() {
	i := len(a.rows) - 1
	for i > 0 && len(a.rows[i]) == 0 {
		i--
	}
	b := a.rows[i][0]
	a.rows[i] = a.rows[i][1:]
	n := math.Ldexp(1, i)
	rest := float64(a.width) - n
	if rest <= 0 {
		a.width, a.total, a.variance = 0, 0, 0
		return
	}
	d := b.total/n - (a.total-b.total)/rest
	a.variance -= b.variance + n*rest*d*d/(n+rest)
	a.variance = math.Max(a.variance, 0)
	a.width -= int64(n)
	a.total -= b.total
	for len(a.rows) > 1 && len(a.rows[len(a.rows)-1]) == 0 {
		a.rows = a.rows[:len(a.rows)-1]
	}
}

// PageHinkley detects an increase in the mean of a stream (an error rate
// going up): it accumulates how far values sit above their running mean
// (less a tolerated Delta) and signals when that sum rises more than
// Threshold above its lowest point.
type PageHinkley struct {
	Delta, Threshold float64
	// Alpha fades the sum (1: no fading); MinInstances are seen before
	// any detection.
	Alpha        float64
	MinInstances int

	n             int
	mean, sum, lo float64
}

// NewPageHinkley is Page-Hinkley with delta 0.005, threshold 50, alpha
// 0.9999 and 30 values before the first detection.
func NewPageHinkley() *PageHinkley {
	return &PageHinkley{Delta: 0.005, Threshold: 50, Alpha: 0.9999, MinInstances: 30}
}

// Update adds x and reports a detected increase; the detector then starts
// afresh.
func (p *PageHinkley) Update(x float64) bool {
	p.n++
	p.mean += (x - p.mean) / float64(p.n)
	p.sum = p.Alpha*p.sum + (x - p.mean - p.Delta)
	p.lo = math.Min(p.lo, p.sum)
	if p.n >= p.MinInstances && p.sum-p.lo > p.Threshold {
		*p = PageHinkley{Delta: p.Delta, Threshold: p.Threshold, Alpha: p.Alpha, MinInstances: p.MinInstances}
		return true
	}
	return false
}
