// Package window is the agent's event-time windowing: keyed tumbling,
// sliding, session and count windows with watermarks (bounded
// out-of-orderness or punctuation, idle-source advance), allowed lateness
// with revised results, a late side output, early firings, and incremental
// aggregations. Memory is O(keys × open windows), never O(events). Time is
// passed in, never read from a clock, so tests drive it exactly.
package window

import (
	"container/heap"
	"fmt"
	"sort"
	"time"
)

// Kind of window.
type Kind string

// Window kinds.
const (
	Tumbling Kind = "tumbling"
	Sliding  Kind = "sliding"
	Session  Kind = "session"
	CountWin Kind = "count"
)

// Watermark strategies.
const (
	Bounded    = "bounded"    // max event time seen minus max_out_of_order
	Punctuated = "punctuated" // only events carrying a watermark move it
)

// Spec configures one windowed aggregation.
type Spec struct {
	Kind            Kind
	Size            time.Duration // tumbling and sliding
	Slide           time.Duration // sliding
	Gap             time.Duration // session
	Count           int           // count
	Watermark       string        // Bounded (default) or Punctuated
	MaxOutOfOrder   time.Duration // Bounded: how far behind the newest event the watermark trails
	AllowedLateness time.Duration // fired windows keep accepting (and re-emitting) this long
	IdleTimeout     time.Duration // no events this long: event time follows processing time
	EarlyEvery      int           // also fire every N events per open window (0: off)
	EarlyInterval   time.Duration // also fire open windows every T of processing time (0: off)
	Fields          []string      // the numeric fields aggregated, in order
	Percentiles     bool          // keep a quantile sketch per field (for p50…p99)
	// Raw lists the fields (indexes into Fields) whose raw samples each
	// window keeps, for models that take sequences or spectra; at most
	// MaxSamples per key and window, past which samples are dropped and
	// counted.
	Raw        []int
	MaxSamples int
}

// Validate checks the spec; errors wrap ErrSpec.
func (s Spec) Validate() error {
	switch s.Kind {
	case Tumbling:
		if s.Size <= 0 {
			return fmt.Errorf("%w: size must be positive", ErrSpec)
		}
	case Sliding:
		if s.Size <= 0 || s.Slide <= 0 || s.Slide > s.Size {
			return fmt.Errorf("%w: sliding needs 0 < slide ≤ size", ErrSpec)
		}
		if s.Size%s.Slide != 0 {
			return fmt.Errorf("%w: size must be a multiple of slide", ErrSpec)
		}
	case Session:
		if s.Gap <= 0 {
			return fmt.Errorf("%w: gap must be positive", ErrSpec)
		}
	case CountWin:
		if s.Count < 1 {
			return fmt.Errorf("%w: count must be at least 1", ErrSpec)
		}
	default:
		return fmt.Errorf("%w: kind %q (tumbling, sliding, session or count)", ErrSpec, s.Kind)
	}
	if s.Watermark != "" && s.Watermark != Bounded && s.Watermark != Punctuated {
		return fmt.Errorf("%w: watermark %q (bounded or punctuated)", ErrSpec, s.Watermark)
	}
	if s.MaxOutOfOrder < 0 || s.AllowedLateness < 0 || s.IdleTimeout < 0 || s.EarlyEvery < 0 || s.EarlyInterval < 0 {
		return fmt.Errorf("%w: durations and counts must not be negative", ErrSpec)
	}
	if len(s.Fields) == 0 {
		return fmt.Errorf("%w: at least one field", ErrSpec)
	}
	for _, i := range s.Raw {
		if i < 0 || i >= len(s.Fields) {
			return fmt.Errorf("%w: raw field %d of %d", ErrSpec, i, len(s.Fields))
		}
	}
	if len(s.Raw) > 0 && s.MaxSamples < 1 {
		return fmt.Errorf("%w: raw samples need max_samples ≥ 1", ErrSpec)
	}
	return nil
}

