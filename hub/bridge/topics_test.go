package bridge

import (
	"context"
	"encoding/json"
	"log/slog"
	"maps"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/hub/kafka"
	"github.com/outpost-edge/outpost/sync/envelope"
)

// Records are counted by topic (without the prefix) when their batch
// commits, dead letters under deadletter, so that the per-topic counts
// sum to Records plus DeadLetters; a batch that does not commit counts
// nothing.
func TestTopicRecordsCountCommittedBatches(t *testing.T) {
	b := New(Config{}, Options{Log: slog.New(slog.DiscardHandler), Kafka: kafka.Config{TopicPrefix: "outpost."}})
	var err error
	if b.enc, err = NewEncoder(context.Background(), Config{}, "outpost."); err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	var seq uint64
	prev := map[string]uint64{} // the last seq sent on each stream
	env := func(stream string, n int) (string, []byte) {
		e := &envelope.Envelope{V: 1, Device: "pump-7", Epoch: "e1", Stream: stream, Prev: prev[stream]}
		for range n {
			seq++
			prev[stream] = seq
			e.Records = append(e.Records, envelope.Record{Seq: seq, EventTime: at, Data: json.RawMessage(`{"x":1}`)})
		}
		data, err := envelope.Encode(e, false)
		if err != nil {
			t.Fatal(err)
		}
		return "outpost.v1.pump-7.up." + stream, data
	}
	batch := func() tally {
		var tl tally
		for i, m := range []struct {
			stream string
			n      int
		}{{"windows", 3}, {"inferences", 2}, {"windows", 1}, {"drift", 1}} {
			subject, data := env(m.stream, m.n)
			b.convert(nil, subject, data, decode(b.o.Decoder, uint64(i+1), subject, data), uint64(i+1), undo{}, map[string]bool{}, &tl)
		}
		subject, data := "outpost.v1.pump-7.up.bogus", []byte(`{"v":1}`)
		b.convert(nil, subject, data, decode(b.o.Decoder, 9, subject, data), 9, undo{}, map[string]bool{}, &tl)
		return tl
	}
	first := batch()
	if first.records != 7 || first.dead != 1 {
		t.Fatalf("batch: %d records, %d dead, want 7 and 1", first.records, first.dead)
	}
	if got := b.Stats.TopicRecords(); len(got) != 0 {
		t.Fatalf("before any commit: %v", got)
	}
	b.count(first)
	b.count(batch()) // a second committed batch adds to the first
	want := map[string]int64{"windows": 8, "inferences": 4, "events": 2, "deadletter": 2}
	got := b.Stats.TopicRecords()
	if !maps.Equal(got, want) {
		t.Fatalf("per topic %v, want %v", got, want)
	}
	var sum int64
	for _, n := range got {
		sum += n
	}
	if total := b.Stats.Records.Load() + b.Stats.DeadLetters.Load(); sum != total {
		t.Fatalf("per-topic counts sum to %d, Records+DeadLetters are %d", sum, total)
	}
	got["windows"] = 0 // a snapshot: changing it changes nothing
	if b.Stats.TopicRecords()["windows"] != 8 {
		t.Fatal("TopicRecords shares its map with the counters")
	}
}
