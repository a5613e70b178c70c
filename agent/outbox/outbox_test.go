package outbox

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/agent/store"
	"github.com/outpost-edge/outpost/sync/envelope"
)

func open(t *testing.T, path string) (*Outbox, func()) {
	t.Helper()
	s, err := store.Open(context.Background(), path, store.SyncFull)
	if err != nil {
		t.Fatal(err)
	}
	o, err := New(context.Background(), s.DB(), 0)
	if err != nil {
		t.Fatal(err)
	}
	return o, func() { s.Close() }
}

func items(stream string, n int) []Item {
	out := make([]Item, n)
	for i := range out {
		out[i] = Item{Stream: stream, EventTime: time.Unix(int64(i), 0), Data: json.RawMessage(`{"i":1}`)}
	}
	return out
}

func TestSeqRisesAcrossAcksAndRestarts(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "a.db")
	o, closeDB := open(t, path)
	first := o.Epoch()
	seqs, err := o.Append(ctx, append(items("windows", 3), items("telemetry", 1)...))
	if err != nil {
		t.Fatal(err)
	}
	if seqs[0] != 1 || seqs[3] != 4 {
		t.Fatalf("seqs = %v", seqs)
	}
	// Ack the newest telemetry away: its seq must never come back.
	if err := o.Ack(ctx, first, "windows", 2); err != nil {
		t.Fatal(err)
	}
	if err := o.Ack(ctx, first, "telemetry", 4); err != nil {
		t.Fatal(err)
	}
	closeDB()
	o, closeDB = open(t, path)
	defer closeDB()
	if o.Epoch() == first || !envelope.ValidEpoch(o.Epoch()) || o.Epoch() == "" {
		t.Fatalf("epoch after restart %q, before %q: want a new valid one", o.Epoch(), first)
	}
	seqs, err = o.Append(ctx, items("windows", 1))
	if err != nil || seqs[0] != 5 {
		t.Fatalf("after restart seq = %v, %v; want 5", seqs, err)
	}
	// windows of the first epoch still has seq 3 pending: its floor stays.
	// telemetry of the first epoch is empty: its floor is no longer needed.
	floors, err := o.Floors(ctx)
	if err != nil || len(floors) != 1 || floors[Key{first, "windows"}] != 2 {
		t.Fatalf("floors = %v, %v", floors, err)
	}
	b, err := o.Next(ctx, "windows", 0, 10)
	if err != nil || b.Epoch != first || len(b.Records) != 1 || b.Records[0].Seq != 3 {
		t.Fatalf("first batch = %+v, %v; want seq 3 of the first epoch alone", b, err)
	}
	b, err = o.Next(ctx, "windows", 3, 10)
	if err != nil || b.Epoch != o.Epoch() || len(b.Records) != 1 || b.Records[0].Seq != 5 {
		t.Fatalf("second batch = %+v, %v; want seq 5 of the new epoch", b, err)
	}
	// An ack of the new epoch leaves the old epoch's records alone.
	if err := o.Ack(ctx, o.Epoch(), "windows", 5); err != nil {
		t.Fatal(err)
	}
	if recs, _ := o.Pending(ctx, "windows", 0, 10); len(recs) != 1 || recs[0].Seq != 3 {
		t.Fatalf("pending after the new epoch's ack: %+v", recs)
	}
}