// Event is one reading. Values line up with Spec.Fields.
type Event struct {
	Key    string
	Time   time.Time
	Values []float64
	// Watermark, when not zero, says no later event will be older than it
	// (punctuated watermarks).
	Watermark time.Time
}

// Firing says why a result was emitted.
type Firing string

// Firings.
const (
	Final  Firing = "final"  // the watermark passed the window's end
	Update Firing = "update" // a late event within allowed lateness changed a fired window
	Early  Firing = "early"  // an early trigger, before the window closed
)

func (o *Operator) newAccs() []acc {
	accs := make([]acc, len(o.spec.Fields))
	if o.spec.Percentiles {
		for i := range accs {
			accs[i].sk = newSketch()
		}
	}
	return accs
}

// Result is one window's aggregates.
type Result struct {
	Key        string
	Start, End time.Time
	Firing     Firing
	Revision   int // 0 for the first final result, +1 per update
	Count      int64
	accs       []acc
	// Samples are the window's raw readings of Spec.Raw, time-sorted
	// (nil without Raw); Dropped counts those past MaxSamples.
	Samples *Samples
	Dropped int
}

// Samples are raw readings: T in Unix nanoseconds and V[k][i] the k-th
// raw field at T[i].
type Samples struct {
	T []int64
	V [][]float64
}

// Value reads one aggregation of field i.
func (r *Result) Value(i int, a Agg) float64 { return r.accs[i].value(a) }

// Stats count what the operator saw.
type Stats struct {
	Events, Late, Results int64
	// RawDropped counts raw samples past a window's MaxSamples.
	RawDropped int64
}

type win struct {
	start, end int64 // nanoseconds; end exclusive (sessions: last event + gap)
	accs       []acc
	n          int64
	fired      bool
	revision   int
	sinceEarly int
	dirty      bool // changed since the last early firing
	raw        *Samples
	dropped    int
}

type keyState struct {
	wins    []*win // sorted by start
	touched bool   // changed since the last committed checkpoint (listed in Operator.touched)
	gen     int    // the Delta that last encoded it
}

// Operator windows one stream. It is not safe for concurrent use: one
// goroutine owns a pipeline.
type Operator struct {
	spec     Spec
	keys     map[string]*keyState
	timers   timerHeap
	maxEvent int64
	wm       int64
	seen     bool
	arrival  time.Time // processing time of the last event
	early    time.Time // processing time of the last interval early firing
	Stats    Stats

	// Delta checkpoints (delta.go): the keys changed since the last
	// commit, and whether the next one must write every key.
	touched   []string
	full      bool
	gen       int
	buf       []byte
	spans     []deltaSpan
	deltaKeys []KeyState
	specStr   string
}

// New builds an operator; spec must be valid.
func New(spec Spec) (*Operator, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	if spec.Watermark == "" {
		spec.Watermark = Bounded
	}
	return &Operator{spec: spec, keys: map[string]*keyState{}, wm: minTime, full: true}, nil
}

const minTime = -1 << 63

// Watermark is the current event-time watermark.
func (o *Operator) Watermark() time.Time {
	if o.wm == minTime {
		return time.Time{}
	}
	return time.Unix(0, o.wm)
}

// Process adds one event at processing time now. It appends any results
// to out and returns it; a late event goes to late (the side output).
func (o *Operator) Process(ev Event, now time.Time, out []Result) (results []Result, late bool) {
	o.Stats.Events++
	o.arrival = now
	if o.spec.Kind == CountWin {
		return o.processCount(ev, out), false
	}
	t := ev.Time.UnixNano()
	ks := o.keys[ev.Key]
	if ks == nil {
		ks = &keyState{}
		o.keys[ev.Key] = ks
	}
	o.mark(ev.Key, ks)
	if o.spec.Kind == Session {
		out, late = o.addSession(ev, ks, t, out)
	} else {
		out, late = o.addAligned(ev, ks, t, out)
	}
	if late {
		o.Stats.Late++
	}
	// The watermark moves after the event is placed: an event is never
	// late relative to itself.
	if t > o.maxEvent || !o.seen {
		o.maxEvent, o.seen = t, true
	}
	nw := o.wm
	if o.spec.Watermark == Bounded {
		nw = max(nw, o.maxEvent-int64(o.spec.MaxOutOfOrder))
	}
	if !ev.Watermark.IsZero() {
		nw = max(nw, ev.Watermark.UnixNano())
	}
	return o.advanceTo(nw, out), late
}

