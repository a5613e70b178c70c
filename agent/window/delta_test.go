package window

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"testing"
	"time"
)

// dump prints an operator's checkpointed state canonically (keys sorted;
// fmt sorts the sketch maps), so two operators can be compared exactly.
func dump(o *Operator) string {
	var b strings.Builder
	keys := make([]string, 0, len(o.keys))
	for k := range o.keys {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	fmt.Fprintf(&b, "wm=%d max=%d seen=%v\n", o.wm, o.maxEvent, o.seen)
	for _, k := range keys {
		fmt.Fprintf(&b, "%s:", k)
		for _, w := range o.keys[k].wins {
			fmt.Fprintf(&b, " [%d %d n=%d f=%v d=%v r=%d e=%d x=%d", w.start, w.end, w.n, w.fired, w.dirty, w.revision, w.sinceEarly, w.dropped)
			for _, a := range w.accs {
				fmt.Fprintf(&b, " %v", [...]float64{a.n, a.sum, a.sumSq, a.mean, a.m2, a.min, a.max, a.firstT, a.firstV, a.lastT, a.lastV, a.sumT, a.sumTT, a.sumTV})
				if a.sk != nil {
					fmt.Fprintf(&b, " sk%v%v%d", a.sk.pos, a.sk.neg, a.sk.zero)
				}
			}
			if w.raw != nil {
				fmt.Fprintf(&b, " raw%v%v", w.raw.T, w.raw.V)
			}
			b.WriteString("]")
		}
		b.WriteString("\n")
	}
	return b.String()
}

// memRows is a checkpoint store as the outbox keeps it: a global part and
// one row per key.
type memRows struct {
	global []byte
	keys   map[string][]byte
}

func (m *memRows) apply(d Delta) {
	if d.Full || m.keys == nil {
		m.keys = map[string][]byte{}
	}
	m.global = append([]byte(nil), d.Global...)
	for _, k := range d.Keys {
		if k.State == nil {
			delete(m.keys, k.Key)
		} else {
			m.keys[k.Key] = append([]byte(nil), k.State...)
		}
	}
}

func (m *memRows) rows() []KeyState {
	var out []KeyState
	for k, s := range m.keys {
		out = append(out, KeyState{k, s})
	}
	return out
}

// TestDeltaRestoreEqualsFull: committing deltas every few events and
// restoring from the rows gives exactly the state of the live operator
// (and of a full snapshot's restore), over every window kind, raw
// samples, merging sessions, count windows, early firings and keys that
// close and are deleted; the restored operator then continues exactly.
func TestDeltaRestoreEqualsFull(t *testing.T) {
	cases := []struct {
		name string
		spec Spec
	}{
		{"tumbling", Spec{Kind: Tumbling, Size: 2 * time.Second, MaxOutOfOrder: time.Second}},
		{"tumbling-lateness", Spec{Kind: Tumbling, Size: 2 * time.Second, MaxOutOfOrder: time.Second, AllowedLateness: 3 * time.Second}},
		{"sliding", Spec{Kind: Sliding, Size: 3 * time.Second, Slide: time.Second, MaxOutOfOrder: time.Second}},
		{"session-raw", Spec{Kind: Session, Gap: 700 * time.Millisecond, MaxOutOfOrder: time.Second, AllowedLateness: time.Second, Raw: []int{0, 1}, MaxSamples: 5}},
		{"count", Spec{Kind: CountWin, Count: 7}},
		{"percentiles-early", Spec{Kind: Tumbling, Size: 4 * time.Second, MaxOutOfOrder: time.Second, Percentiles: true, EarlyEvery: 3, EarlyInterval: time.Second}},
		{"raw-idle", Spec{Kind: Tumbling, Size: 2 * time.Second, Raw: []int{1}, MaxSamples: 3, IdleTimeout: time.Second}},
	}
	rng := rand.New(rand.NewPCG(3, 4))
	var events []Event
	for i := 0; i < 3000; i++ {
		jitter := time.Duration(rng.IntN(1500)) * time.Millisecond
		// Bursts of keys that come and go, so windows close and keys are
		// purged and created again.
		key := fmt.Sprint("k", (i/300)*3+rng.IntN(6))
		events = append(events, Event{Key: key, Time: t0.Add(time.Duration(i)*10*time.Millisecond - jitter),
			Values: []float64{rng.Float64()*10 - 5, float64(i)}})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			spec := c.spec
			spec.Fields = []string{"a", "b"}
			live, err := New(spec)
			if err != nil {
				t.Fatal(err)
			}
			var store memRows
			var out []Result
			now := t0
			every := 1 + rng.IntN(40)
			deleted := 0
			for i, e := range events {
				now = now.Add(10 * time.Millisecond)
				out, _ = live.Process(e, now, out[:0])
				if i%97 == 0 {
					// A pause: idle advance and interval early firings.
					now = now.Add(1500 * time.Millisecond)
					out = live.Advance(now, out)
				}
				if i%every != 0 {
					continue
				}
				d := live.Delta()
				for _, k := range d.Keys {
					if k.State == nil {
						deleted++
					}
				}
				store.apply(d)
				live.Committed()
				if i%(every*7) != 0 {
					continue
				}
				fromRows, _ := New(spec)
				if err := fromRows.RestoreState(store.global, store.rows()); err != nil {
					t.Fatal(err)
				}
				snap, err := live.Snapshot()
				if err != nil {
					t.Fatal(err)
				}
				fromFull, _ := New(spec)
				if err := fromFull.Restore(snap); err != nil {
					t.Fatal(err)
				}
				if got, want := dump(fromRows), dump(live); got != want {
					t.Fatalf("event %d: rows restore\n%s\nwant\n%s", i, got, want)
				}
				if got, want := dump(fromRows), dump(fromFull); got != want {
					t.Fatalf("event %d: rows restore differs from a full snapshot's", i)
				}
				// Both go on exactly alike.
				a, b := live.clone(t), fromRows
				var ra, rb []Result
				for _, e := range events[i+1 : min(i+200, len(events))] {
					ra, _ = a.Process(e, now, ra)
					rb, _ = b.Process(e, now, rb)
				}
				if fmt.Sprint(view(ra)) != fmt.Sprint(view(rb)) {
					t.Fatalf("event %d: restored operator continues differently", i)
				}
			}
			if spec.Kind != CountWin && deleted == 0 {
				t.Fatalf("no key was ever deleted: the test does not exercise purges")
			}
		})
	}
}

