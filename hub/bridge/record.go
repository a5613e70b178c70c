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
	// Device ids and stream names are validated tokens: no escaping needed.
	// One buffer holds the value, ce_id and ce_time.
	buf := make([]byte, 0, 2*len(src.device)+2*len(src.epoch)+len(src.stream)+170+len(r.Data))
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
	et := buf[ts:len(buf):len(buf)]
	buf = append(buf, `","data":`...)
	buf = append(buf, r.Data...)
	buf = append(buf, '}')
	value := buf[:len(buf):len(buf)]
	id := len(buf)
	buf = append(buf, src.idPrefix...)
	buf = strconv.AppendUint(buf, r.Seq, 10)
	return &kgo.Record{
		Topic: topic,
		Key:   src.key,
		Value: value,
		Headers: []kgo.RecordHeader{
			{Key: "ce_specversion", Value: ceSpec},
			{Key: "ce_id", Value: buf[id:]},
			{Key: "ce_source", Value: src.ceSource},
			{Key: "ce_type", Value: src.ceType},
			{Key: "ce_time", Value: et},
			{Key: "content-type", Value: jsonType},
		},
	}
}
