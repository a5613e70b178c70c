package drift

import (
	"errors"
	"fmt"
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
	if _, err := PSI(ref, ref.Empty()); !errors.Is(err, ErrEmpty) {
		t.Fatalf("empty window: err = %v", err)
	}
}

// TestKSKnownAnswer: {1..5} against {3..7}: the CDFs are 0.4 apart at most
// (at 2, and again at 3 and 4). Of the 252 equally likely orderings of two
// samples of 5, 220 reach a distance of 0.4, so p = 220/252 (scipy's exact
// answer too, in testdata/ks.json).
func TestKSKnownAnswer(t *testing.T) {
	r, err := KS([]float64{1, 2, 3, 4, 5}, []float64{3, 4, 5, 6, 7})
	if err != nil {
		t.Fatal(err)
	}
	near(t, "D", r.D, 0.4, 1e-12)
	near(t, "p", r.P, 220.0/252, 1e-12)
	// Ties across samples are stepped over together: identical samples
	// are 0 apart.
	if r, _ := KS([]float64{1, 1, 2}, []float64{1, 1, 2}); r.D != 0 || r.P != 1 {
		t.Fatalf("identical samples: %+v", r)
	}
}

// TestKSRefusesNonFinite: NaN used to stall KS's merge for ever; NaN and
// ±Inf are refused.
func TestKSRefusesNonFinite(t *testing.T) {
	nan, inf := math.NaN(), math.Inf(1)
	for _, tc := range []struct {
		name string
		a, b []float64
	}{
		{"NaN in a", []float64{1, nan, 2}, []float64{1, 2}},
		{"NaN in b", []float64{1, 2}, []float64{nan}},
		{"+Inf", []float64{1, inf}, []float64{1, 2}},
		{"-Inf", []float64{1, 2}, []float64{-inf, 2}},
	} {
		if r, err := KS(tc.a, tc.b); !errors.Is(err, ErrNonFinite) {
			t.Errorf("%s: %+v, err %v", tc.name, r, err)
		}
	}
}

