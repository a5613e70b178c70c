// Package envelope is the wire format of everything a device sends upstream:
// one batch of records of one stream per MQTT message: JSON, zstd-compressed
// unless the agent's uplink.compress is off (detected by the zstd frame
// magic, because MQTT 3.1.1 has no message headers).
package envelope

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/tidwall/gjson"
)

// Version is the envelope format version this code writes and reads.
const Version = 1

// MaxRecords bounds one envelope, so a hostile or broken device cannot make
// the hub allocate without limit.
const MaxRecords = 100_000

// Record is one unit of upstream data. (Device, Seq) identifies it uniquely
// and forever: seq rises monotonically per device and is persisted.
type Record struct {
	Seq       uint64          `json:"seq"`
	EventTime time.Time       `json:"event_time"`
	Data      json.RawMessage `json:"data"`
}

// Envelope is one batch of one stream. Seqs are per device; within a stream
// the device sends them in rising order.
//
// Prev is the highest seq of this stream the device sent before this batch,
// so the hub can tell a contiguous stream from one with a missing batch even
// when the device evicted records in between. Floor is the highest seq of
// this stream the hub has already acknowledged to the device: a hub that
// lost its in-memory state picks up from there.
//
// Epoch names the agent run that created the records: (device, epoch, seq)
// is a record's identity, so a replaced, re-flashed or restored board,
// whose seqs start again or repeat, is never taken for a replay of its
// predecessor. Floor and Prev count within the epoch. Empty for agents
// older than epochs.
type Envelope struct {
	V       int      `json:"v"`
	Device  string   `json:"device"`
	Epoch   string   `json:"epoch,omitempty"`
	Stream  string   `json:"stream"`
	Floor   uint64   `json:"floor"`
	Prev    uint64   `json:"prev"`
	Records []Record `json:"records"`
}

// MaxEpochLen bounds an epoch name.
const MaxEpochLen = 32

// ValidEpoch reports whether s can name an epoch: empty (agents older than
// epochs) or up to MaxEpochLen of [0-9a-z], so it needs no escaping in ids.
func ValidEpoch(s string) bool {
	if len(s) > MaxEpochLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'z') {
			return false
		}
	}
	return true
}

// Last is the highest seq in the batch.
func (e *Envelope) Last() uint64 { return e.Records[len(e.Records)-1].Seq }

var zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}

// Compressed reports whether payload is a zstd frame (uplink.compress), as
// it came off the wire.
func Compressed(payload []byte) bool { return bytes.HasPrefix(payload, zstdMagic) }

var encoder = newEncoder()

// newEncoder is the agent's batch compressor: one encoder (batches are sent
// one at a time) with a window no wider than a batch (uplink.batch_bytes'
// default). zstd's defaults, an encoder per core with 8 MiB windows, held
// 17 MiB on the agent's heap for the same ratio.
func newEncoder() *zstd.Encoder {
	enc, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1), zstd.WithWindowSize(512<<10)) // options are valid
	return enc
}

// Decoder reads envelopes, inflating a compressed one to at most a bound:
// a zstd bomb (kilobytes that inflate to gigabytes) costs the hub no more
// than the bound, per core, and that memory is reused, not held per bomb.
type Decoder struct {
	zd  *zstd.Decoder
	max int
}

// InflateFactor is how far past the broker's largest message a payload may
// inflate. An agent cuts a batch by its uncompressed size (uplink.batch_bytes
// at or below broker.max_payload), so an honest payload stays well inside.
const InflateFactor = 4

// DefaultMaxDecoded bounds inflation for the package-level Decode and
// DecodeHeader: InflateFactor times the hub's default max_payload (1 MiB).
const DefaultMaxDecoded = InflateFactor << 20

// NewDecoder builds a decoder that inflates to at most maxDecoded bytes.
func NewDecoder(maxDecoded int) *Decoder {
	zd, _ := zstd.NewReader(nil, zstd.WithDecoderMaxMemory(uint64(maxDecoded)), zstd.WithDecoderConcurrency(0)) // options are valid
	return &Decoder{zd: zd, max: maxDecoded}
}

