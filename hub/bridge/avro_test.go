package bridge

import (
	"bytes"
	"context"
	"encoding/binary"
	"strconv"
	"testing"
	"time"

	"github.com/hamba/avro/v2"
	"github.com/twmb/franz-go/pkg/sr"
	"github.com/twmb/franz-go/pkg/sr/srfake"

	"github.com/outpost-edge/outpost/sync/envelope"
)

var testRecord = envelope.Record{Seq: 42, EventTime: time.Date(2026, 11, 25, 12, 0, 5, 123456000, time.UTC), Data: []byte(`{"mean":1.5}`)}

func decodeBody(t *testing.T, schema string, body []byte) avroRecord {
	t.Helper()
	var got avroRecord
	if err := avro.Unmarshal(avro.MustParse(schema), body, &got); err != nil {
		t.Fatal(err)
	}
	return got
}

func checkRecord(t *testing.T, got avroRecord) {
	t.Helper()
	want := avroRecord{Device: "pump-7", Stream: "windows", Seq: 42, EventTime: testRecord.EventTime, Data: `{"mean":1.5}`}
	if got.Device != want.Device || got.Stream != want.Stream || got.Seq != want.Seq || !got.EventTime.Equal(want.EventTime) || got.Data != want.Data {
		t.Errorf("decoded %+v, want %+v", got, want)
	}
}

// With a registry: the Confluent wire format, and the id in it resolves
// to the schema the hub registered under <topic>-value.
func TestAvroConfluentWireFormat(t *testing.T) {
	reg := srfake.New()
	defer reg.Close()
	ctx := context.Background()
	enc, err := newAvroEncoder(ctx, SchemaRegistry{URL: reg.URL()}, []string{"outpost.windows", "outpost.events"})
	if err != nil {
		t.Fatal(err)
	}
	v, dataschema, err := enc.encode("outpost.windows", "pump-7", "", "windows", testRecord)
	if err != nil {
		t.Fatal(err)
	}
	if v[0] != 0 {
		t.Fatalf("magic byte %d, want 0", v[0])
	}
	id := int(binary.BigEndian.Uint32(v[1:5]))
	cl, err := sr.NewClient(sr.URLs(reg.URL()))
	if err != nil {
		t.Fatal(err)
	}
	ss, err := cl.SchemaByID(ctx, id)
	if err != nil {
		t.Fatalf("schema id %d from the record is not in the registry: %v", id, err)
	}
	if got, want := dataschema, reg.URL()+"/schemas/ids/"+strconv.Itoa(id); got != want {
		t.Errorf("dataschema %q, want %q", got, want)
	}
	latest, err := cl.SchemaByVersion(ctx, "outpost.windows-value", -1)
	if err != nil || latest.ID != id {
		t.Errorf("subject outpost.windows-value: id %d (%v), want %d", latest.ID, err, id)
	}
	checkRecord(t, decodeBody(t, ss.Schema, v[5:]))
	if _, _, err := enc.encode("outpost.other", "pump-7", "", "windows", testRecord); err == nil {
		t.Error("encoding for a topic without a registered schema succeeded")
	}
}

// Without a registry: Avro single-object encoding.
func TestAvroSingleObjectEncoding(t *testing.T) {
	enc, err := newAvroEncoder(context.Background(), SchemaRegistry{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	v, dataschema, err := enc.encode("outpost.windows", "pump-7", "", "windows", testRecord)
	if err != nil {
		t.Fatal(err)
	}
	if dataschema != "" {
		t.Errorf("dataschema %q without a registry", dataschema)
	}
	fp, _ := avro.MustParse(enc.schema.String()).FingerprintUsing(avro.CRC64AvroLE)
	if !bytes.Equal(v[:2], []byte{0xC3, 0x01}) || !bytes.Equal(v[2:10], fp) {
		t.Fatalf("header % x, want c3 01 + fingerprint % x", v[:10], fp)
	}
	checkRecord(t, decodeBody(t, enc.schema.String(), v[10:]))
}

func TestAvroUnreachableRegistryIsAnError(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := newAvroEncoder(ctx, SchemaRegistry{URL: "http://127.0.0.1:1"}, []string{"outpost.windows"}); err == nil {
		t.Fatal("no error for an unreachable registry")
	}
}
