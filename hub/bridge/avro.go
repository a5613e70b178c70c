package bridge

import (
	"context"
	"encoding/binary"
	"fmt"
	"strconv"
	"time"

	"github.com/hamba/avro/v2"
	"github.com/twmb/franz-go/pkg/sr"

	"github.com/outpost-edge/outpost/hub/bridge/schemas"
	"github.com/outpost-edge/outpost/sync/envelope"
)

// SchemaRegistry is where Avro schemas are registered (Confluent API).
type SchemaRegistry struct {
	URL      string `yaml:"url" usage:"schema registry URL; with bridge.format avro, records use the Confluent wire format with the registered schema id"`
	Username string `yaml:"username" usage:"schema registry basic-auth user"`
	Password string `yaml:"password" usage:"schema registry basic-auth password (better set through the environment)"`
}

// avroRecord is schemas/record.avsc.
type avroRecord struct {
	Device    string    `avro:"device"`
	Stream    string    `avro:"stream"`
	Seq       int64     `avro:"seq"`
	EventTime time.Time `avro:"event_time"`
	Data      string    `avro:"data"`
	Epoch     string    `avro:"epoch"`
}

// avroEncoder writes records as Avro binary behind a header that names the
// schema: the Confluent wire format (magic 0, schema id) with a registry,
// Avro single-object encoding (C3 01, CRC-64-AVRO fingerprint) without.
type avroEncoder struct {
	schema avro.Schema
	// ids are the registered schema ids per topic (subject "<topic>-value").
	ids     map[string]int
	single  []byte // the single-object header, when there is no registry
	regURL  string
	typeHdr []byte
}

const avroContentType = "application/avro"

func newAvroEncoder(ctx context.Context, reg SchemaRegistry, topics []string) (*avroEncoder, error) {
	schema, err := avro.Parse(schemas.RecordAvro)
	if err != nil {
		return nil, fmt.Errorf("bridge: avro schema: %w", err)
	}
	e := &avroEncoder{schema: schema, ids: map[string]int{}, regURL: reg.URL, typeHdr: []byte(avroContentType)}
	if reg.URL == "" {
		fp, err := schema.FingerprintUsing(avro.CRC64AvroLE)
		if err != nil {
			return nil, fmt.Errorf("bridge: avro fingerprint: %w", err)
		}
		e.single = append([]byte{0xC3, 0x01}, fp...)
		return e, nil
	}
	opts := []sr.ClientOpt{sr.URLs(reg.URL)}
	if reg.Username != "" {
		opts = append(opts, sr.BasicAuth(reg.Username, reg.Password))
	}
	cl, err := sr.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("bridge: schema registry: %w", err)
	}
	for _, topic := range topics {
		ss, err := cl.CreateSchema(ctx, topic+"-value", sr.Schema{Schema: schemas.RecordAvro, Type: sr.TypeAvro})
		if err != nil {
			return nil, fmt.Errorf("bridge: register avro schema for %s at %s: %w", topic, reg.URL, err)
		}
		e.ids[topic] = ss.ID
	}
	return e, nil
}

// encode returns the record value and its dataschema (the registry's URL
// of the schema, empty without a registry).
func (e *avroEncoder) encode(topic, device, epoch, stream string, r envelope.Record) ([]byte, string, error) {
	var v []byte
	var dataschema string
	if e.single != nil {
		v = append(make([]byte, 0, len(e.single)+64+len(r.Data)), e.single...)
	} else {
		id, ok := e.ids[topic]
		if !ok {
			return nil, "", fmt.Errorf("bridge: no avro schema registered for topic %s", topic)
		}
		v = make([]byte, 5, 5+64+len(r.Data))
		binary.BigEndian.PutUint32(v[1:], uint32(id)) // v[0] = 0: Confluent magic byte
		dataschema = e.regURL + "/schemas/ids/" + strconv.Itoa(id)
	}
	body, err := avro.Marshal(e.schema, avroRecord{Device: device, Stream: stream, Seq: int64(r.Seq), EventTime: r.EventTime.UTC(), Data: string(r.Data), Epoch: epoch})
	if err != nil {
		return nil, "", fmt.Errorf("bridge: avro encode: %w", err)
	}
	return append(v, body...), dataschema, nil
}
