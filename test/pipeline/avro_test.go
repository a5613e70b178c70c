package pipeline

import (
	"context"
	"encoding/binary"
	"testing"
	"time"

	"github.com/hamba/avro/v2"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"
	"github.com/twmb/franz-go/pkg/sr/srfake"

	"github.com/outpost-edge/outpost/test/kafkatest"
)

// TestAvroRecordsWithSchemaRegistry runs the bridge with bridge.format avro
// against the real Kafka broker and a schema registry (franz-go's srfake,
// which speaks the Confluent REST API). A consumer that knows nothing but
// the registry decodes every record: the id in the Confluent header
// resolves to the schema registered under <topic>-value.
func TestAvroRecordsWithSchemaRegistry(t *testing.T) {
	reg := srfake.New()
	defer reg.Close()
	brokers := kafkatest.Brokers(t)
	cfg := hubConfig(t, brokers, t.TempDir())
	cfg.Bridge.Format, cfg.Bridge.SchemaRegistry.URL = "avro", reg.URL()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	h := startHub(t, cfg)
	defer h.Close()
	const n = 400
	d := newDevice(t, h, "avro-dev", "tcp://"+h.MQTTAddr())
	d.Produce(t, "windows", n, 50, 5*time.Millisecond)
	d.WaitDrained(t, 60*time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	srcl, err := sr.NewClient(sr.URLs(reg.URL()))
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(cfg.Kafka.TopicPrefix+"windows"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	schemas := map[int]avro.Schema{}
	var recs []kafkaRecord
	for len(recs) < n && ctx.Err() == nil {
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			if len(r.Value) < 5 || r.Value[0] != 0 {
				t.Fatalf("record %d is not in the Confluent wire format: % x", r.Offset, r.Value[:min(len(r.Value), 8)])
			}
			id := int(binary.BigEndian.Uint32(r.Value[1:5]))
			s, ok := schemas[id]
			if !ok {
				ss, err := srcl.SchemaByID(ctx, id)
				if err != nil {
					t.Fatalf("schema id %d: %v", id, err)
				}
				s = avro.MustParse(ss.Schema)
				schemas[id] = s
			}
			var v struct {
				Device    string    `avro:"device"`
				Stream    string    `avro:"stream"`
				Seq       int64     `avro:"seq"`
				EventTime time.Time `avro:"event_time"`
				Data      string    `avro:"data"`
			}
			if err := avro.Unmarshal(s, r.Value[5:], &v); err != nil {
				t.Fatalf("record %d: %v", r.Offset, err)
			}
			for _, hd := range r.Headers {
				if hd.Key == "content-type" && string(hd.Value) != "application/avro" {
					t.Errorf("content-type %q", hd.Value)
				}
			}
			recs = append(recs, kafkaRecord{Device: v.Device, Stream: v.Stream, Seq: uint64(v.Seq), Data: []byte(v.Data)})
		})
	}
	checkExactlyOnce(t, recs, []string{"avro-dev"}, n)
	if len(schemas) != 1 {
		t.Errorf("%d schema ids, want 1", len(schemas))
	}
}
