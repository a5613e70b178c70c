package window

import (
	"bytes"
	"container/heap"
	"encoding/gob"
	"fmt"
)

// The snapshot mirrors the operator's state with exported fields for gob.
type snapAcc struct {
	N, Sum, SumSq, Mean, M2, Min, Max, FirstT, FirstV, LastT, LastV, SumT, SumTT, SumTV float64
	Sketch                                                                              *snapSketch
}

type snapSketch struct {
	Pos, Neg map[int32]uint64
	Zero     uint64
}

type snapWin struct {
	Start, End          int64
	Accs                []snapAcc
	N                   int64
	Fired, Dirty        bool
	Revision, SinceEarl int
	Raw                 *Samples
	Dropped             int
}

type snapshot struct {
	Spec     Spec
	Keys     map[string][]snapWin
	MaxEvent int64
	WM       int64
	Seen     bool
}

// Snapshot serialises the operator's state: open windows, fired windows
// still within their lateness, and the watermark. Its size is
// O(keys × open windows).
func (o *Operator) Snapshot() ([]byte, error) {
	s := snapshot{Spec: o.spec, Keys: make(map[string][]snapWin, len(o.keys)), MaxEvent: o.maxEvent, WM: o.wm, Seen: o.seen}
	for k, ks := range o.keys {
		ws := make([]snapWin, len(ks.wins))
		for i, w := range ks.wins {
			sw := snapWin{Start: w.start, End: w.end, N: w.n, Fired: w.fired, Dirty: w.dirty, Revision: w.revision, SinceEarl: w.sinceEarly,
				Accs: make([]snapAcc, len(w.accs)), Raw: w.raw, Dropped: w.dropped}
			for j, a := range w.accs {
				sw.Accs[j] = snapAcc{a.n, a.sum, a.sumSq, a.mean, a.m2, a.min, a.max, a.firstT, a.firstV, a.lastT, a.lastV, a.sumT, a.sumTT, a.sumTV, nil}
				if a.sk != nil {
					sw.Accs[j].Sketch = &snapSketch{Pos: a.sk.pos, Neg: a.sk.neg, Zero: a.sk.zero}
				}
			}
			ws[i] = sw
		}
		s.Keys[k] = ws
	}
	var buf bytes.Buffer
	if err := gob.NewEncoder(&buf).Encode(&s); err != nil {
		return nil, fmt.Errorf("window: snapshot: %w", err)
	}
	return buf.Bytes(), nil
}

// Restore replaces the operator's state with a snapshot taken from an
// operator with the same spec; another spec is an error, because windows
// of another shape cannot be continued.
func (o *Operator) Restore(data []byte) error {
	var s snapshot
	if err := gob.NewDecoder(bytes.NewReader(data)).Decode(&s); err != nil {
		return fmt.Errorf("%w: decode: %w", ErrSnapshot, err)
	}
	if fmt.Sprint(s.Spec) != fmt.Sprint(o.spec) {
		return fmt.Errorf("%w: taken with another window spec", ErrSnapshot)
	}
	o.keys = make(map[string]*keyState, len(s.Keys))
	o.timers = o.timers[:0]
	for k, ws := range s.Keys {
		ks := &keyState{}
		for _, sw := range ws {
			w := &win{start: sw.Start, end: sw.End, n: sw.N, fired: sw.Fired, dirty: sw.Dirty, revision: sw.Revision, sinceEarly: sw.SinceEarl,
				accs: make([]acc, len(sw.Accs)), raw: sw.Raw, dropped: sw.Dropped}
			if w.raw != nil && len(w.raw.V) != len(o.spec.Raw) {
				return fmt.Errorf("%w: raw samples of %d fields, the spec keeps %d", ErrSnapshot, len(w.raw.V), len(o.spec.Raw))
			}
			for j, a := range sw.Accs {
				w.accs[j] = acc{a.N, a.Sum, a.SumSq, a.Mean, a.M2, a.Min, a.Max, a.FirstT, a.FirstV, a.LastT, a.LastV, a.SumT, a.SumTT, a.SumTV, nil}
				if o.spec.Percentiles {
					w.accs[j].sk = newSketch()
					if sk := a.Sketch; sk != nil {
						w.accs[j].sk.merge(&sketch{pos: sk.Pos, neg: sk.Neg, zero: sk.Zero})
					}
				}
			}
			ks.wins = append(ks.wins, w)
			if o.spec.Kind == CountWin {
				continue
			}
			at := w.end
			if w.fired {
				at += int64(o.spec.AllowedLateness)
			}
			heap.Push(&o.timers, timer{at: at, key: k, start: w.start})
		}
		o.keys[k] = ks
	}
	o.maxEvent, o.wm, o.seen = s.MaxEvent, s.WM, s.Seen
	// The next delta checkpoint writes every key: a full snapshot (older
	// checkpoints) becomes per-key rows on the first commit.
	o.touched, o.full = o.touched[:0], true
	return nil
}
