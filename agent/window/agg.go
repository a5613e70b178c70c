package window

import (
	"fmt"
	"math"
)

// Agg names an incremental aggregation.
type Agg string

// Aggregations every window supports. All are computed in O(1) memory per
// field and window, whatever the number of events.
const (
	Count    Agg = "count"
	Sum      Agg = "sum"
	Mean     Agg = "mean"
	Min      Agg = "min"
	Max      Agg = "max"
	StdDev   Agg = "stddev"
	Variance Agg = "variance"
	RMS      Agg = "rms"
	First    Agg = "first"
	Last     Agg = "last"
	Slope    Agg = "slope" // least-squares slope, units per second
	P50      Agg = "p50"   // percentiles come from a sketch, within ±1%
	P90      Agg = "p90"
	P95      Agg = "p95"
	P99      Agg = "p99"
)

// Aggs lists every supported aggregation.
var Aggs = []Agg{Count, Sum, Mean, Min, Max, StdDev, Variance, RMS, First, Last, Slope, P50, P90, P95, P99}

// IsPercentile reports whether a needs the quantile sketch.
func (a Agg) IsPercentile() bool { return a == P50 || a == P90 || a == P95 || a == P99 }

var quantiles = map[Agg]float64{P50: 0.5, P90: 0.9, P95: 0.95, P99: 0.99}

// ParseAgg checks a configured name.
func ParseAgg(s string) (Agg, error) {
	for _, a := range Aggs {
		if string(a) == s {
			return a, nil
		}
	}
	return "", fmt.Errorf("%w: aggregation %q", ErrSpec, s)
}

// acc is the running state of one field in one window. Times are seconds
// relative to the window start, so slope sums keep their precision.
type acc struct {
	n                  float64
	sum, sumSq         float64
	mean, m2           float64 // Welford: stable variance for large values
	min, max           float64
	firstT, firstV     float64
	lastT, lastV       float64
	sumT, sumTT, sumTV float64
	sk                 *sketch // only when the spec asks for percentiles
}

func (a *acc) add(t, v float64) {
	if a.n == 0 {
		a.min, a.max = v, v
		a.firstT, a.firstV, a.lastT, a.lastV = t, v, t, v
	} else {
		a.min = math.Min(a.min, v)
		a.max = math.Max(a.max, v)
		if t < a.firstT {
			a.firstT, a.firstV = t, v
		}
		if t >= a.lastT {
			a.lastT, a.lastV = t, v
		}
	}
	if a.sk != nil {
		a.sk.add(v)
	}
	a.n++
	d := v - a.mean
	a.mean += d / a.n
	a.m2 += d * (v - a.mean)
	a.sum += v
	a.sumSq += v * v
	a.sumT += t
	a.sumTT += t * t
	a.sumTV += t * v
}

// merge folds b into a (session windows merging). Both share one origin.
func (a *acc) merge(b *acc) {
	if b.n == 0 {
		return
	}
	if a.sk != nil && b.sk != nil {
		a.sk.merge(b.sk)
	}
	if a.n == 0 {
		sk := a.sk
		*a = *b
		a.sk = sk
		return
	}
	a.min, a.max = math.Min(a.min, b.min), math.Max(a.max, b.max)
	n := a.n + b.n
	d := b.mean - a.mean
	a.m2 += b.m2 + d*d*a.n*b.n/n
	a.mean += d * b.n / n
	if b.firstT < a.firstT {
		a.firstT, a.firstV = b.firstT, b.firstV
	}
	if b.lastT >= a.lastT {
		a.lastT, a.lastV = b.lastT, b.lastV
	}
	a.n += b.n
	a.sum += b.sum
	a.sumSq += b.sumSq
	a.sumT += b.sumT
	a.sumTT += b.sumTT
	a.sumTV += b.sumTV
}

// shift moves the time origin by d seconds (session start moving earlier).
func (a *acc) shift(d float64) {
	if a.n == 0 || d == 0 {
		return
	}
	// t' = t + d: expand the sums.
	a.sumTV += d * a.sum
	a.sumTT += 2*d*a.sumT + a.n*d*d
	a.sumT += a.n * d
	a.firstT += d
	a.lastT += d
}

func (a *acc) value(g Agg) float64 {
	if a.n == 0 {
		return math.NaN()
	}
	switch g {
	case Count:
		return a.n
	case Sum:
		return a.sum
	case Mean:
		return a.mean
	case Min:
		return a.min
	case Max:
		return a.max
	case Variance:
		return a.variance()
	case StdDev:
		return math.Sqrt(a.variance())
	case RMS:
		return math.Sqrt(a.sumSq / a.n)
	case First:
		return a.firstV
	case Last:
		return a.lastV
	case P50, P90, P95, P99:
		if a.sk == nil {
			return math.NaN()
		}
		return a.sk.quantile(quantiles[g], a.n)
	case Slope:
		den := a.n*a.sumTT - a.sumT*a.sumT
		if a.n < 2 || den == 0 {
			return 0
		}
		return (a.n*a.sumTV - a.sumT*a.sum) / den
	}
	return math.NaN()
}

// variance is the population variance.
func (a *acc) variance() float64 { return math.Max(a.m2/a.n, 0) }
