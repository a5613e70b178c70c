package window

import (
	"slices"
	"testing"
)

// TestRawSamples: a window keeps the raw fields it is asked for, in time
// order whatever the arrival order, bounded per key and window, with the
// excess counted; sessions merge them, and snapshots keep them.
func TestRawSamples(t *testing.T) {
	spec := Spec{Kind: Tumbling, Size: 10e9, MaxOutOfOrder: 5e9, Fields: []string{"a", "b"}, Raw: []int{1}, MaxSamples: 3}
	o, err := New(spec)
	if err != nil {
		t.Fatal(err)
	}
	var out []Result
	for _, e := range []struct{ s, a, b float64 }{{2, 0, 20}, {1, 0, 10}, {3, 0, 30}, {4, 0, 40}} {
		out, _ = o.Process(Event{Key: "k", Time: at(e.s), Values: []float64{e.a, e.b}}, at(e.s), out)
	}
	snap, err := o.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	r, _ := New(spec)
	if err := r.Restore(snap); err != nil {
		t.Fatal(err)
	}
	out, _ = r.Process(Event{Key: "k", Time: at(30), Values: []float64{0, 0}}, at(30), out[:0])
	if len(out) != 1 {
		t.Fatalf("%d results, want the first window", len(out))
	}
	s := out[0].Samples
	if s == nil || !slices.Equal(s.V[0], []float64{10, 20, 30}) || s.T[0] != at(1).UnixNano() || s.T[2] != at(3).UnixNano() {
		t.Fatalf("samples %+v, want b at 1, 2, 3 s in time order", s)
	}
	if out[0].Dropped != 1 || o.Stats.RawDropped != 1 {
		t.Fatalf("dropped %d (stats %d), want the fourth sample counted", out[0].Dropped, o.Stats.RawDropped)
	}
	if out[0].Count != 4 {
		t.Fatalf("count %d: the aggregates see every event", out[0].Count)
	}

	// Two sessions bridged by a third event merge their samples.
	ss, _ := New(Spec{Kind: Session, Gap: 2e9, MaxOutOfOrder: 5e9, Fields: []string{"a"}, Raw: []int{0}, MaxSamples: 10})
	out = out[:0]
	for _, e := range []struct{ s, v float64 }{{0, 1}, {3, 3}, {1.5, 2}, {20, 0}} {
		out, _ = ss.Process(Event{Key: "k", Time: at(e.s), Values: []float64{e.v}}, at(e.s), out)
	}
	if len(out) != 1 || !slices.Equal(out[0].Samples.V[0], []float64{1, 2, 3}) {
		t.Fatalf("merged session: %d results, samples %+v", len(out), out)
	}

	// Without Raw nothing is buffered.
	plain, _ := New(Spec{Kind: Tumbling, Size: 10e9, Fields: []string{"a"}})
	out, _ = plain.Process(Event{Key: "k", Time: at(1), Values: []float64{1}}, at(1), out[:0])
	out, _ = plain.Process(Event{Key: "k", Time: at(30), Values: []float64{1}}, at(30), out)
	if len(out) != 1 || out[0].Samples != nil {
		t.Fatalf("a window without raw fields carries samples: %+v", out)
	}
	if err := (Spec{Kind: Tumbling, Size: 1, Fields: []string{"a"}, Raw: []int{0}}).Validate(); err == nil {
		t.Fatal("raw samples without a bound were accepted")
	}
}