var defaultDecoder = NewDecoder(DefaultMaxDecoded)

// inflated recycles the buffers payloads inflate into: the parsers copy
// what they keep, so a storm of bombs reuses a few buffers of the bound
// instead of leaving one behind per bomb for the collector.
var inflated = sync.Pool{New: func() any { return new([]byte) }}

// inflate returns payload, decompressed if it is a zstd frame; release
// hands the buffer back once nothing reads it.
func (d *Decoder) inflate(payload []byte) (raw []byte, release func(), err error) {
	if !Compressed(payload) {
		return payload, func() {}, nil
	}
	buf := inflated.Get().(*[]byte)
	raw, err = d.zd.DecodeAll(payload, (*buf)[:0])
	release = func() {
		if cap(raw) > cap(*buf) {
			*buf = raw[:0]
		}
		inflated.Put(buf)
	}
	if err != nil {
		release()
		return nil, nil, fmt.Errorf("%w: zstd (at most %d bytes inflated): %w", ErrMalformed, d.max, err)
	}
	return raw, release, nil
}

// Encode serialises e, compressing with zstd when compress is set.
func Encode(e *Envelope, compress bool) ([]byte, error) {
	if err := e.Validate(); err != nil {
		return nil, err
	}
	data, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("envelope: encode: %w", err)
	}
	if compress {
		return encoder.EncodeAll(data, nil), nil
	}
	return data, nil
}

// Decode parses and validates a payload with the default bound.
func Decode(payload []byte) (*Envelope, error) { return defaultDecoder.Decode(payload) }

// Decode parses and validates a payload.
func (d *Decoder) Decode(payload []byte) (*Envelope, error) {
	payload, release, err := d.inflate(payload)
	if err != nil {
		return nil, err
	}
	defer release()
	return decodeRaw(payload)
}

// decodeRaw parses and validates an inflated payload.
func decodeRaw(payload []byte) (*Envelope, error) {
	p, err := parse(payload, true)
	defer p.release()
	if err != nil {
		return nil, err
	}
	return p.envelope()
}

// validJSON is gjson's validator: it accepts exactly what encoding/json's
// Valid does (FuzzValidJSONAgreesWithStdlib) at 2.5 times its speed.
// Validate checks records' data with it; decoding needs none (the parser
// checks the grammar as it goes).
func validJSON(b []byte) bool { return gjson.ValidBytes(b) }

// Validate checks the invariants the hub relies on.
func (e *Envelope) Validate() error { return e.validate(true) }

func (e *Envelope) validate(checkData bool) error {
	switch {
	case e.V != Version:
		return fmt.Errorf("%w: version %d, want %d", ErrMalformed, e.V, Version)
	case e.Device == "":
		return fmt.Errorf("%w: device is empty", ErrMalformed)
	case e.Stream == "":
		return fmt.Errorf("%w: stream is empty", ErrMalformed)
	case !ValidEpoch(e.Epoch):
		return fmt.Errorf("%w: epoch %.40q is not 1 to %d lowercase letters and digits", ErrMalformed, e.Epoch, MaxEpochLen)
	case len(e.Records) == 0:
		return fmt.Errorf("%w: no records", ErrMalformed)
	case len(e.Records) > MaxRecords:
		return fmt.Errorf("%w: %d records, limit %d", ErrMalformed, len(e.Records), MaxRecords)
	case e.Floor > e.Prev:
		return fmt.Errorf("%w: floor %d above prev %d", ErrMalformed, e.Floor, e.Prev)
	}
	prev := e.Prev
	for i, r := range e.Records {
		if r.Seq <= prev {
			return fmt.Errorf("%w: record %d has seq %d, not above %d", ErrMalformed, i, r.Seq, prev)
		}
		if r.EventTime.IsZero() {
			return fmt.Errorf("%w: record %d (seq %d) has no event_time", ErrMalformed, i, r.Seq)
		}
		if len(r.Data) == 0 || (checkData && !validJSON(r.Data)) {
			return fmt.Errorf("%w: record %d (seq %d) data is not JSON", ErrMalformed, i, r.Seq)
		}
		prev = r.Seq
	}
	return nil
}
