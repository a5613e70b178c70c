package drift

import (
	"fmt"
	"math"
)

// DefaultADWINDelta is ADWIN's confidence when none is given (River's).
const DefaultADWINDelta = 0.002

// River's other ADWIN settings (river.drift.ADWIN 0.26), kept so that
// detections match it: values between checks, buckets per level before
// two merge, the shortest sub-window a cut may leave, and the window's
// length before the first check.
const (
	adwinClock      = 32
	adwinMaxBuckets = 5
	adwinMinWindow  = 5
	adwinGrace      = 10
)

// ADWIN is the adaptive windowing change detector (Bifet & Gavaldà, 2007):
// it keeps a window of recent values in exponential-histogram buckets
// (O(log W) memory) and drops its older part whenever the means of the two
// parts differ by more than the Hoeffding/Bernstein bound for confidence
// delta allows. Feed it an error stream (1 for a wrong prediction).
//
// It follows River's ADWIN: a check every 32 values once more than 10 are
// in the window, sub-windows of at least 5, and after a detection the next
// Update starts from an empty window, so one change is reported once.
// The zero value is ready to use with delta DefaultADWINDelta.
type ADWIN struct {
	delta float64 // 0 until first use in a zero value
	clock int     // values between checks: adwinClock (tests also try 1)

	rows     [][]bucket // rows[i] holds buckets of 2^i values, oldest first
	width    int64
	total    float64
	variance float64 // sum of squared deviations over the window
	tick     int
	detected bool // the last Update reported a change
}

type bucket struct{ total, variance float64 }

// NewADWIN is ADWIN with confidence delta, which must be in (0, 1):
// smaller means fewer false alarms and later detections.
func NewADWIN(delta float64) (*ADWIN, error) {
	if !(delta > 0 && delta < 1) {
		return nil, fmt.Errorf("adwin: delta %g not in (0, 1): %w", delta, ErrParam)
	}
	return &ADWIN{delta: delta, clock: adwinClock}, nil
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

// Reset empties the window, keeping the parameters.
func (a *ADWIN) Reset() { *a = ADWIN{delta: a.delta, clock: a.clock} }

// Update adds x and reports whether a change was detected. The window
// then holds what remained after the cut until the next Update, which
// starts afresh (as River does), so a change is reported once.
func (a *ADWIN) Update(x float64) bool {
	if a.delta == 0 {
		a.delta, a.clock = DefaultADWINDelta, adwinClock
	}
	if a.detected {
		a.Reset()
	}
	a.insert(x)
	a.tick++
	if a.tick%a.clock != 0 || a.width <= adwinGrace {
		return false
	}
	a.detected = a.detect()
	return a.detected
}

// insert adds x to the window and its newest bucket level. The arithmetic
// is in River's order, so that the two agree to the last bit.
func (a *ADWIN) insert(x float64) {
	if len(a.rows) == 0 {
		a.rows = append(a.rows, make([]bucket, 0, adwinMaxBuckets+1))
	}
	a.rows[0] = append(a.rows[0], bucket{total: x})
	a.width++
	if a.width > 1 {
		w := float64(a.width)
		d := x - a.total/(w-1)
		a.variance += (w - 1) * d * d / w
	}
	a.total += x
	a.compress()
}

// compress merges the two oldest buckets of a level that is over
// adwinMaxBuckets into one of the next level, up the levels.
func (a *ADWIN) compress() {
	for i := 0; i < len(a.rows) && len(a.rows[i]) > adwinMaxBuckets; i++ {
		b1, b2 := a.rows[i][0], a.rows[i][1]
		n := math.Ldexp(1, i)
		d := b1.total/n - b2.total/n
		merged := bucket{total: b1.total + b2.total, variance: b1.variance + b2.variance + n*0.5*d*d}
		a.rows[i] = append(a.rows[i][:0], a.rows[i][2:]...)
		if i+1 == len(a.rows) {
			a.rows = append(a.rows, make([]bucket, 0, adwinMaxBuckets+1))
		}
		a.rows[i+1] = append(a.rows[i+1], merged)
	}
}

// detect drops the oldest bucket while some split of the window into an
// older and a newer part has means that differ significantly.
func (a *ADWIN) detect() bool {
	changed := false
	for a.width > 0 && a.cutExists() {
		a.dropOldest()
		changed = true
	}
	return changed
}

// cutExists tries every split between buckets, oldest first, leaving out
// the split after the newest bucket (an empty newer part).
func (a *ADWIN) cutExists() bool {
	w := float64(a.width)
	v := a.variance / w
	dd := math.Log(2 * math.Log(w) / a.delta)
	var n0, u0 float64
	n1, u1 := w, a.total
	for i := len(a.rows) - 1; i >= 0; i-- {
		size := math.Ldexp(1, i)
		for k, b := range a.rows[i] {
			n0, u0 = n0+size, u0+b.total
			n1, u1 = n1-size, u1-b.total
			if i == 0 && k == len(a.rows[i])-1 {
				return false
			}
			if n0 < adwinMinWindow || n1 < adwinMinWindow {
				continue
			}
			// River's bound: each part's length less the shortest
			// sub-window, plus one.
			m := 1/(n0-adwinMinWindow+1) + 1/(n1-adwinMinWindow+1)
			eps := math.Sqrt(2*m*v*dd) + 2.0/3.0*dd*m
			if math.Abs(u0/n0-u1/n1) > eps {
				return true
			}
		}
	}
	return false
}

// dropOldest removes the oldest bucket (the first of the top level) from
// the window.
func (a *ADWIN) dropOldest() {
	top := len(a.rows) - 1
	b := a.rows[top][0]
	a.rows[top] = a.rows[top][1:]
	n := math.Ldexp(1, top)
	a.width -= int64(n)
	a.total -= b.total
	if a.width == 0 {
		a.total, a.variance = 0, 0
	} else {
		w := float64(a.width)
		d := b.total/n - a.total/w
		a.variance -= b.variance + n*w*d*d/(n+w)
	}
	if len(a.rows[top]) == 0 && top > 0 {
		a.rows = a.rows[:top]
	}
}

// Page-Hinkley's settings: River's defaults (river.drift.PageHinkley 0.26).
const (
	phMinInstances = 30     // values seen before any detection
	phDelta        = 0.005  // tolerated rise above the running mean
	phThreshold    = 50     // detection threshold of the cumulative rise
	phAlpha        = 0.9999 // fades the sum (1: no fading)
)

// PageHinkley detects an increase in the mean of a stream (an error rate
// going up): it accumulates how far values sit above their running mean
// (less a tolerated delta of 0.005) and signals when that sum rises more
// than 50 above its lowest point, after at least 30 values. These are
// River's defaults, with mode "up". The zero value is ready to use.
type PageHinkley struct {
	n             int
	mean, sum, lo float64
}

// Reset forgets everything seen.
func (p *PageHinkley) Reset() { *p = PageHinkley{} }

// Update adds x and reports a detected increase; the detector then starts
// afresh.
func (p *PageHinkley) Update(x float64) bool {
	p.n++
	// River's order of operations, so the two agree to the last bit.
	p.mean += 1 / float64(p.n) * (x - p.mean)
	p.sum = phAlpha*p.sum + (x - p.mean) - phDelta
	p.lo = math.Min(p.lo, p.sum)
	if p.n >= phMinInstances && p.sum-p.lo > phThreshold {
		p.Reset()
		return true
	}
	return false
}
