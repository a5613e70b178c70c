package window

import (
	"container/heap"
	"encoding/binary"
	"fmt"
	"math"
)

// Delta checkpoints: the operator remembers which keys changed since the
// last committed checkpoint (including keys whose last window closed and
// was purged), so a commit writes O(changed keys), not O(all keys). The
// store keeps one row per key plus a small global part (spec, watermark);
// a restore reads the global part and every key row.

// KeyState is one key's encoded windows; a nil State means the key is gone
// (its row is to be deleted).
type KeyState struct {
	Key   string
	State []byte
}

// Delta is what changed since the last committed checkpoint.
type Delta struct {
	// Full says Keys hold every key: the store drops every key row it
	// holds for this operator before writing them (a fresh operator, one
	// restored from a full snapshot, or one whose restore failed).
	Full bool
	// Global is the spec fingerprint and the watermark, always written.
	Global []byte
	Keys   []KeyState
}

// Encoding versions; the first byte of each encoded part.
const (
	globalV1 = 1
	keyV1    = 1
)

// mark records that key's state changed since the last commit.
func (o *Operator) mark(key string, ks *keyState) {
	if !ks.touched {
		ks.touched = true
		o.touched = append(o.touched, key)
	}
}

// Delta encodes the keys changed since the last Committed (every key when
// Full). The returned slices share a buffer the operator reuses: they are
// valid until the next Delta. The operator must not process events
// between Delta and Committed.
func (o *Operator) Delta() Delta {
	o.gen++
	buf := o.buf[:0]
	buf = o.appendGlobal(buf)
	globalEnd := len(buf)
	spans := o.spans[:0]
	if o.full {
		for k, ks := range o.keys {
			from := len(buf)
			buf = o.appendKey(buf, ks)
			spans = append(spans, deltaSpan{key: k, from: from, to: len(buf)})
		}
	} else {
		var gone map[string]bool
		for _, k := range o.touched {
			ks := o.keys[k]
			if ks == nil {
				if gone[k] {
					continue
				}
				if gone == nil {
					gone = map[string]bool{}
				}
				gone[k] = true
				spans = append(spans, deltaSpan{key: k, gone: true})
				continue
			}
			if ks.gen == o.gen {
				continue // listed twice: deleted and created again
			}
			ks.gen = o.gen
			from := len(buf)
			buf = o.appendKey(buf, ks)
			spans = append(spans, deltaSpan{key: k, from: from, to: len(buf)})
		}
	}
	o.buf, o.spans = buf, spans
	keys := o.deltaKeys[:0]
	for _, s := range spans {
		ks := KeyState{Key: s.key}
		if !s.gone {
			ks.State = buf[s.from:s.to:s.to]
		}
		keys = append(keys, ks)
	}
	o.deltaKeys = keys
	return Delta{Full: o.full, Global: buf[:globalEnd:globalEnd], Keys: keys}
}

type deltaSpan struct {
	key      string
	from, to int
	gone     bool
}

// Committed says the last Delta is durable: the next one starts from here.
func (o *Operator) Committed() {
	for _, k := range o.touched {
		if ks := o.keys[k]; ks != nil {
			ks.touched = false
		}
	}
	if o.full {
		for _, ks := range o.keys {
			ks.touched = false
		}
	}
	o.touched = o.touched[:0]
	o.full = false
}

// Touched is the number of keys changed since the last commit, for tests
// and metrics.
func (o *Operator) Touched() int { return len(o.touched) }

func (o *Operator) specPrint() string {
	if o.specStr == "" {
		o.specStr = fmt.Sprint(o.spec)
	}
	return o.specStr
}

func (o *Operator) appendGlobal(b []byte) []byte {
	b = append(b, globalV1)
	sp := o.specPrint()
	b = binary.AppendUvarint(b, uint64(len(sp)))
	b = append(b, sp...)
	b = binary.AppendVarint(b, o.maxEvent)
	b = binary.AppendVarint(b, o.wm)
	if o.seen {
		b = append(b, 1)
	} else {
		b = append(b, 0)
	}
	return b
}

