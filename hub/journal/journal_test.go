package journal_test

import (
	"context"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/hub/journal"
	"github.com/outpost-edge/outpost/test/natstest"
)

type entry struct {
	N int `json:"n"`
}

// Entries come back per key, in order; the same entry appended twice is
// kept once; one that does not decode is left out, and the read ends.
func TestJournal(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js := natstest.JetStream(t)
	j, err := journal.Open(ctx, js, journal.Config{Stream: "TEST_JOURNAL", Prefix: "test.journal.", Replicas: 1, MaxAge: time.Hour, PerKey: 600})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 700 {
		if err := j.Append(ctx, "a", entry{i}); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 { // a second hub appends the same
		if err := j.Append(ctx, "b", entry{1}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := js.Publish(ctx, "test.journal.b", []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	if err := j.Append(ctx, "b", entry{2}); err != nil {
		t.Fatal(err)
	}
	a, total, err := journal.Read[entry](ctx, j, "a")
	if err != nil || total != 600 || len(a) != 600 || a[0].N != 100 || a[599].N != 699 {
		t.Fatalf("key a: %d of %d, %v (first %v)", len(a), total, err, a[:1])
	}
	b, total, err := journal.Read[entry](ctx, j, "b")
	if err != nil || total != 3 || len(b) != 2 || b[0].N != 1 || b[1].N != 2 {
		t.Fatalf("key b: %v of %d, %v", b, total, err)
	}
	// A key that is not one subject token (a model name with a dot, a
	// wildcard) is its own key all the same.
	for _, k := range []string{"health.v2", "*", "a.b.c", ">"} {
		if err := j.Append(ctx, k, entry{7}); err != nil {
			t.Fatalf("append under %q: %v", k, err)
		}
		if got, n, err := journal.Read[entry](ctx, j, k); err != nil || n != 1 || len(got) != 1 || got[0].N != 7 {
			t.Fatalf("key %q: %v of %d, %v", k, got, n, err)
		}
	}
	if none, total, err := journal.Read[entry](ctx, j, "c"); err != nil || total != 0 || len(none) != 0 {
		t.Fatalf("key c: %v %d %v", none, total, err)
	}
	cfg, err := j.StreamConfig(ctx)
	if err != nil || cfg.MaxMsgsPerSubject != 600 || cfg.MaxAge != time.Hour {
		t.Fatalf("stream config %+v %v", cfg, err)
	}
}
