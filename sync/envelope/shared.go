package envelope

import (
	"bytes"
	"sync"
	"sync/atomic"
)

// Decoded is one payload read once: its header, which the hub's acker
// acks on, and the whole envelope, which the bridge writes to Kafka.
// Both come from the same inflated bytes, so the two can never judge one
// payload differently.
type Decoded struct {
	Header    Header
	HeaderErr error     // the acker refuses the payload
	Envelope  *Envelope // nil when Err is set
	Err       error     // the bridge dead-letters the payload
	size      int       // what it holds in memory, roughly
}

// Read inflates payload once and parses it once, for both the header and
// the whole envelope: an envelope with a sound header and a bad record is
// acked and dead-lettered, not left as a gap.
func (d *Decoder) Read(payload []byte) Decoded {
	raw, release, err := d.inflate(payload)
	if err != nil {
		return Decoded{HeaderErr: err, Err: err, size: 256}
	}
	defer release() // the parser copies what it keeps
	out := Decoded{size: len(payload) + 2*len(raw)}
	p, err := parse(raw, true)
	defer p.release()
	if err != nil {
		out.HeaderErr, out.Err = err, err
		return out
	}
	out.Header, out.HeaderErr = p.header()
	out.Envelope, out.Err = p.envelope()
	return out
}

// Shared hands a stored message's decoding from the first of its two
// readers (the acker and the bridge, which follow the same stream) to the
// second, so that each payload is inflated and parsed once. It holds at
// most maxBytes of decodings. Once that much waits, the first reader keeps
// nothing more until the second has taken some: the oldest decodings are
// the ones the late reader reaches first, and a reader that needs only the
// header (ReadHeader) then parses only that, instead of a whole decoding
// that would be dropped unread.
type Shared struct {
	dec      *Decoder
	maxBytes int
	// Hits counts readings that found the other reader's decoding;
	// Evicted those dropped before the other reader came (a decoding
	// larger than what was left); Full the readings that kept nothing
	// because maxBytes already waited.
	Hits, Evicted, Full atomic.Int64

	mu      sync.Mutex
	entries map[uint64]*sharedEntry
	order   []uint64  // insertion order, for eviction
	pos     [2]uint64 // the highest seq each reader has read
	bytes   int
	last    int // the size of the last decoding kept
}

type sharedEntry struct {
	by      int // the reader that decoded it
	payload []byte
	ready   chan struct{}
	d       Decoded
	size    int // counted in Shared.bytes once ready, if still held
}

// NewShared shares dec's decodings, holding at most maxBytes.
func NewShared(dec *Decoder, maxBytes int) *Shared {
	return &Shared{dec: dec, maxBytes: maxBytes, entries: map[uint64]*sharedEntry{}}
}

// Decoder is the decoder the readings use.
func (s *Shared) Decoder() *Decoder { return s.dec }

// Read returns payload's decoding for reader (0 or 1), stored under seq,
// its stream sequence. The first reader decodes it and keeps it for the
// other, unless the other has read past seq already or maxBytes of
// decodings wait; the second takes it. A seq that holds another payload
// (the stream was recreated) is decoded again, never mixed up.
func (s *Shared) Read(reader int, seq uint64, payload []byte) Decoded {
	if d, ok := s.take(reader, seq, payload); ok {
		return d
	}
	return s.dec.Read(payload)
}

// ReadHeader is Read for a reader that needs only the header: where it
// keeps nothing for the other reader, it parses the header alone
// (DecodeHeader, which judges a header as Read does).
func (s *Shared) ReadHeader(reader int, seq uint64, payload []byte) (Header, error) {
	if d, ok := s.take(reader, seq, payload); ok {
		return d.Header, d.HeaderErr
	}
	return s.dec.DecodeHeader(payload)
}

// take returns the other reader's decoding of seq, or the one this reader
// makes and keeps for the other; false when it keeps none.
func (s *Shared) take(reader int, seq uint64, payload []byte) (Decoded, bool) {
	other := 1 - reader
	s.mu.Lock()
	s.pos[reader] = max(s.pos[reader], seq)
	e, ok := s.entries[seq]
	if ok && e.by == other {
		delete(s.entries, seq)
		s.mu.Unlock()
		<-e.ready
		s.mu.Lock()
		s.bytes -= e.size
		s.mu.Unlock()
		if bytes.Equal(e.payload, payload) {
			s.Hits.Add(1)
			return e.d, true
		}
		return Decoded{}, false
	}
	if ok || s.pos[other] >= seq {
		// Read twice by this reader (redelivered), or the other has
		// passed it: nobody will take it.
		s.mu.Unlock()
		return Decoded{}, false
	}
	// Full: the next decoding, as large as the last, would not fit.
	if s.maxBytes <= 0 || s.bytes+s.last > s.maxBytes {
		s.mu.Unlock()
		s.Full.Add(1)
		return Decoded{}, false
	}
	e = &sharedEntry{by: reader, payload: payload, ready: make(chan struct{})}
	s.entries[seq] = e
	s.order = append(s.order, seq)
	s.mu.Unlock()

	d := s.dec.Read(payload)
	s.mu.Lock()
	e.d = d
	s.last = len(payload) + d.size
	if s.entries[seq] == e {
		e.size = s.last
		s.bytes += e.size
	}
	close(e.ready)
	s.evict()
	s.mu.Unlock()
	return d, true
}

// evict drops the oldest decodings until the rest fit; s.mu is held.
func (s *Shared) evict() {
	for s.bytes > s.maxBytes && len(s.order) > 0 {
		e, ok := s.entries[s.order[0]]
		if ok {
			select {
			case <-e.ready:
			default:
				return // still decoding (not counted yet): the next Read evicts
			}
			delete(s.entries, s.order[0])
			s.bytes -= e.size
			s.Evicted.Add(1)
		}
		s.order = s.order[1:]
	}
	if len(s.order) > 2*len(s.entries)+1024 {
		// Most of order is taken entries: compact it.
		kept := make([]uint64, 0, len(s.entries))
		for _, seq := range s.order {
			if _, ok := s.entries[seq]; ok {
				kept = append(kept, seq)
			}
		}
		s.order = kept
	}
}

// Held is how many decodings wait for their second reader, and their
// size.
func (s *Shared) Held() (n, bytes int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.entries), s.bytes
}
