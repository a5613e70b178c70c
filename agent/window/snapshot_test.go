package window

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// TestSnapshotRestoreContinuesExactly: cutting a stream anywhere, taking a
// snapshot and restoring it into a fresh operator yields exactly the
// results of an uninterrupted run.
func TestSnapshotRestoreContinuesExactly(t *testing.T) {
	specs := []Spec{
		{Kind: Tumbling, Size: 5 * time.Second, MaxOutOfOrder: time.Second, AllowedLateness: 3 * time.Second},
		{Kind: Sliding, Size: 6 * time.Second, Slide: 2 * time.Second, MaxOutOfOrder: time.Second},
		{Kind: Session, Gap: 2 * time.Second, MaxOutOfOrder: time.Second},
		{Kind: CountWin, Count: 7},
		{Kind: Tumbling, Size: 5 * time.Second, MaxOutOfOrder: time.Second, Percentiles: true},
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var events []Event
	for i := 0; i < 2000; i++ {
		jitter := time.Duration(rng.IntN(1500)) * time.Millisecond
		events = append(events, Event{Key: fmt.Sprint("k", rng.IntN(5)), Time: t0.Add(time.Duration(i)*20*time.Millisecond - jitter),
			Values: []float64{rng.Float64()}})
	}
	for _, spec := range specs {
		spec.Fields = []string{"v"}
		whole, _ := New(spec)
		var want []Result
		for _, e := range events {
			want, _ = whole.Process(e, t0, want)
		}
		for _, cut := range []int{1, 333, 1000, 1999} {
			a, _ := New(spec)
			var got []Result
			for _, e := range events[:cut] {
				got, _ = a.Process(e, t0, got)
			}
			snap, err := a.Snapshot()
			if err != nil {
				t.Fatal(err)
			}
			b, _ := New(spec)
			if err := b.Restore(snap); err != nil {
				t.Fatal(err)
			}
			for _, e := range events[cut:] {
				got, _ = b.Process(e, t0, got)
			}
			if fmt.Sprint(view(got)) != fmt.Sprint(view(want)) {
				t.Fatalf("%s cut at %d: %d results, want %d", spec.Kind, cut, len(got), len(want))
			}
			for i := range got {
				if got[i].Value(0, Mean) != want[i].Value(0, Mean) || (spec.Percentiles && got[i].Value(0, P90) != want[i].Value(0, P90)) {
					t.Fatalf("%s cut at %d: result %d mean differs", spec.Kind, cut, i)
				}
			}
		}
	}
}

func TestRestoreRefusesOtherSpecOrGarbage(t *testing.T) {
	a, _ := New(Spec{Kind: Tumbling, Size: time.Second, Fields: []string{"v"}})
	snap, _ := a.Snapshot()
	b, _ := New(Spec{Kind: Tumbling, Size: 2 * time.Second, Fields: []string{"v"}})
	if err := b.Restore(snap); !errors.Is(err, ErrSnapshot) {
		t.Fatalf("other spec: %v", err)
	}
	if err := a.Restore([]byte("junk")); !errors.Is(err, ErrSnapshot) {
		t.Fatalf("garbage: %v", err)
	}
}
