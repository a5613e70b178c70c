package envelope

// Watermarks holds, per device and stream, the highest seq accepted as part
// of a contiguous run. The hub's acker and its Kafka bridge both apply it to
// the same JetStream order, so a record the acker acknowledges is always one
// the bridge has accepted (the acker may start with lower marks after a
// restart; lower marks only ever reject more).
type Watermarks map[string]map[string]uint64 // device → stream → seq

// Get returns one mark.
func (w Watermarks) Get(device, stream string) uint64 { return w[device][stream] }

// Set raises or lowers one mark (used when loading a checkpoint).
func (w Watermarks) Set(device, stream string, seq uint64) {
	m := w[device]
	if m == nil {
		m = map[string]uint64{}
		w[device] = m
	}
	m[stream] = seq
}

// Accept decides whether e continues its stream without a gap, and if so
// raises the mark. It returns the records above the old mark: those at or
// below it are duplicates (resends) that must not be written again.
func (w Watermarks) Accept(e *Envelope) (fresh []Record, ok bool) {
	hw, ok := w.AcceptHeader(e.Header())
	if !ok || e.Last() <= hw {
		return nil, ok
	}
	i := 0
	for i < len(e.Records) && e.Records[i].Seq <= hw {
		i++
	}
	return e.Records[i:], true
}

// AcceptHeader is Accept for a decoded header: it returns the mark before
// the batch (records above it are fresh) and whether the batch continues
// its stream without a gap.
func (w Watermarks) AcceptHeader(h Header) (before uint64, ok bool) {
	hw := max(w.Get(h.Device, h.Stream), h.Floor)
	if h.Prev > hw {
		return hw, false // an earlier batch is missing; the device resends from its floor
	}
	w.Set(h.Device, h.Stream, max(hw, h.Last))
	return hw, true
}
