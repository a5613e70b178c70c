package envelope

// Header is what the hub's acker needs of an envelope: who sent which
// range of seqs. Decoding it skips every record's time and data, which is
// most of the cost of a full Decode.
type Header struct {
	Device, Epoch     string
	Stream            string
	Floor, Prev, Last uint64
	Records           int
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

// decodeHeaderRaw is DecodeHeader of an inflated payload. It checks the
// whole payload is JSON but decodes only the header and seqs.
func decodeHeaderRaw(payload []byte) (Header, error) {
	p, err := parse(payload, false)
	defer p.release()
	if err != nil {
		return Header{}, err
	}
	return p.header()
}

// Header returns e's header.
func (e *Envelope) Header() Header {
	return Header{Device: e.Device, Epoch: e.Epoch, Stream: e.Stream, Floor: e.Floor, Prev: e.Prev, Last: e.Last(), Records: len(e.Records)}
}