// TestKSPNearOne: between samples of one distribution λ is small; the
// alternating series alone had not converged there and gave p down to
// about 0.02.
func TestKSPNearOne(t *testing.T) {
	for _, tc := range []struct {
		d    float64
		n, m int
	}{
		{1e-5, 20000, 20000}, // λ ≈ 0.0007
		{2e-5, 1 << 20, 1 << 20},
		{5e-5, 50000, 30000},
		{1e-4, 20000, 20000},
		{1.0 / 10000, 10000, 10000}, // exact: one step
	} {
		if p := ksP(tc.d, tc.n, tc.m); p < 0.9999 || p > 1 {
			t.Errorf("D %g, n %d, m %d: p %.6g, want about 1", tc.d, tc.n, tc.m, p)
		}
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

// TestSketchPointMass: a value holding a bin's share or more gets a bin
// of its own. A constant reference used to merge its equal edges into one,
// with the value itself in the bin above it, so 5 → 6 gave PSI 0 and D 0.
func TestSketchPointMass(t *testing.T) {
	constant := make([]float64, 1000)
	for i := range constant {
		constant[i] = 5
	}
	// 70% zeros, then 1..300.
	zeros := make([]float64, 1000)
	for i := 700; i < 1000; i++ {
		zeros[i] = float64(i - 699)
	}
	for _, tc := range []struct {
		name   string
		ref    []float64
		from   float64 // cur is ref with from replaced by to
		to     float64
		psiMin float64
		d      float64
	}{
		{"constant up", constant, 5, 6, 5, 1},
		{"constant down", constant, 5, 4, 5, 1},
		{"constant a little up", constant, 5, 5.000001, 5, 1},
		{"constant unchanged", constant, 5, 5, 0, 0},
		{"zeros up", zeros, 0, 0.5, 1, 0.7},
		{"zeros down", zeros, 0, -0.5, 1, 0.7},
	} {
		ref, err := NewSketch(tc.ref, 10)
		if err != nil {
			t.Fatal(err)
		}
		cur := ref.Empty()
		for _, x := range tc.ref {
			if x == tc.from {
				x = tc.to
			}
			cur.Add(x)
		}
		psi, _ := PSI(ref, cur)
		ks, _ := KSSketch(ref, cur)
		if psi < tc.psiMin || (tc.psiMin == 0 && psi != 0) || math.Abs(ks.D-tc.d) > 1e-12 {
			t.Errorf("%s: PSI %.4g (want ≥ %g), D %g (want %g); edges %v", tc.name, psi, tc.psiMin, ks.D, tc.d, ref.Edges)
		}
	}
}

// TestSketchRefusesNonFinite: a NaN reference gave Edges [NaN]; NaN and
// ±Inf are refused in a reference, and counted apart in a window.
func TestSketchRefusesNonFinite(t *testing.T) {
	for _, x := range []float64{math.NaN(), math.Inf(1), math.Inf(-1)} {
		if sk, err := NewSketch([]float64{1, x, 3}, 10); !errors.Is(err, ErrNonFinite) {
			t.Errorf("reference with %g: %+v, err %v", x, sk, err)
		}
	}
	ref, err := NewSketch([]float64{1, 2, 3, 4}, 2)
	if err != nil {
		t.Fatal(err)
	}
	cur := ref.Empty()
	for _, x := range []float64{math.NaN(), 2, math.Inf(1), math.Inf(-1)} {
		cur.Add(x)
	}
	if cur.N != 1 || cur.NonFinite != 3 {
		t.Fatalf("N %d, NonFinite %d, want 1 and 3", cur.N, cur.NonFinite)
	}
}

// TestNewSketchParams: fewer than two bins cannot tell anything apart.
func TestNewSketchParams(t *testing.T) {
	for _, tc := range []struct {
		ref  []float64
		bins int
		err  error
	}{
		{[]float64{1, 2}, 0, ErrParam},
		{[]float64{1, 2}, 1, ErrParam},
		{[]float64{1, 2}, -3, ErrParam},
		{nil, 10, ErrEmpty},
		{[]float64{1, 2}, 2, nil},
	} {
		if _, err := NewSketch(tc.ref, tc.bins); !errors.Is(err, tc.err) {
			t.Errorf("NewSketch(%v, %d): err %v, want %v", tc.ref, tc.bins, err, tc.err)
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
// then 0.4. Over 20 seeds: no false alarm, every change found within 300
// values (measured delays: see the log), and reported once (it used to be
// reported 69 times over the 20).
func TestADWINFindsAChangeInAnErrorRate(t *testing.T) {
	var worst, sum int
	for seed := uint64(1); seed <= 20; seed++ {
		var a ADWIN
		stream := bernoulli(seed, 8000, 5000, 0.1, 0.4)
		n := 0
		fa, delay := detections(func(x float64) bool {
			d := a.Update(x)
			if d {
				n++
			}
			return d
		}, stream, 5000)
		if fa != 0 || delay < 0 || delay > 300 || n != 1 {
			t.Fatalf("seed %d: %d false alarms, delay %d, %d detections", seed, fa, delay, n)
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
		var p PageHinkley
		fa, delay := detections(p.Update, stream, 2000)
		if fa != 0 || delay < 0 || delay > 100 {
			t.Fatalf("seed %d: %d false alarms, delay %d", seed, fa, delay)
		}
		worst, sum = max(worst, delay), sum+delay
	}
	t.Logf("Page-Hinkley delay: mean %d, worst %d values", sum/20, worst)
}

// TestDetectorParams: NewADWIN refuses a delta outside (0, 1) (0 and −1
// used to be accepted and never detected); the zero values work with
// River's defaults (a zero ADWIN panicked, a zero Page-Hinkley fired on
// three values in ten).
func TestDetectorParams(t *testing.T) {
	for _, tc := range []struct {
		delta float64
		ok    bool
	}{{0.002, true}, {0.5, true}, {0, false}, {-1, false}, {1, false}, {2, false}, {math.NaN(), false}, {math.Inf(1), false}} {
		a, err := NewADWIN(tc.delta)
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrParam)) || (err == nil) != (a != nil) {
			t.Errorf("NewADWIN(%g): %v, %v", tc.delta, a, err)
		}
	}
	stream := bernoulli(1, 8000, 5000, 0.1, 0.4)
	var zero ADWIN
	def, _ := NewADWIN(DefaultADWINDelta)
	if got, want := detectAll(zero.Update, stream), detectAll(def.Update, stream); len(want) != 1 || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("zero ADWIN detects at %v, NewADWIN(%g) at %v", got, DefaultADWINDelta, want)
	}
	var p PageHinkley
	if got := detectAll(p.Update, bernoulli(2, 10000, 10000, 0.1, 0.1)); len(got) != 0 {
		t.Errorf("zero Page-Hinkley on a steady error rate: %d detections", len(got))
	}
}

// TestADWINReset: Reset keeps delta and empties the window.
func TestADWINReset(t *testing.T) {
	a, _ := NewADWIN(0.05)
	for range 100 {
		a.Update(1)
	}
	a.Reset()
	if a.Width() != 0 || a.Mean() != 0 || a.delta != 0.05 {
		t.Fatalf("after Reset: width %d, mean %g, delta %g", a.Width(), a.Mean(), a.delta)
	}
}

func BenchmarkADWIN(b *testing.B) {
	stream := bernoulli(1, 1<<16, 1<<15, 0.1, 0.4)
	var a ADWIN
	b.ResetTimer()
	for i := range b.N {
		a.Update(stream[i&(1<<16-1)])
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "updates/s")
}

func BenchmarkPageHinkley(b *testing.B) {
	stream := bernoulli(1, 1<<16, 1<<15, 0.1, 0.4)
	var p PageHinkley
	b.ResetTimer()
	for i := range b.N {
		p.Update(stream[i&(1<<16-1)])
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "updates/s")
}