// Advance moves processing time: idle-source watermark advance and
// interval early firings. Call it periodically.
func (o *Operator) Advance(now time.Time, out []Result) []Result {
	if o.spec.IdleTimeout > 0 && o.seen && now.Sub(o.arrival) > o.spec.IdleTimeout {
		// The source is idle: let event time follow processing time, so
		// one silent sensor cannot hold every window open.
		virtual := o.maxEvent + int64(now.Sub(o.arrival))
		out = o.advanceTo(max(o.wm, virtual-int64(o.spec.MaxOutOfOrder)), out)
	}
	if o.spec.EarlyInterval > 0 && now.Sub(o.early) >= o.spec.EarlyInterval {
		o.early = now
		for key, ks := range o.keys {
			for _, w := range ks.wins {
				if !w.fired && w.dirty {
					o.mark(key, ks)
					out = o.emit(out, key, w, Early)
				}
			}
		}
	}
	return out
}

// addAligned handles tumbling and sliding windows.
func (o *Operator) addAligned(ev Event, ks *keyState, t int64, out []Result) ([]Result, bool) {
	size, slide := int64(o.spec.Size), int64(o.spec.Slide)
	if o.spec.Kind == Tumbling {
		slide = size
	}
	last := floorDiv(t, slide) * slide // latest window start holding t
	placed := false
	for start := last; start > t-size; start -= slide {
		end := start + size
		if end+int64(o.spec.AllowedLateness) <= o.wm {
			continue // this window is gone; an older one is gone too
		}
		w := ks.find(start)
		if w == nil {
			if end <= o.wm {
				// Fired and purged already or never opened: only lateness
				// keeps a window, and that has passed for a new one too.
				continue
			}
			w = ks.insert(&win{start: start, end: end, accs: o.newAccs()})
			heap.Push(&o.timers, timer{at: end, key: ev.Key, start: start})
		}
		out = o.add(out, ev, w, t)
		placed = true
	}
	return out, !placed
}

// add folds the event into w and emits updates or early firings.
func (o *Operator) add(out []Result, ev Event, w *win, t int64) []Result {
	secs := float64(t-w.start) / 1e9
	for i, v := range ev.Values {
		w.accs[i].add(secs, v)
	}
	w.n++
	w.dirty = true
	if len(o.spec.Raw) > 0 {
		o.keep(w, ev, t)
	}
	if w.fired {
		w.revision++
		return o.emit(out, ev.Key, w, Update)
	}
	if o.spec.EarlyEvery > 0 {
		w.sinceEarly++
		if w.sinceEarly >= o.spec.EarlyEvery {
			w.sinceEarly = 0
			out = o.emit(out, ev.Key, w, Early)
		}
	}
	return out
}

