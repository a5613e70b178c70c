package window

import (
	"errors"
	"fmt"
	"math"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func at(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }

func ev(key string, s float64, v float64) Event {
	return Event{Key: key, Time: at(s), Values: []float64{v}}
}

// got is a compact view of a result for table tests.
type got struct {
	key        string
	start, end float64
	firing     Firing
	rev        int
	count      int64
}

func view(rs []Result) []got {
	var out []got
	for _, r := range rs {
		out = append(out, got{r.Key, r.Start.Sub(t0).Seconds(), r.End.Sub(t0).Seconds(), r.Firing, r.Revision, r.Count})
	}
	return out
}

type step struct {
	ev      *Event
	advance float64 // processing-time seconds for Advance, when ev is nil
	want    []got
	late    bool
}

func run(t *testing.T, spec Spec, steps []step) {
	t.Helper()
	spec.Fields = []string{"v"}
	o, err := New(spec)
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range steps {
		var rs []Result
		late := false
		if s.ev != nil {
			rs, late = o.Process(*s.ev, at(float64(i)), nil)
		} else {
			rs = o.Advance(at(s.advance), nil)
		}
		g := view(rs)
		if late != s.late || fmt.Sprint(g) != fmt.Sprint(s.want) {
			t.Fatalf("step %d: got %v late=%v; want %v late=%v", i, g, late, s.want, s.late)
		}
	}
}

func p(e Event) *Event { return &e }

func TestTumbling(t *testing.T) {
	run(t, Spec{Kind: Tumbling, Size: 10 * time.Second}, []step{
		{ev: p(ev("a", 0, 1))},
		{ev: p(ev("b", 1, 1))},
		{ev: p(ev("a", 9.5, 1))},
		{ev: p(ev("a", 10, 1)), want: []got{{"a", 0, 10, Final, 0, 2}, {"b", 0, 10, Final, 0, 1}}},
	})
}

func TestOutOfOrderWithinBound(t *testing.T) {
	run(t, Spec{Kind: Tumbling, Size: 10 * time.Second, MaxOutOfOrder: 2 * time.Second}, []step{
		{ev: p(ev("a", 0, 1))},
		{ev: p(ev("a", 11, 1))}, // watermark 9: [0,10) stays open
		{ev: p(ev("a", 9, 1))},  // out of order, still counted
		{ev: p(ev("a", 12, 1)), want: []got{{"a", 0, 10, Final, 0, 2}}},
		{ev: p(ev("a", 5, 1)), late: true}, // [0,10) fired, no lateness allowed
	})
}

func TestAllowedLatenessRevisesThenSideOutputs(t *testing.T) {
	run(t, Spec{Kind: Tumbling, Size: 10 * time.Second, AllowedLateness: 5 * time.Second}, []step{
		{ev: p(ev("a", 1, 1))},
		{ev: p(ev("a", 12, 1)), want: []got{{"a", 0, 10, Final, 0, 1}}},
		{ev: p(ev("a", 3, 1)), want: []got{{"a", 0, 10, Update, 1, 2}}},
		{ev: p(ev("a", 4, 1)), want: []got{{"a", 0, 10, Update, 2, 3}}},
		{ev: p(ev("a", 15, 1))}, // watermark 15 = end + lateness: purged
		{ev: p(ev("a", 6, 1)), late: true},
	})
}

func TestSliding(t *testing.T) {
	run(t, Spec{Kind: Sliding, Size: 10 * time.Second, Slide: 5 * time.Second}, []step{
		{ev: p(ev("a", 7, 1))}, // in [0,10) and [5,15)
		{ev: p(ev("a", 10, 1)), want: []got{{"a", 0, 10, Final, 0, 1}}},
		{ev: p(ev("a", 20, 1)), want: []got{{"a", 5, 15, Final, 0, 2}, {"a", 10, 20, Final, 0, 1}}},
	})
}

func TestSessions(t *testing.T) {
	run(t, Spec{Kind: Session, Gap: 5 * time.Second, MaxOutOfOrder: 20 * time.Second}, []step{
		{ev: p(ev("a", 0, 1))},  // [0,5)
		{ev: p(ev("a", 10, 1))}, // [10,15)
		{ev: p(ev("a", 5, 1))},  // bridges both: [0,15)
		{ev: p(ev("a", 3, 1))},  // inside
		{ev: p(ev("a", 40, 1)), want: []got{{"a", 0, 15, Final, 0, 4}}},
	})
}

func TestSessionStartsEarlier(t *testing.T) {
	run(t, Spec{Kind: Session, Gap: 5 * time.Second, MaxOutOfOrder: 10 * time.Second}, []step{
		{ev: p(ev("a", 10, 1))},
		{ev: p(ev("a", 7, 1))}, // extends the session backwards: [7,15)
		{ev: p(ev("a", 30, 1)), want: []got{{"a", 7, 15, Final, 0, 2}}},
	})
}

func TestCountWindows(t *testing.T) {
	run(t, Spec{Kind: CountWin, Count: 3}, []step{
		{ev: p(ev("a", 0, 1))},
		{ev: p(ev("b", 1, 1))},
		{ev: p(ev("a", 2, 1))},
		{ev: p(ev("a", 3, 1)), want: []got{{"a", 0, 3.000000001, Final, 0, 3}}},
		{ev: p(ev("a", 100, 1))}, // event time plays no part
	})
}

func TestPunctuatedWatermark(t *testing.T) {
	punct := ev("a", 3, 1)
	punct.Watermark = at(10)
	run(t, Spec{Kind: Tumbling, Size: 10 * time.Second, Watermark: Punctuated}, []step{
		{ev: p(ev("a", 1, 1))},
		{ev: p(ev("a", 25, 1))}, // no punctuation: nothing fires
		{ev: p(punct), want: []got{{"a", 0, 10, Final, 0, 2}}},
	})
}

func TestIdleSourceAdvancesWatermark(t *testing.T) {
	run(t, Spec{Kind: Tumbling, Size: 10 * time.Second, IdleTimeout: 5 * time.Second}, []step{
		{ev: p(ev("a", 1, 1))}, // arrives at processing time 0
		{advance: 4},           // not idle yet
		{advance: 8},           // idle: event time ≈ 1 + 8 = 9 < 10
		{advance: 9.5, want: []got{{"a", 0, 10, Final, 0, 1}}},
	})
}

func TestEarlyFirings(t *testing.T) {
	run(t, Spec{Kind: Tumbling, Size: 10 * time.Second, EarlyEvery: 2}, []step{
		{ev: p(ev("a", 1, 1))},
		{ev: p(ev("a", 2, 1)), want: []got{{"a", 0, 10, Early, 0, 2}}},
		{ev: p(ev("a", 3, 1))},
		{ev: p(ev("a", 10, 1)), want: []got{{"a", 0, 10, Final, 0, 3}}},
	})
	run(t, Spec{Kind: Tumbling, Size: 10 * time.Second, EarlyInterval: 2 * time.Second}, []step{
		{ev: p(ev("a", 1, 1))},
		{advance: 3, want: []got{{"a", 0, 10, Early, 0, 1}}},
		{advance: 4}, // nothing changed since
		{ev: p(ev("a", 2, 1))},
		{advance: 6, want: []got{{"a", 0, 10, Early, 0, 2}}},
	})
}

func TestAggregations(t *testing.T) {
	o, _ := New(Spec{Kind: Tumbling, Size: 10 * time.Second, Fields: []string{"x", "big"}})
	vals := []float64{2, 4, 4, 4, 5, 5, 7, 9} // mean 5, population stddev 2
	for i, v := range vals {
		o.Process(Event{Key: "k", Time: at(float64(i)), Values: []float64{v, 1e9 + v}}, at(0), nil)
	}
	rs, _ := o.Process(Event{Key: "k", Time: at(10), Values: []float64{0, 0}}, at(0), nil)
	r := rs[0]
	want := map[Agg]float64{Count: 8, Sum: 40, Mean: 5, Min: 2, Max: 9, StdDev: 2, Variance: 4,
		RMS: math.Sqrt(232.0 / 8), First: 2, Last: 9}
	for a, w := range want {
		if g := r.Value(0, a); math.Abs(g-w) > 1e-9 {
			t.Errorf("%s = %v, want %v", a, g, w)
		}
	}
	// Least squares over t=0..7: slope by hand.
	var st, sv, stt, stv float64
	for i, v := range vals {
		x := float64(i)
		st, sv, stt, stv = st+x, sv+v, stt+x*x, stv+x*v
	}
	n := float64(len(vals))
	if g, w := r.Value(0, Slope), (n*stv-st*sv)/(n*stt-st*st); math.Abs(g-w) > 1e-9 {
		t.Errorf("slope = %v, want %v", g, w)
	}
	// Variance stays exact around 1e9, where sum-of-squares would cancel.
	if g := r.Value(1, Variance); math.Abs(g-4) > 1e-6 {
		t.Errorf("variance at 1e9 offset = %v, want 4", g)
	}
}

func TestSessionMergeKeepsSlope(t *testing.T) {
	o, _ := New(Spec{Kind: Session, Gap: 3 * time.Second, MaxOutOfOrder: time.Minute, Fields: []string{"v"}})
	// v = 2t: slope 2 whatever order the sessions form in.
	for _, s := range []float64{10, 0, 4, 2, 8, 6} {
		o.Process(Event{Key: "k", Time: at(s), Values: []float64{2 * s}}, at(0), nil)
	}
	rs, _ := o.Process(Event{Key: "k", Time: at(200), Values: []float64{0}}, at(0), nil)
	if len(rs) != 1 || rs[0].Count != 6 || math.Abs(rs[0].Value(0, Slope)-2) > 1e-9 || rs[0].Value(0, First) != 0 || rs[0].Value(0, Last) != 20 {
		t.Fatalf("results = %+v slope=%v", view(rs), rs[0].Value(0, Slope))
	}
}

func TestMemoryIsBoundedByKeysAndWindows(t *testing.T) {
	o, _ := New(Spec{Kind: Tumbling, Size: time.Second, MaxOutOfOrder: 100 * time.Millisecond, Fields: []string{"v"}})
	var out []Result
	maxOpen := 0
	for i := 0; i < 500_000; i++ {
		out, _ = o.Process(Event{Key: fmt.Sprint("k", i%1000), Time: t0.Add(time.Duration(i) * time.Millisecond), Values: []float64{1}}, t0, out[:0])
		if i%10_000 == 0 {
			maxOpen = max(maxOpen, o.OpenWindows())
		}
	}
	if maxOpen > 2*1000 {
		t.Fatalf("%d windows open for 1000 keys", maxOpen)
	}
}

func TestSpecValidation(t *testing.T) {
	bad := []Spec{
		{Kind: "hopping", Fields: []string{"v"}},
		{Kind: Tumbling, Fields: []string{"v"}},
		{Kind: Sliding, Size: 10, Slide: 3, Fields: []string{"v"}},
		{Kind: Session, Fields: []string{"v"}},
		{Kind: CountWin, Fields: []string{"v"}},
		{Kind: Tumbling, Size: 1, Watermark: "wall", Fields: []string{"v"}},
		{Kind: Tumbling, Size: 1},
	}
	for i, s := range bad {
		if _, err := New(s); !errors.Is(err, ErrSpec) {
			t.Errorf("spec %d: err = %v, want ErrSpec", i, err)
		}
	}
}

func TestPercentiles(t *testing.T) {
	o, _ := New(Spec{Kind: Tumbling, Size: time.Hour, Fields: []string{"v"}, Percentiles: true})
	for i := 1; i <= 1000; i++ {
		o.Process(Event{Key: "k", Time: at(float64(i % 60)), Values: []float64{float64(i)}}, at(0), nil)
	}
	o.Process(Event{Key: "k", Time: at(-5), Values: []float64{-3}}, at(0), nil)
	rs, _ := o.Process(Event{Key: "k", Time: at(3600), Values: []float64{0}}, at(0), nil)
	r := rs[0]
	for a, want := range map[Agg]float64{P50: 500, P90: 900, P95: 950, P99: 990} {
		if got := r.Value(0, a); math.Abs(got-want)/want > 0.02 {
			t.Errorf("%s = %v, want %v ± 2%%", a, got, want)
		}
	}
	// Without the flag there is no sketch and no made-up percentile.
	plain, _ := New(Spec{Kind: Tumbling, Size: time.Hour, Fields: []string{"v"}})
	plain.Process(Event{Key: "k", Time: at(1), Values: []float64{1}}, at(0), nil)
	rs, _ = plain.Process(Event{Key: "k", Time: at(3600), Values: []float64{1}}, at(0), nil)
	if !math.IsNaN(rs[0].Value(0, P50)) {
		t.Fatal("percentile without a sketch")
	}
}