const (
	flagFired = 1 << iota
	flagDirty
	flagRaw
)

func appendF64(b []byte, f float64) []byte {
	return binary.LittleEndian.AppendUint64(b, math.Float64bits(f))
}

func appendSketchMap(b []byte, m map[int32]uint64) []byte {
	b = binary.AppendUvarint(b, uint64(len(m)))
	for k, n := range m {
		b = binary.AppendVarint(b, int64(k))
		b = binary.AppendUvarint(b, n)
	}
	return b
}

func (o *Operator) appendKey(b []byte, ks *keyState) []byte {
	b = append(b, keyV1)
	b = binary.AppendUvarint(b, uint64(len(ks.wins)))
	for _, w := range ks.wins {
		b = binary.AppendVarint(b, w.start)
		b = binary.AppendVarint(b, w.end)
		b = binary.AppendVarint(b, w.n)
		var f byte
		if w.fired {
			f |= flagFired
		}
		if w.dirty {
			f |= flagDirty
		}
		if w.raw != nil {
			f |= flagRaw
		}
		b = append(b, f)
		b = binary.AppendVarint(b, int64(w.revision))
		b = binary.AppendVarint(b, int64(w.sinceEarly))
		b = binary.AppendVarint(b, int64(w.dropped))
		b = binary.AppendUvarint(b, uint64(len(w.accs)))
		for i := range w.accs {
			a := &w.accs[i]
			for _, v := range [...]float64{a.n, a.sum, a.sumSq, a.mean, a.m2, a.min, a.max, a.firstT, a.firstV, a.lastT, a.lastV, a.sumT, a.sumTT, a.sumTV} {
				b = appendF64(b, v)
			}
			if a.sk == nil {
				b = append(b, 0)
				continue
			}
			b = append(b, 1)
			b = appendSketchMap(b, a.sk.pos)
			b = appendSketchMap(b, a.sk.neg)
			b = binary.AppendUvarint(b, a.sk.zero)
		}
		if w.raw != nil {
			b = binary.AppendUvarint(b, uint64(len(w.raw.T)))
			for _, t := range w.raw.T {
				b = binary.AppendVarint(b, t)
			}
			b = binary.AppendUvarint(b, uint64(len(w.raw.V)))
			for _, vs := range w.raw.V {
				b = binary.AppendUvarint(b, uint64(len(vs)))
				for _, v := range vs {
					b = appendF64(b, v)
				}
			}
		}
	}
	return b
}

// reader decodes the parts above; the first error sticks.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(what string) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: truncated or corrupt %s", ErrSnapshot, what)
	}
	r.b = nil
}