// addSession places an event into its key's sessions, merging sessions
// the event bridges.
func (o *Operator) addSession(ev Event, ks *keyState, t int64, out []Result) ([]Result, bool) {
	gap := int64(o.spec.Gap)
	lo, hi := t, t+gap
	var hit []*win
	for _, w := range ks.wins {
		if w.start <= hi && lo <= w.end { // [t, t+gap) touches [start, end)
			hit = append(hit, w)
		}
	}
	if len(hit) == 0 {
		if hi+int64(o.spec.AllowedLateness) <= o.wm || hi <= o.wm {
			return out, true // a new session that would already be closed
		}
		w := ks.insert(&win{start: t, end: hi, accs: o.newAccs()})
		heap.Push(&o.timers, timer{at: hi, key: ev.Key, start: t})
		return o.add(out, ev, w, t), false
	}
	w := hit[0]
	oldStart, oldEnd := w.start, w.end
	for _, other := range hit[1:] { // merge later sessions into the first
		d := float64(other.start-w.start) / 1e9
		for i := range other.accs {
			other.accs[i].shift(d)
			w.accs[i].merge(&other.accs[i])
		}
		w.n += other.n
		if other.raw != nil {
			if w.raw == nil {
				w.raw = &Samples{V: make([][]float64, len(o.spec.Raw))}
			}
			room := max(o.spec.MaxSamples-len(w.raw.T), 0)
			take := min(room, len(other.raw.T))
			w.raw.T = append(w.raw.T, other.raw.T[:take]...)
			for k := range w.raw.V {
				w.raw.V[k] = append(w.raw.V[k], other.raw.V[k][:take]...)
			}
			lost := len(other.raw.T) - take
			w.dropped += other.dropped + lost
			o.Stats.RawDropped += int64(lost)
		}
		w.end = max(w.end, other.end)
		w.fired = w.fired || other.fired
		w.revision = max(w.revision, other.revision)
		ks.remove(other)
	}
	if t < w.start { // the session starts earlier: move the time origin
		d := float64(w.start-t) / 1e9
		for i := range w.accs {
			w.accs[i].shift(d)
		}
		w.start = t
	}
	w.end = max(w.end, hi)
	if w.start != oldStart || w.end != oldEnd {
		// Timers are found by (key, start) and checked against the end
		// when they pop, so older timers of this session go stale safely.
		heap.Push(&o.timers, timer{at: w.end, key: ev.Key, start: w.start})
	}
	return o.add(out, ev, w, t), false
}

func (o *Operator) processCount(ev Event, out []Result) []Result {
	ks := o.keys[ev.Key]
	if ks == nil {
		ks = &keyState{wins: []*win{{accs: o.newAccs()}}}
		o.keys[ev.Key] = ks
	}
	o.mark(ev.Key, ks)
	w := ks.wins[0]
	t := ev.Time.UnixNano()
	if w.n == 0 {
		w.start = t
	}
	w.end = max(w.end, t)
	out = o.add(out, ev, w, t)
	if w.n >= int64(o.spec.Count) {
		out = o.emit(out, ev.Key, w, Final)
		ks.wins[0] = &win{accs: o.newAccs()}
	}
	return out
}

// advanceTo moves the watermark and fires and purges what it passes.
func (o *Operator) advanceTo(nw int64, out []Result) []Result {
	if nw <= o.wm {
		return out
	}
	o.wm = nw
	for len(o.timers) > 0 && o.timers[0].at <= o.wm {
		tm := heap.Pop(&o.timers).(timer)
		ks := o.keys[tm.key]
		if ks == nil {
			continue
		}
		w := ks.find(tm.start)
		if w == nil {
			continue // merged away or purged
		}
		switch {
		case !w.fired && w.end <= o.wm:
			o.mark(tm.key, ks)
			w.fired = true
			out = o.emit(out, tm.key, w, Final)
			if o.spec.AllowedLateness > 0 {
				heap.Push(&o.timers, timer{at: w.end + int64(o.spec.AllowedLateness), key: tm.key, start: w.start})
				continue
			}
			ks.remove(w)
		case w.fired && w.end+int64(o.spec.AllowedLateness) <= o.wm:
			o.mark(tm.key, ks)
			ks.remove(w)
		case w.fired:
			// A late event extended this session after it fired: purge later.
			heap.Push(&o.timers, timer{at: w.end + int64(o.spec.AllowedLateness), key: tm.key, start: w.start})
		}
		if len(ks.wins) == 0 {
			delete(o.keys, tm.key)
		}
	}
	return out
}

