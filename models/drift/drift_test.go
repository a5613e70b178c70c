package drift

import (
	"math"
	"math/rand/v2"
	"testing"
)

func near(t *testing.T, what string, got, want, tol float64) {
	t.Helper()
	if math.Abs(got-want) > tol {
		t.Fatalf("%s = %.10g, want %.10g (±%g)", what, got, want, tol)
	}
}

// TestPSIKnownAnswer: shares .1 .2 .3 .4 against .2 .2 .2 .4 give, by hand,
// 0.1·ln 2 + (−0.1)·ln(2/3) = 0.1098612289.
func TestPSIKnownAnswer(t *testing.T) {
	ref := &Sketch{Edges: []float64{1, 2, 3}, Counts: []int64{10, 20, 30, 40}, N: 100}
	cur := &Sketch{Edges: []float64{1, 2, 3}, Counts: []int64{20, 20, 20, 40}, N: 100}
	psi, err := PSI(ref, cur)
	if err != nil {
		t.Fatal(err)
	}
	near(t, "PSI", psi, 0.1098612289, 1e-9)
	if same, _ := PSI(ref, ref); same != 0 {
		t.Fatalf("PSI of a distribution with itself = %g", same)
	}
	if _, err := PSI(ref, ref.Empty()); err != ErrEmpty {
		t.Fatalf("empty window: err = %v", err)
	}
}

// TestKSKnownAnswer: {1..5} against {3..7}: the CDFs are 0.4 apart at most
// (at 2, and again at 3 and 4); for n = m = 5 the asymptotic p-value with
// Stephens' correction is 0.6974048780 (the series summed by hand).
func TestKSKnownAnswer(t *testing.T) {
	r, err := KS([]float64{1, 2, 3, 4, 5}, []float64{3, 4, 5, 6, 7})
	if err != nil {
		t.Fatal(err)
	}
	near(t, "D", r.D, 0.4, 1e-12)
	near(t, "p", r.P, 0.6974048780, 1e-9)
	// Ties across samples are stepped over together: identical samples
	// are 0 apart.
	if r, _ := KS([]float64{1, 1, 2}, []float64{1, 1, 2}); r.D != 0 || r.P != 1 {
		t.Fatalf("identical samples: %+v", r)
	}
}

// TestSketchesSeeAShift: 10-bin sketches of a standard normal reference
// against a normal shifted by one standard deviation: large PSI, tiny KS
// p-value; against fresh data from the reference: small PSI, large p.
func TestSketchesSeeAShift(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	sample := func(n int, shift float64) []float64 {
		out := make([]float64, n)
		for i := range out {
			out[i] = rng.NormFloat64() + shift
		}
		return out
	}
	ref, err := NewSketch(sample(5000, 0), 10)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		shift        float64
		drift        bool
		psiLo, psiHi float64
	}{{0, false, 0, 0.02}, {1, true, 0.5, 2}} {
		cur := ref.Empty()
		for _, x := range sample(2000, tc.shift) {
			cur.Add(x)
		}
		psi, _ := PSI(ref, cur)
		ks, _ := KSSketch(ref, cur)
		if psi < tc.psiLo || psi > tc.psiHi || (ks.P < 0.01) != tc.drift {
			t.Fatalf("shift %g: PSI %.4f (want %g–%g), KS %+v (drift %v)", tc.shift, psi, tc.psiLo, tc.psiHi, ks, tc.drift)
		}
	}
}

// detections runs a detector over a stream with a change at index at and
// returns the false alarms before it and the delay of the first
// detection after it (-1 when none).
func detections(update func(float64) bool, stream []float64, at int) (falseAlarms, delay int) {
	delay = -1
	for i, x := range stream {
		if update(x) {
			if i < at {
				falseAlarms++
			} else if delay < 0 {
				delay = i - at
			}
		}
	}
	return falseAlarms, delay
}

// bernoulli is an error stream: rate p0 until at, then p1.
func bernoulli(seed uint64, n, at int, p0, p1 float64) []float64 {
	rng := rand.New(rand.NewPCG(seed, 7))
	out := make([]float64, n)
	for i := range out {
		p := p0
		if i >= at {
			p = p1
		}
		if rng.Float64() < p {
			out[i] = 1
		}
	}
	return out
}

// TestADWINFindsAChangeInAnErrorRate: error rate 0.1 for 5,000 values,
// then 0.4. Over 20 seeds: no false alarm, and every change found within
// 300 values (measured delays: see the log).
func TestADWINFindsAChangeInAnErrorRate(t *testing.T) {
	var worst, sum int
	for seed := uint64(1); seed <= 20; seed++ {
		a := NewADWIN(0.002)
		fa, delay := detections(a.Update, bernoulli(seed, 8000, 5000, 0.1, 0.4), 5000)
		if fa != 0 || delay < 0 || delay > 300 {
			t.Fatalf("seed %d: %d false alarms, delay %d", seed, fa, delay)
		}
		worst, sum = max(worst, delay), sum+delay
		if m := a.Mean(); m < 0.3 || m > 0.5 {
			t.Fatalf("seed %d: window mean %.3f after the change, want about 0.4", seed, m)
		}
	}
	t.Logf("ADWIN delay: mean %d, worst %d values", sum/20, worst)
}

// TestPageHinkleyFindsAnIncrease: a mean of 0 (noise σ 0.1) stepping to 1
// at 2,000. Over 20 seeds: no false alarm, and detection within 100 values.
func TestPageHinkleyFindsAnIncrease(t *testing.T) {
	var worst, sum int
	for seed := uint64(1); seed <= 20; seed++ {
		rng := rand.New(rand.NewPCG(seed, 3))
		stream := make([]float64, 4000)
		for i := range stream {
			stream[i] = rng.NormFloat64() * 0.1
			if i >= 2000 {
				stream[i]++
			}
		}
		fa, delay := detections(NewPageHinkley().Update, stream, 2000)
		if fa != 0 || delay < 0 || delay > 100 {
			t.Fatalf("seed %d: %d false alarms, delay %d", seed, fa, delay)
		}
		worst, sum = max(worst, delay), sum+delay
	}
	t.Logf("Page-Hinkley delay: mean %d, worst %d values", sum/20, worst)
}

func BenchmarkADWIN(b *testing.B) {
	stream := bernoulli(1, 1<<16, 1<<15, 0.1, 0.4)
	a := NewADWIN(0.002)
	b.ResetTimer()
	for i := range b.N {
		a.Update(stream[i&(1<<16-1)])
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "updates/s")
}

func BenchmarkPageHinkley(b *testing.B) {
	stream := bernoulli(1, 1<<16, 1<<15, 0.1, 0.4)
	p := NewPageHinkley()
	b.ResetTimer()
	for i := range b.N {
		p.Update(stream[i&(1<<16-1)])
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "updates/s")
}
