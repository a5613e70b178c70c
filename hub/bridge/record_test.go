package bridge

import (
	"encoding/json"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outpost-edge/outpost/sync/envelope"
)

// TestRecordsOfOneEnvelope checks the records Records carves from shared
// slabs: each is exactly the record of its own reading, and writing past
// one (a header appended, a value grown) reaches no other.
func TestRecordsOfOneEnvelope(t *testing.T) {
	enc := &Encoder{deadTopic: "p.deadletter"}
	src := NewSource("dev-1", "e7", "windows")
	t0 := time.Date(2026, 12, 2, 10, 0, 0, 123456789, time.FixedZone("CET", 3600))
	var rs []envelope.Record
	for i := 1; i <= 300; i++ {
		// Data of every size, so the buffer's estimate is tested at both ends.
		data := fmt.Sprintf(`{"i":%d,"pad":"%0*d"}`, i, i%97, 0)
		rs = append(rs, envelope.Record{Seq: uint64(1 << 40 * i), EventTime: t0.Add(time.Duration(i) * time.Millisecond), Data: json.RawMessage(data)})
	}
	recs := enc.Records(make([]*kgo.Record, 0, 1), "p.windows", src, rs, func(r envelope.Record, err error) { t.Fatalf("refused %d: %v", r.Seq, err) })
	if len(recs) != len(rs) {
		t.Fatalf("%d records, want %d", len(recs), len(rs))
	}
	for _, rec := range recs {
		rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: "x", Value: []byte("overwritten?")})
		rec.Value = append(rec.Value, "garbage"...)
	}
	for i, r := range rs {
		rec := recs[i]
		et := r.EventTime.UTC().Format(time.RFC3339Nano)
		want := `{"device":"dev-1","epoch":"e7","stream":"windows","seq":` + strconv.FormatUint(r.Seq, 10) + `,"event_time":"` + et + `","data":` + string(r.Data) + `}garbage`
		if string(rec.Value) != want {
			t.Fatalf("record %d value\n got %s\nwant %s", i, rec.Value, want)
		}
		hdr := map[string]string{}
		for _, h := range rec.Headers {
			hdr[h.Key] = string(h.Value)
		}
		for k, v := range map[string]string{"ce_specversion": "1.0", "ce_id": "dev-1:e7:" + strconv.FormatUint(r.Seq, 10), "ce_source": "/outpost/devices/dev-1",
			"ce_type": "dev.outpost.windows.v1", "ce_time": et, "content-type": "application/json", "x": "overwritten?"} {
			if hdr[k] != v {
				t.Fatalf("record %d header %s = %q, want %q", i, k, hdr[k], v)
			}
		}
		if len(rec.Headers) != ceHeaders+1 || rec.Topic != "p.windows" || string(rec.Key) != "dev-1" {
			t.Fatalf("record %d: %d headers, topic %s, key %s", i, len(rec.Headers), rec.Topic, rec.Key)
		}
	}
}

func BenchmarkRecords(b *testing.B) {
	enc := &Encoder{deadTopic: "p.deadletter"}
	src := NewSource("dev-1", "", "windows")
	rs := make([]envelope.Record, 500)
	for i := range rs {
		rs[i] = envelope.Record{Seq: uint64(i + 1), EventTime: time.Now(), Data: json.RawMessage(`{"key":"sensor-17","count":100,"mean":21.375,"max":22.9}`)}
	}
	recs := make([]*kgo.Record, 0, len(rs))
	b.ReportAllocs()
	for b.Loop() {
		recs = enc.Records(recs[:0], "p.windows", src, rs, nil)
	}
	b.ReportMetric(float64(b.N*len(rs))/b.Elapsed().Seconds(), "records/s")
}