func (r *reader) byte() byte {
	if len(r.b) < 1 {
		r.fail("byte")
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *reader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail("uvarint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) varint() int64 {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail("varint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

// count reads a length and checks it against what is left (each element
// takes at least min bytes), so corrupt input cannot make huge slices.
func (r *reader) count(min int) int {
	n := r.uvarint()
	if n > uint64(len(r.b)/max(min, 1)) {
		r.fail("length")
		return 0
	}
	return int(n)
}

func (r *reader) f64() float64 {
	if len(r.b) < 8 {
		r.fail("float")
		return 0
	}
	v := math.Float64frombits(binary.LittleEndian.Uint64(r.b))
	r.b = r.b[8:]
	return v
}

func (r *reader) sketchMap() map[int32]uint64 {
	n := r.count(2)
	m := make(map[int32]uint64, n)
	for i := 0; i < n && r.err == nil; i++ {
		k := r.varint()
		m[int32(k)] = r.uvarint()
	}
	return m
}

func (o *Operator) decodeKey(data []byte) (*keyState, error) {
	r := &reader{b: data}
	if v := r.byte(); r.err == nil && v != keyV1 {
		return nil, fmt.Errorf("%w: key state version %d", ErrSnapshot, v)
	}
	ks := &keyState{}
	nw := r.count(8)
	for i := 0; i < nw && r.err == nil; i++ {
		w := &win{start: r.varint(), end: r.varint(), n: r.varint()}
		f := r.byte()
		w.fired, w.dirty = f&flagFired != 0, f&flagDirty != 0
		w.revision, w.sinceEarly, w.dropped = int(r.varint()), int(r.varint()), int(r.varint())
		na := r.count(14 * 8)
		if r.err == nil && na != len(o.spec.Fields) {
			return nil, fmt.Errorf("%w: %d fields, the spec has %d", ErrSnapshot, na, len(o.spec.Fields))
		}
		w.accs = make([]acc, na)
		for j := 0; j < na && r.err == nil; j++ {
			a := &w.accs[j]
			*a = acc{r.f64(), r.f64(), r.f64(), r.f64(), r.f64(), r.f64(), r.f64(), r.f64(), r.f64(), r.f64(), r.f64(), r.f64(), r.f64(), r.f64(), nil}
			var sk *sketch
			if r.byte() == 1 {
				sk = &sketch{pos: r.sketchMap(), neg: r.sketchMap(), zero: r.uvarint()}
			}
			if o.spec.Percentiles {
				a.sk = newSketch()
				if sk != nil {
					a.sk.merge(sk)
				}
			}
		}
		if f&flagRaw != 0 {
			w.raw = &Samples{}
			if nt := r.count(1); r.err == nil {
				w.raw.T = make([]int64, nt)
				for k := range w.raw.T {
					w.raw.T[k] = r.varint()
				}
			}
			nf := r.count(1)
			if r.err == nil && nf != len(o.spec.Raw) {
				return nil, fmt.Errorf("%w: raw samples of %d fields, the spec keeps %d", ErrSnapshot, nf, len(o.spec.Raw))
			}
			w.raw.V = make([][]float64, nf)
			for k := 0; k < nf && r.err == nil; k++ {
				vs := make([]float64, r.count(8))
				for x := range vs {
					vs[x] = r.f64()
				}
				w.raw.V[k] = vs
			}
		}
		ks.wins = append(ks.wins, w)
	}
	if r.err == nil && len(r.b) != 0 {
		r.fail("key state (trailing bytes)")
	}
	return ks, r.err
}

// RestoreState replaces the operator's state with a delta checkpoint: the
// global part and every stored key row (rows with a nil State are
// skipped). Another spec, or a corrupt part, is an error and leaves the
// operator as it was.
func (o *Operator) RestoreState(global []byte, keys []KeyState) error {
	r := &reader{b: global}
	if v := r.byte(); r.err == nil && v != globalV1 {
		return fmt.Errorf("%w: checkpoint version %d", ErrSnapshot, v)
	}
	n := r.count(1)
	var sp string
	if r.err == nil {
		sp, r.b = string(r.b[:n]), r.b[n:]
	}
	maxEvent, wm, seen := r.varint(), r.varint(), r.byte() == 1
	if r.err != nil {
		return r.err
	}
	if sp != o.specPrint() {
		return fmt.Errorf("%w: taken with another window spec", ErrSnapshot)
	}
	states := make(map[string]*keyState, len(keys))
	var timers timerHeap
	for _, k := range keys {
		if k.State == nil {
			continue
		}
		ks, err := o.decodeKey(k.State)
		if err != nil {
			return fmt.Errorf("key %q: %w", k.Key, err)
		}
		states[k.Key] = ks
		if o.spec.Kind == CountWin {
			continue
		}
		for _, w := range ks.wins {
			at := w.end
			if w.fired {
				at += int64(o.spec.AllowedLateness)
			}
			timers = append(timers, timer{at: at, key: k.Key, start: w.start})
		}
	}
	heap.Init(&timers)
	o.keys, o.timers = states, timers
	o.maxEvent, o.wm, o.seen = maxEvent, wm, seen
	o.touched, o.full = o.touched[:0], false
	return nil
}
