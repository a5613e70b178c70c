package envelope

import (
	"fmt"
)

// Header is what the hub's acker needs of an envelope: who sent which
// range of seqs. Decoding it skips every record's time and data, which is
// most of the cost of a full Decode.
type Header struct {
	Device, Epoch     string
	Stream            string
	Floor, Prev, Last uint64
	Records           int
}

type wireHeader struct {
	V       int    `json:"v"`
	Device  string `json:"device"`
	Epoch   string `json:"epoch"`
	Stream  string `json:"stream"`
	Floor   uint64 `json:"floor"`
	Prev    uint64 `json:"prev"`
	Records []struct {
		Seq uint64 `json:"seq"`
	} `json:"records"`
}

// DecodeHeader parses a payload's header and seqs and checks the same
// invariants as Decode except those of record times and data. An envelope
// it accepts may still be dead-lettered by a full Decode.
func DecodeHeader(payload []byte) (Header, error) { return defaultDecoder.DecodeHeader(payload) }

// DecodeHeader is the package's DecodeHeader with this decoder's bound.
func (d *Decoder) DecodeHeader(payload []byte) (Header, error) {
	payload, release, err := d.inflate(payload)
	if err != nil {
		return Header{}, err
	}
	defer release()
	return decodeHeaderRaw(payload)
}

// decodeHeaderRaw is DecodeHeader of an inflated payload.
func decodeHeaderRaw(payload []byte) (Header, error) {
	var w wireHeader
	if err := unmarshal(payload, &w); err != nil {
		return Header{}, err
	}
	switch {
	case w.V != Version:
		return Header{}, fmt.Errorf("%w: version %d, want %d", ErrMalformed, w.V, Version)
	case w.Device == "" || w.Stream == "":
		return Header{}, fmt.Errorf("%w: device or stream is empty", ErrMalformed)
	case !ValidEpoch(w.Epoch):
		return Header{}, fmt.Errorf("%w: epoch %.40q is not 1 to %d lowercase letters and digits", ErrMalformed, w.Epoch, MaxEpochLen)
	case len(w.Records) == 0 || len(w.Records) > MaxRecords:
		return Header{}, fmt.Errorf("%w: %d records, want 1 to %d", ErrMalformed, len(w.Records), MaxRecords)
	case w.Floor > w.Prev:
		return Header{}, fmt.Errorf("%w: floor %d above prev %d", ErrMalformed, w.Floor, w.Prev)
	}
	prev := w.Prev
	for i, r := range w.Records {
		if r.Seq <= prev {
			return Header{}, fmt.Errorf("%w: record %d has seq %d, not above %d", ErrMalformed, i, r.Seq, prev)
		}
		prev = r.Seq
	}
	return Header{Device: w.Device, Epoch: w.Epoch, Stream: w.Stream, Floor: w.Floor, Prev: w.Prev, Last: prev, Records: len(w.Records)}, nil
}

// Header returns e's header.
func (e *Envelope) Header() Header {
	return Header{Device: e.Device, Epoch: e.Epoch, Stream: e.Stream, Floor: e.Floor, Prev: e.Prev, Last: e.Last(), Records: len(e.Records)}
}