// clone copies an operator through a full snapshot, so the original goes
// on untouched.
func (o *Operator) clone(t *testing.T) *Operator {
	snap, err := o.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	c, _ := New(o.spec)
	if err := c.Restore(snap); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestDeltaIsOnlyWhatChanged: a commit encodes the touched keys only; a
// failed commit (no Committed) keeps them for the next one; a purged key
// comes out as a deletion.
func TestDeltaIsOnlyWhatChanged(t *testing.T) {
	o, _ := New(Spec{Kind: Tumbling, Size: 10 * time.Second, Fields: []string{"v"}})
	for i := 0; i < 100; i++ {
		o.Process(Event{Key: fmt.Sprint("k", i), Time: t0, Values: []float64{1}}, t0, nil)
	}
	if d := o.Delta(); !d.Full || len(d.Keys) != 100 {
		t.Fatalf("first delta: full=%v keys=%d, want every key", d.Full, len(d.Keys))
	}
	o.Committed()
	o.Process(Event{Key: "k3", Time: t0, Values: []float64{1}}, t0, nil)
	if d := o.Delta(); d.Full || len(d.Keys) != 1 || d.Keys[0].Key != "k3" {
		t.Fatalf("delta %+v, want k3 only", d)
	}
	// Not committed: k3 stays in the next delta with k4.
	o.Process(Event{Key: "k4", Time: t0, Values: []float64{1}}, t0, nil)
	if d := o.Delta(); len(d.Keys) != 2 {
		t.Fatalf("%d keys after a failed commit, want 2", len(d.Keys))
	}
	o.Committed()
	// The watermark passes every window: every key is purged.
	o.Process(Event{Key: "k5", Time: t0.Add(time.Minute), Values: []float64{1}}, t0, nil)
	d := o.Delta()
	gone := 0
	for _, k := range d.Keys {
		if k.State == nil {
			gone++
		}
	}
	if gone != 99 || len(d.Keys) != 100 {
		t.Fatalf("%d deletions of %d keys, want 99 of 100", gone, len(d.Keys))
	}
}

func TestRestoreStateRefusesOtherSpecOrGarbage(t *testing.T) {
	a, _ := New(Spec{Kind: Tumbling, Size: time.Second, Fields: []string{"v"}})
	a.Process(Event{Key: "k", Time: t0, Values: []float64{1}}, t0, nil)
	d := a.Delta()
	b, _ := New(Spec{Kind: Tumbling, Size: 2 * time.Second, Fields: []string{"v"}})
	if err := b.RestoreState(d.Global, d.Keys); !errors.Is(err, ErrSnapshot) {
		t.Fatalf("other spec: %v", err)
	}
	if err := a.RestoreState([]byte("junk"), nil); !errors.Is(err, ErrSnapshot) {
		t.Fatalf("garbage global: %v", err)
	}
	c, _ := New(Spec{Kind: Tumbling, Size: time.Second, Fields: []string{"v"}})
	state := d.Keys[0].State
	for cut := 0; cut < len(state); cut++ {
		if err := c.RestoreState(d.Global, []KeyState{{"k", state[:cut]}}); !errors.Is(err, ErrSnapshot) {
			t.Fatalf("key state cut at %d: %v", cut, err)
		}
	}
	if c.OpenWindows() != 0 {
		t.Fatalf("a failed restore changed the operator")
	}
}
