package window

import (
	"math"
	"sort"
)

// sketch is a mergeable quantile sketch with relative accuracy: values
// fall into logarithmic buckets of ratio gamma, so any quantile comes back
// within ±sketchAccuracy of the true value, in memory that grows with the
// range of values (log scale), never with their number.
type sketch struct {
	pos, neg map[int32]uint64
	zero     uint64
}

const sketchAccuracy = 0.01

var (
	sketchGamma    = (1 + sketchAccuracy) / (1 - sketchAccuracy)
	sketchLogGamma = math.Log(sketchGamma)
)

// minSketchValue: smaller magnitudes count as zero.
const minSketchValue = 1e-9

func newSketch() *sketch { return &sketch{pos: map[int32]uint64{}, neg: map[int32]uint64{}} }

func sketchIndex(x float64) int32 { return int32(math.Ceil(math.Log(x) / sketchLogGamma)) }

func sketchValue(i int32) float64 { return 2 * math.Pow(sketchGamma, float64(i)) / (sketchGamma + 1) }

func (s *sketch) add(v float64) {
	switch {
	case v > minSketchValue:
		s.pos[sketchIndex(v)]++
	case v < -minSketchValue:
		s.neg[sketchIndex(-v)]++
	default:
		s.zero++
	}
}

func (s *sketch) merge(o *sketch) {
	for k, n := range o.pos {
		s.pos[k] += n
	}
	for k, n := range o.neg {
		s.neg[k] += n
	}
	s.zero += o.zero
}

func (s *sketch) clone() *sketch {
	c := newSketch()
	c.merge(s)
	return c
}

// quantile returns the q-quantile (0 ≤ q ≤ 1) of n values.
func (s *sketch) quantile(q float64, n float64) float64 {
	if n == 0 {
		return math.NaN()
	}
	rank := uint64(q * (n - 1))
	keys := func(m map[int32]uint64, desc bool) []int32 {
		ks := make([]int32, 0, len(m))
		for k := range m {
			ks = append(ks, k)
		}
		sort.Slice(ks, func(i, j int) bool { return (ks[i] < ks[j]) != desc })
		return ks
	}
	var seen uint64
	for _, k := range keys(s.neg, true) { // most negative first
		if seen += s.neg[k]; seen > rank {
			return -sketchValue(k)
		}
	}
	if seen += s.zero; seen > rank {
		return 0
	}
	for _, k := range keys(s.pos, false) {
		if seen += s.pos[k]; seen > rank {
			return sketchValue(k)
		}
	}
	return math.NaN()
}