func (o *Operator) emit(out []Result, key string, w *win, f Firing) []Result {
	o.Stats.Results++
	w.dirty = false
	accs := make([]acc, len(w.accs))
	copy(accs, w.accs)
	for i := range accs {
		if accs[i].sk != nil {
			accs[i].sk = accs[i].sk.clone() // the window may go on changing
		}
	}
	end := w.end
	if o.spec.Kind == CountWin {
		end++ // count windows: [first event, last event]
	}
	return append(out, Result{Key: key, Start: time.Unix(0, w.start).UTC(), End: time.Unix(0, end).UTC(),
		Firing: f, Revision: w.revision, Count: w.n, accs: accs, Samples: sortedCopy(w.raw, len(o.spec.Raw)), Dropped: w.dropped})
}

// keep buffers ev's raw fields in w, up to MaxSamples.
func (o *Operator) keep(w *win, ev Event, t int64) {
	if w.raw == nil {
		w.raw = &Samples{V: make([][]float64, len(o.spec.Raw))}
	}
	if len(w.raw.T) >= o.spec.MaxSamples {
		w.dropped++
		o.Stats.RawDropped++
		return
	}
	w.raw.T = append(w.raw.T, t)
	for k, i := range o.spec.Raw {
		w.raw.V[k] = append(w.raw.V[k], ev.Values[i])
	}
}

// sortedCopy copies a window's samples in time order (events arrive out
// of order; the window may go on changing after it fires).
func sortedCopy(s *Samples, fields int) *Samples {
	if fields == 0 {
		return nil
	}
	out := &Samples{V: make([][]float64, fields)}
	if s == nil {
		return out
	}
	idx := make([]int, len(s.T))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return s.T[idx[a]] < s.T[idx[b]] })
	out.T = make([]int64, len(idx))
	for i, j := range idx {
		out.T[i] = s.T[j]
	}
	for k := range out.V {
		out.V[k] = make([]float64, len(idx))
		for i, j := range idx {
			out.V[k][i] = s.V[k][j]
		}
	}
	return out
}

// OpenWindows counts the windows held in memory, for tests and metrics.
func (o *Operator) OpenWindows() int {
	n := 0
	for _, ks := range o.keys {
		n += len(ks.wins)
	}
	return n
}

func (ks *keyState) find(start int64) *win {
	for _, w := range ks.wins {
		if w.start == start {
			return w
		}
	}
	return nil
}

func (ks *keyState) insert(w *win) *win {
	i := len(ks.wins)
	for i > 0 && ks.wins[i-1].start > w.start {
		i--
	}
	ks.wins = append(ks.wins, nil)
	copy(ks.wins[i+1:], ks.wins[i:])
	ks.wins[i] = w
	return w
}

func (ks *keyState) remove(w *win) {
	for i, x := range ks.wins {
		if x == w {
			ks.wins = append(ks.wins[:i], ks.wins[i+1:]...)
			return
		}
	}
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if (a%b != 0) && ((a < 0) != (b < 0)) {
		q--
	}
	return q
}

type timer struct {
	at    int64
	key   string
	start int64
}

type timerHeap []timer

func (h timerHeap) Len() int { return len(h) }

// Less orders by time, then key and start, so results that fire together
// come out in the same order however the timers were pushed (a restored
// operator must repeat an uninterrupted one exactly).
func (h timerHeap) Less(i, j int) bool {
	if h[i].at != h[j].at {
		return h[i].at < h[j].at
	}
	if h[i].key != h[j].key {
		return h[i].key < h[j].key
	}
	return h[i].start < h[j].start
}
func (h timerHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *timerHeap) Push(x any)   { *h = append(*h, x.(timer)) }
func (h *timerHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	*h = old[:len(old)-1]
	return t
}
