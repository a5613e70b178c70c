// Package drift detects when data stops looking like it used to: data
// drift between a reference and a current distribution of a feature (PSI
// and the two-sample Kolmogorov–Smirnov test, over fixed-bin sketches), and
// concept drift in a stream of errors (ADWIN and Page-Hinkley). The agent
// and the hub use the same detectors.
package drift

import (
	"errors"
	"math"
	"sort"
)

// ErrEmpty means a distribution has no observations.
var ErrEmpty = errors.New("drift: empty distribution")

// Sketch counts observations in fixed bins: a reference window fixes the
// edges (its quantiles), and every later window is counted against them,
// so memory is one counter per bin whatever the window's length.
type Sketch struct {
	Edges  []float64 // inner edges, ascending: bin i holds x < Edges[i] (and ≥ Edges[i-1])
	Counts []int64   // len(Edges)+1
	N      int64
}

// NewSketch makes a sketch whose bins hold about equal shares of ref.
func NewSketch(ref []float64, bins int) (*Sketch, error) {
	if len(ref) == 0 {
		return nil, ErrEmpty
	}
	s := append([]float64(nil), ref...)
	sort.Float64s(s)
	var edges []float64
	for i := 1; i < bins; i++ {
		e := s[i*len(s)/bins]
		if len(edges) == 0 || e > edges[len(edges)-1] {
			edges = append(edges, e)
		}
	}
	sk := &Sketch{Edges: edges, Counts: make([]int64, len(edges)+1)}
	for _, x := range ref {
		sk.Add(x)
	}
	return sk, nil
}

// Empty is a sketch with the same bins and no observations.
func (s *Sketch) Empty() *Sketch {
	return &Sketch{Edges: s.Edges, Counts: make([]int64, len(s.Counts))}
}

// Add counts x.
func (s *Sketch) Add(x float64) {
	i := sort.SearchFloat64s(s.Edges, x)
	if i < len(s.Edges) && s.Edges[i] == x {
		i++ // x equal to an edge belongs to the bin above it
	}
	s.Counts[i]++
	s.N++
}

// psiFloor stands in for an empty bin's share, so PSI stays finite.
const psiFloor = 1e-4

// PSI is the population stability index of cur against ref over the same
// bins: Σ (c − r)·ln(c/r) over the bins' shares. Rules of thumb: below 0.1
// stable, 0.1–0.25 moderate, above 0.25 a significant shift.
func PSI(ref, cur *Sketch) (float64, error) {
	if ref.N == 0 || cur.N == 0 {
		return 0, ErrEmpty
	}
	psi := 0.0
	for i := range ref.Counts {
		r := max(float64(ref.Counts[i])/float64(ref.N), psiFloor)
		c := max(float64(cur.Counts[i])/float64(cur.N), psiFloor)
		psi += (c - r) * math.Log(c/r)
	}
	return psi, nil
}

// KSResult is a two-sample Kolmogorov–Smirnov test.
type KSResult struct {
	D float64 // the largest distance between the two empirical CDFs
	P float64 // asymptotic p-value: small means the samples differ
}

// KS tests whether samples a and b come from one distribution.
func KS(a, b []float64) (KSResult, error) {
	if len(a) == 0 || len(b) == 0 {
		return KSResult{}, ErrEmpty
	}
	x := append([]float64(nil), a...)
	y := append([]float64(nil), b...)
	sort.Float64s(x)
	sort.Float64s(y)
	var i, j int
	d := 0.0
	for i < len(x) && j < len(y) {
		v := math.Min(x[i], y[j])
		for i < len(x) && x[i] == v {
			i++
		}
		for j < len(y) && y[j] == v {
			j++
		}
		d = math.Max(d, math.Abs(float64(i)/float64(len(x))-float64(j)/float64(len(y))))
	}
	return KSResult{D: d, P: ksP(d, len(x), len(y))}, nil
}

// KSSketch is KS on two sketches with the same bins: the CDFs are compared
// at the bin edges, so D is exact up to the bins' resolution.
func KSSketch(ref, cur *Sketch) (KSResult, error) {
	if ref.N == 0 || cur.N == 0 {
		return KSResult{}, ErrEmpty
	}
	var fr, fc, d float64
	for i := range ref.Counts {
		fr += float64(ref.Counts[i]) / float64(ref.N)
		fc += float64(cur.Counts[i]) / float64(cur.N)
		d = math.Max(d, math.Abs(fr-fc))
	}
	return KSResult{D: d, P: ksP(d, int(ref.N), int(cur.N))}, nil
}

// ksP is the asymptotic p-value of D for samples of n and m, with
// Stephens' small-sample correction of λ.
func ksP(d float64, n, m int) float64 {
	ne := float64(n) * float64(m) / float64(n+m)
	sq := math.Sqrt(ne)
	lambda := (sq + 0.12 + 0.11/sq) * d
	if lambda < 1e-3 {
		return 1
	}
	sum, sign := 0.0, 1.0
	for k := 1; k <= 100; k++ {
		term := sign * math.Exp(-2*float64(k*k)*lambda*lambda)
		sum += term
		if math.Abs(term) < 1e-12 {
			break
		}
		sign = -sign
	}
	return math.Min(1, math.Max(0, 2*sum))
}
