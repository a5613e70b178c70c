// Package drift detects when data stops looking like it used to: data
// drift between a reference and a current distribution of a feature (PSI
// and the two-sample Kolmogorov–Smirnov test, over fixed-bin sketches), and
// concept drift in a stream of errors (ADWIN and Page-Hinkley). The agent
// and the hub use the same detectors.
package drift

import (
	"fmt"
	"math"
	"sort"
)

// Sketch counts observations in fixed bins: a reference window fixes the
// edges (its quantiles), and every later window is counted against them,
// so memory is one counter per bin whatever the window's length.
type Sketch struct {
	Edges  []float64 // inner edges, ascending: bin i holds x < Edges[i] (and ≥ Edges[i-1])
	Counts []int64   // len(Edges)+1
	N      int64
	// NonFinite counts the NaN and ±Inf values Add was given and did not
	// count in any bin.
	NonFinite int64
}

// NewSketch makes a sketch whose bins hold about equal shares of ref. A
// value that covers a whole bin's share or more (a constant reference, a
// feature that is mostly zero) gets a bin of its own, so values just above
// or below it land elsewhere.
func NewSketch(ref []float64, bins int) (*Sketch, error) {
	if bins < 2 {
		return nil, fmt.Errorf("sketch: %d bins, want at least 2: %w", bins, ErrParam)
	}
	if len(ref) == 0 {
		return nil, ErrEmpty
	}
	if err := finite(ref); err != nil {
		return nil, fmt.Errorf("sketch: reference %w", err)
	}
	s := append([]float64(nil), ref...)
	sort.Float64s(s)
	var edges []float64
	for i := 1; i < bins; i++ {
		e := s[i*len(s)/bins]
		switch n := len(edges); {
		case n == 0 || e > edges[n-1]:
			edges = append(edges, e)
		case e == edges[n-1]:
			// e spans two quantiles: close its bin [e, e⁺) just above
			// it, so values above e land in the next one.
			edges = append(edges, math.Nextafter(e, math.Inf(1)))
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

// Add counts x; NaN and ±Inf are counted in NonFinite only, since they
// have no bin.
func (s *Sketch) Add(x float64) {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		s.NonFinite++
		return
	}
	// The first edge above x: x equal to an edge belongs to the bin above it.
	i := sort.Search(len(s.Edges), func(i int) bool { return x < s.Edges[i] })
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
	P float64 // p-value (two-sided): small means the samples differ
}

// KS tests whether samples a and b come from one distribution. Its
// p-value is scipy's ks_2samp's (method "auto"): exact up to 10,000 values
// a sample, asymptotic above. NaN and ±Inf are refused (ErrNonFinite).
func KS(a, b []float64) (KSResult, error) {
	if len(a) == 0 || len(b) == 0 {
		return KSResult{}, ErrEmpty
	}
	// NaN equals nothing, so the merge below would never step past it.
	if err := finite(a); err != nil {
		return KSResult{}, fmt.Errorf("ks: first sample %w", err)
	}
	if err := finite(b); err != nil {
		return KSResult{}, fmt.Errorf("ks: second sample %w", err)
	}
	x := append([]float64(nil), a...)
	y := append([]float64(nil), b...)
	sort.Float64s(x)
	sort.Float64s(y)
	nx, ny := int64(len(x)), int64(len(y))
	// The distance in steps of 1/(nx·ny), so that D is exact.
	var i, j, h int64
	for i < nx && j < ny {
		v := min(x[i], y[j])
		for i < nx && x[i] == v {
			i++
		}
		for j < ny && y[j] == v {
			j++
		}
		h = max(h, abs(i*ny-j*nx))
	}
	d := float64(h) / float64(nx*ny)
	return KSResult{D: d, P: ksP(d, len(x), len(y))}, nil
}

// finite is ErrNonFinite for the first NaN or ±Inf in s.
func finite(s []float64) error {
	for i, x := range s {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return fmt.Errorf("value %d is %g: %w", i, x, ErrNonFinite)
		}
	}
	return nil
}

func abs(x int64) int64 {
	if x < 0 {
		return -x
	}
	return x
}

// KSSketch is KS on two sketches with the same bins: the CDFs are compared
// at the bin edges, so D is exact up to the bins' resolution (and the
// p-value, which assumes no ties, errs on the side of no drift).
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

// ksExactMax is the largest sample for which ksP counts lattice paths, as
// scipy's ks_2samp does with method "auto".
const ksExactMax = 10000

// ksP is the two-sided p-value of D for samples of n and m: exact up to
// ksExactMax values a sample (about 2·D·n·m steps: 30 ms for 10,000 each
// and D = 0.03), then the Kolmogorov distribution's tail with Stephens'
// small-sample correction of λ (within about 1% of scipy's asymptotic
// method, kstwo at n·m/(n+m), once that is above 1,000).
func ksP(d float64, n, m int) float64 {
	if max(n, m) <= ksExactMax {
		return ksExact(d, n, m)
	}
	ne := float64(n) * float64(m) / float64(n+m)
	sq := math.Sqrt(ne)
	return kolmogorovSF((sq + 0.12 + 0.11/sq) * d)
}

// ksExact is P(D ≥ d) for samples of n and m from one distribution: the
// share of the lattice paths from (0, 0) to (n, m) (a step right for each
// value of the first sample in order, up for the second) that leave the
// band |x/n − y/m| < d (Hodges, 1958). It carries the share of paths that
// have left rather than a count, so every number stays in [0, 1] and small
// p-values keep their precision (Viehmann, 2021, as scipy does).
func ksExact(d float64, n, m int) float64 {
	if n < m {
		n, m = m, n // columns over the larger sample, the shorter column held
	}
	g := gcd(n, m)
	ng, mg := n/g, m/g
	// In steps of 1/lcm(n, m), (x, y) is inside when |x·mg − y·ng| < h.
	h := int(math.Round(d * float64(ng) * float64(m)))
	if h <= 0 {
		return 1
	}
	// left[y] is the share of paths to (x, y) that have left the band;
	// 1 outside it. Bands only move up as x grows, so the entries above
	// the band still hold the 1 of column 0, and those below are not read.
	left := make([]float64, m+1)
	for y := range left {
		if y*ng >= h {
			left[y] = 1
		}
	}
	// The work is about 2·D·n·m steps; a multiplication by 1/(x+y) is
	// several times quicker than the division.
	inv := make([]float64, n+m+1)
	for k := 1; k < len(inv); k++ {
		inv[k] = 1 / float64(k)
	}
	for x := 1; x <= n; x++ {
		lo := max(floorDiv(x*mg-h, ng)+1, 0)
		hi := min((x*mg+h+ng-1)/ng-1, m)
		if lo > hi {
			return 1 // every path leaves at this column
		}
		fx := float64(x)
		below := 1.0 // (x, lo−1) is outside (or absent, with weight lo = 0)
		for y, inv := range inv[x+lo : x+hi+1] {
			// Of the paths to (x, y), x/(x+y) come from the left, y/(x+y) from below.
			below = (left[lo+y]*fx + below*float64(lo+y)) * inv
			left[lo+y] = below
		}
	}
	return left[m]
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// floorDiv is ⌊a/b⌋ for b > 0 (Go's / truncates toward zero).
func floorDiv(a, b int) int {
	q := a / b
	if a%b != 0 && a < 0 {
		q--
	}
	return q
}

// kolmogorovSF is P(K > λ) for the Kolmogorov distribution. Each of its
// two series converges in a few terms on its own side of λ ≈ 1.18; the
// alternating one alone needs thousands of terms as λ goes to 0.
func kolmogorovSF(l float64) float64 {
	if l <= 0 {
		return 1
	}
	sum := 0.0
	if l < 1.18 {
		// 1 − √(2π)/λ · Σ exp(−(2k−1)²π²/(8λ²)), k ≥ 1
		w := math.Pi * math.Pi / (8 * l * l)
		for k := 1; k <= 100; k++ {
			t := math.Exp(-float64((2*k-1)*(2*k-1)) * w)
			sum += t
			if t <= 1e-17*sum {
				break
			}
		}
		return max(0, 1-math.Sqrt(2*math.Pi)/l*sum)
	}
	// 2 · Σ (−1)^(k−1) exp(−2k²λ²), k ≥ 1
	sign := 1.0
	for k := 1; k <= 100; k++ {
		t := math.Exp(-2 * float64(k*k) * l * l)
		sum += sign * t
		if t <= 1e-17*sum {
			break
		}
		sign = -sign
	}
	return min(1, max(0, 2*sum))
}