// A database from before epochs keeps its rows and floors, as epoch "".
func TestMigratesDatabaseWithoutEpochs(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "a.db")
	s, err := store.Open(ctx, path, store.SyncFull)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, stream TEXT NOT NULL, event_time INTEGER NOT NULL, data BLOB NOT NULL)`,
		`CREATE TABLE outbox_acked (stream TEXT PRIMARY KEY, seq INTEGER NOT NULL)`,
		`INSERT INTO outbox(stream, event_time, data) VALUES('windows', 1, '{}'), ('windows', 2, '{}'), ('windows', 3, '{}')`,
		`INSERT INTO outbox_acked VALUES('windows', 1)`,
		`DELETE FROM outbox WHERE seq = 1`,
	} {
		if _, err := s.DB().ExecContext(ctx, q); err != nil {
			t.Fatal(q, err)
		}
	}
	o, err := New(ctx, s.DB(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	floors, _ := o.Floors(ctx)
	b, err := o.Next(ctx, "windows", 0, 10)
	if err != nil || b.Epoch != "" || len(b.Records) != 2 || floors[Key{"", "windows"}] != 1 {
		t.Fatalf("migrated: batch %+v floors %v err %v", b, floors, err)
	}
}

func TestPendingAckAndDepth(t *testing.T) {
	ctx := context.Background()
	o, closeDB := open(t, filepath.Join(t.TempDir(), "a.db"))
	defer closeDB()
	if _, err := o.Append(ctx, items("windows", 5)); err != nil {
		t.Fatal(err)
	}
	if _, err := o.Append(ctx, items("events", 2)); err != nil {
		t.Fatal(err)
	}
	recs, err := o.Pending(ctx, "windows", 2, 2)
	if err != nil || len(recs) != 2 || recs[0].Seq != 3 || recs[1].Seq != 4 {
		t.Fatalf("pending = %+v, %v", recs, err)
	}
	if recs[0].EventTime.Unix() != 2 || string(recs[0].Data) != `{"i":1}` {
		t.Fatalf("record = %+v", recs[0])
	}
	if err := o.Ack(ctx, o.Epoch(), "windows", 4); err != nil {
		t.Fatal(err)
	}
	// A lower, repeated ack changes nothing.
	if err := o.Ack(ctx, o.Epoch(), "windows", 1); err != nil {
		t.Fatal(err)
	}
	n, bytes, err := o.Depth(ctx)
	if err != nil || n != 3 || bytes != 3*int64(len(`{"i":1}`)) {
		t.Fatalf("depth = %d records %d bytes, %v", n, bytes, err)
	}
	floors, _ := o.Floors(ctx)
	if floors[Key{o.Epoch(), "windows"}] != 4 {
		t.Fatalf("floor = %d, want 4", floors[Key{o.Epoch(), "windows"}])
	}
	streams, _ := o.Streams(ctx)
	if len(streams) != 2 {
		t.Fatalf("streams = %v", streams)
	}
}

func TestAppendRejectsBadItemsAtomically(t *testing.T) {
	ctx := context.Background()
	o, closeDB := open(t, filepath.Join(t.TempDir(), "a.db"))
	defer closeDB()
	bad := [][]Item{
		{{Stream: "bogus", EventTime: time.Now(), Data: json.RawMessage(`1`)}},
		append(items("windows", 2), Item{Stream: "windows", EventTime: time.Now(), Data: json.RawMessage(`{`)}),
	}
	for i, b := range bad {
		if _, err := o.Append(ctx, b); !errors.Is(err, ErrInvalid) {
			t.Errorf("case %d: err = %v, want ErrInvalid", i, err)
		}
	}
	if n, _, _ := o.Depth(ctx); n != 0 {
		t.Fatalf("a rejected batch left %d rows", n)
	}
}

func BenchmarkAppend(b *testing.B) {
	ctx := context.Background()
	s, err := store.Open(ctx, filepath.Join(b.TempDir(), "a.db"), store.SyncFull)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	o, _ := New(ctx, s.DB(), 0)
	batch := items("windows", 100)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := o.Append(ctx, batch); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*len(batch))/b.Elapsed().Seconds(), "records/s")
}

func TestCheckpointCommitsWithItems(t *testing.T) {
	ctx := context.Background()
	o, closeDB := open(t, filepath.Join(t.TempDir(), "a.db"))
	defer closeDB()
	if st, err := o.Checkpoint(ctx, "p"); err != nil || st != nil {
		t.Fatalf("empty checkpoint = %q, %v", st, err)
	}
	if _, err := o.AppendCheckpoint(ctx, items("windows", 1), "p", []byte("one")); err != nil {
		t.Fatal(err)
	}
	// A failing batch must not move the checkpoint either.
	bad := append(items("windows", 1), Item{Stream: "nope", Data: json.RawMessage("1")})
	if _, err := o.AppendCheckpoint(ctx, bad, "p", []byte("two")); err == nil {
		t.Fatal("bad batch accepted")
	}
	if st, _ := o.Checkpoint(ctx, "p"); string(st) != "one" {
		t.Fatalf("checkpoint = %q, want one", st)
	}
	if n, _, _ := o.Depth(ctx); n != 1 {
		t.Fatalf("depth = %d", n)
	}
}

func TestBudgetEvictsTelemetryFirstAndReportsIt(t *testing.T) {
	ctx := context.Background()
	s, err := store.Open(ctx, filepath.Join(t.TempDir(), "a.db"), store.SyncFull)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	big := json.RawMessage(`"` + strings.Repeat("x", 998) + `"`) // 1000 bytes
	mk := func(stream string, n int) []Item {
		out := make([]Item, n)
		for i := range out {
			out[i] = Item{Stream: stream, EventTime: time.Unix(int64(i), 0), Data: big}
		}
		return out
	}
	o, err := New(ctx, s.DB(), 10_000)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := o.Append(ctx, append(append(mk("events", 2), mk("windows", 3)...), mk("telemetry", 5)...)); err != nil {
		t.Fatal(err)
	}
	// 10 kB held: at the budget. Two more windows force evictions.
	if _, err := o.Append(ctx, mk("windows", 2)); err != nil {
		t.Fatal(err)
	}
	count := func(stream string) int {
		recs, _ := o.Pending(ctx, stream, 0, 1000)
		return len(recs)
	}
	if count("telemetry") != 2 || count("windows") != 5 {
		t.Fatalf("after eviction: telemetry %d, windows %d; want the 3 oldest telemetry gone", count("telemetry"), count("windows"))
	}
	events, _ := o.Pending(ctx, "events", 0, 10)
	if len(events) != 3 || !strings.Contains(string(events[2].Data), `"outbox_eviction"`) || !strings.Contains(string(events[2].Data), `"telemetry":{"bytes":3000,"records":3}`) {
		t.Fatalf("eviction event missing: %d events, last %s", len(events), events[len(events)-1].Data)
	}
	if o.Stats.EvictedRecords.Load() != 3 || o.Stats.EvictedBytes.Load() != 3000 {
		t.Fatalf("stats = %d records %d bytes", o.Stats.EvictedRecords.Load(), o.Stats.EvictedBytes.Load())
	}
	// Accounting survives a reopen.
	o2, _ := New(ctx, s.DB(), 10_000)
	_, b1, _ := o.Depth(ctx)
	if o2.bytes != b1 || o.bytes != b1 {
		t.Fatalf("bytes tracked %d / reopened %d / actual %d", o.bytes, o2.bytes, b1)
	}
}
