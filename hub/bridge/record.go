package bridge

import (
	"context"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outpost-edge/outpost/hub/kafka"
	"github.com/outpost-edge/outpost/sync/envelope"
)

// Encoder builds the Kafka records cloud teams consume, in bridge.format:
// the one encoder of the device topics, used by the bridge for devices'
// records and by the hub for its own (the trainer's and the stream's
// events), so that a topic never mixes formats.
type Encoder struct {
	deadTopic string
	avro      *avroEncoder // nil: JSON
}

// NewEncoder builds the encoder for cfg.Format; with avro it registers the
// schema of every device topic under prefix first.
func NewEncoder(ctx context.Context, cfg Config, prefix string) (*Encoder, error) {
	e := &Encoder{deadTopic: prefix + "deadletter"}
	if cfg.Format != "avro" {
		return e, nil
	}
	var topics []string
	for _, s := range kafka.Streams {
		if s != "deadletter" {
			topics = append(topics, prefix+s)
		}
	}
	var err error
	e.avro, err = newAvroEncoder(ctx, cfg.SchemaRegistry, topics)
	return e, err
}

// Record builds one Kafka record. outpost.deadletter stays JSON in either
// format: it holds what could not be understood.
func (e *Encoder) Record(topic string, src *Source, r envelope.Record) (*kgo.Record, error) {
	rec := jsonRecord(topic, src, r)
	if e.avro == nil || topic == e.deadTopic {
		return rec, nil
	}
	v, dataschema, err := e.avro.encode(topic, src.device, src.epoch, src.stream, r)
	if err != nil {
		return nil, err
	}
	rec.Value = v
	last := &rec.Headers[len(rec.Headers)-1] // content-type
	last.Value = e.avro.typeHdr
	if dataschema != "" {
		rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: "ce_dataschema", Value: []byte(dataschema)})
	}
	return rec, nil
}

// TopicFor maps a device stream to its Kafka topic (without prefix).
func TopicFor(stream string) string {
	switch stream {
	case "dead":
		return "deadletter"
	case "drift":
		return "events"
	}
	return stream
}

// Source holds what every record of one envelope shares, so that the
// per-record work is the value, ce_id and ce_time.
type Source struct {
	device, epoch, stream string
	key                   []byte
	idPrefix              []byte // ce_id up to the seq: "{device}:" or "{device}:{epoch}:"
	ceSource              []byte
	ceType                []byte
}

// NewSource describes the records of one device stream and epoch.
func NewSource(device, epoch, stream string) *Source {
	id := device + ":"
	if epoch != "" {
		id += epoch + ":"
	}
	return &Source{device: device, epoch: epoch, stream: stream, key: []byte(device), idPrefix: []byte(id),
		ceSource: []byte("/outpost/devices/" + device), ceType: []byte("dev.outpost." + stream + ".v1")}
}

// WithCloudEvent overrides ce_source and ce_type (the hub's own records
// name the part of the hub that wrote them).
func (s *Source) WithCloudEvent(source, typ string) *Source {
	c := *s
	c.ceSource, c.ceType = []byte(source), []byte(typ)
	return &c
}

var (
	ceSpec   = []byte("1.0")
	jsonType = []byte("application/json")
)

// jsonRecord builds the Kafka record cloud teams consume: keyed by device,
// JSON value, CloudEvents headers so consumers can check uniqueness
// themselves. content-type is the last header.
func jsonRecord(topic string, src *Source, r envelope.Record) *kgo.Record {
	var s slab
	s.grow(src, 1, len(r.Data))
	return s.record(topic, src, r)
}

// Records appends the records of rs, which share src, to recs. A record
// the encoder refuses goes to bad instead. In JSON the records, their
// headers and their bytes are carved from three allocations per call
// rather than three per record: the bridge writes hundreds per envelope.
func (e *Encoder) Records(recs []*kgo.Record, topic string, src *Source, rs []envelope.Record, bad func(envelope.Record, error)) []*kgo.Record {
	if e.avro != nil && topic != e.deadTopic {
		for _, r := range rs {
			rec, err := e.Record(topic, src, r)
			if err != nil {
				bad(r, err)
				continue
			}
			recs = append(recs, rec)
		}
		return recs
	}
	data := 0
	for _, r := range rs {
		data += len(r.Data)
	}
	var s slab
	s.grow(src, len(rs), data)
	for _, r := range rs {
		recs = append(recs, s.record(topic, src, r))
	}
	return recs
}

// ceHeaders is the number of headers of a JSON record.
const ceHeaders = 6

// slab is room for n JSON records: each takes its record, its headers and
// its bytes from here, clipped so that nothing appended to one reaches
// the next.
type slab struct {
	recs []kgo.Record
	hdrs []kgo.RecordHeader
	buf  []byte
}

func (s *slab) grow(src *Source, n, data int) {
	// The fixed part: keys and quotes, a seq (20) twice, a time (35).
	per := 2*len(src.device) + 2*len(src.epoch) + len(src.stream) + 170
	s.recs = make([]kgo.Record, 0, n)
	s.hdrs = make([]kgo.RecordHeader, 0, n*ceHeaders)
	s.buf = make([]byte, 0, n*per+data)
}

func (s *slab) record(topic string, src *Source, r envelope.Record) *kgo.Record {
	// Device ids and stream names are validated tokens: no escaping needed.
	buf := s.buf
	start := len(buf)
	buf = append(buf, `{"device":"`...)
	buf = append(buf, src.device...)
	if src.epoch != "" {
		buf = append(buf, `","epoch":"`...)
		buf = append(buf, src.epoch...)
	}
	buf = append(buf, `","stream":"`...)
	buf = append(buf, src.stream...)
	buf = append(buf, `","seq":`...)
	buf = strconv.AppendUint(buf, r.Seq, 10)
	buf = append(buf, `,"event_time":"`...)
	ts := len(buf)
	buf = r.EventTime.UTC().AppendFormat(buf, time.RFC3339Nano)
	te := len(buf)
	buf = append(buf, `","data":`...)
	buf = append(buf, r.Data...)
	buf = append(buf, '}')
	ve := len(buf)
	buf = append(buf, src.idPrefix...)
	buf = strconv.AppendUint(buf, r.Seq, 10)
	ie := len(buf)
	// If the estimate fell short, append moved the bytes: the records
	// before keep the old array, this one and the rest use the new one.
	s.buf = buf
	h := len(s.hdrs)
	s.hdrs = append(s.hdrs,
		kgo.RecordHeader{Key: "ce_specversion", Value: ceSpec},
		kgo.RecordHeader{Key: "ce_id", Value: buf[ve:ie:ie]},
		kgo.RecordHeader{Key: "ce_source", Value: src.ceSource},
		kgo.RecordHeader{Key: "ce_type", Value: src.ceType},
		kgo.RecordHeader{Key: "ce_time", Value: buf[ts:te:te]},
		kgo.RecordHeader{Key: "content-type", Value: jsonType},
	)
	s.recs = append(s.recs, kgo.Record{
		Topic:   topic,
		Key:     src.key,
		Value:   buf[start:ve:ve],
		Headers: s.hdrs[h : h+ceHeaders : h+ceHeaders],
	})
	return &s.recs[len(s.recs)-1]
}
