package uplink

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/outpost-edge/outpost/agent/outbox"
	"github.com/outpost-edge/outpost/agent/store"
	"github.com/outpost-edge/outpost/sync/envelope"
)

// recorder is a connected publisher that keeps what it was sent.
type recorder struct {
	mu   sync.Mutex
	sent []*envelope.Envelope
}

func (r *recorder) Publish(_ context.Context, _ string, _ byte, _ bool, payload []byte) error {
	e, err := envelope.Decode(payload)
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.sent = append(r.sent, e)
	r.mu.Unlock()
	return nil
}

func (r *recorder) Connected() bool { return true }

// batches counts the envelopes sent of stream whose first record is seq.
func (r *recorder) batches(stream string, seq uint64) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, e := range r.sent {
		if e.Stream == stream && e.Records[0].Seq == seq {
			n++
		}
	}
	return n
}

// openOutbox is an outbox in a fresh SQLite file, closed with the test.
func openOutbox(ctx context.Context, t *testing.T) *outbox.Outbox {
	t.Helper()
	db, err := store.Open(ctx, filepath.Join(t.TempDir(), "a.db"), store.SyncNormal)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	ob, err := outbox.New(ctx, db.DB(), 0)
	if err != nil {
		t.Fatal(err)
	}
	return ob
}

func ackPayload(epoch string, marks map[string]uint64) []byte {
	b, _ := json.Marshal(map[string]any{"epoch": epoch, "acks": marks})
	return b
}

// A hub that stops acknowledging one stream (its acker moved and lost
// that stream's marks) while it acks the others: the stalled stream must
// be resent after the ack timeout, however often other streams are acked.
func TestStalledStreamIsResentWhileOthersAreAcked(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		ob := openOutbox(ctx, t)
		add := func(stream string, n int) []uint64 {
			items := make([]outbox.Item, n)
			for i := range items {
				items[i] = outbox.Item{Stream: stream, EventTime: time.Now(), Data: json.RawMessage(`{"v":1}`)}
			}
			seqs, err := ob.Append(ctx, items)
			if err != nil {
				t.Fatal(err)
			}
			return seqs
		}
		windows := add("windows", 5)
		pub := &recorder{}
		cfg := SendConfig{BatchRecords: 100, MaxInflight: 1000, AckTimeout: 10 * time.Second}
		s := NewSender(cfg, "d1", ob, pub, slog.New(slog.DiscardHandler))
		done := make(chan error, 1)
		go func() { done <- s.Run(ctx) }()
		synctest.Wait()
		if n := pub.batches("windows", windows[0]); n != 1 {
			t.Fatalf("windows sent %d times, want 1", n)
		}
		if at := s.LastAck(); !at.IsZero() {
			t.Fatalf("last ack at %v before any ack", at)
		}
		// For 30 s, the hub acks every events batch within 2 s and never
		// the windows one.
		for i := 0; i < 15; i++ {
			seqs := add("events", 1)
			synctest.Wait()
			time.Sleep(2 * time.Second)
			s.OnAck("", ackPayload(ob.Epoch(), map[string]uint64{"events": seqs[0]}))
			synctest.Wait()
		}
		if n := pub.batches("windows", windows[0]); n < 2 {
			t.Fatalf("windows sent %d times in 30 s with a 10 s ack timeout: the stalled stream was never resent", n)
		}
		// The last ack that moved a stream is the time it arrived (the
		// bubble's clock does not move while the sender applies it).
		lastAck := time.Now()
		if at := s.LastAck(); !at.Equal(lastAck) {
			t.Fatalf("last ack at %v, want %v", at, lastAck)
		}
		time.Sleep(time.Second)
		// An ack the sender already had (the hub's acks are cumulative)
		// moves nothing.
		s.OnAck("", ackPayload(ob.Epoch(), map[string]uint64{"events": 1}))
		synctest.Wait()
		if at := s.LastAck(); !at.Equal(lastAck) {
			t.Fatalf("an ack that moved nothing set the last ack to %v, want %v", at, lastAck)
		}
		// Acks name their epoch: one for another epoch deletes nothing.
		s.OnAck("", ackPayload("0000other", map[string]uint64{"windows": windows[4]}))
		synctest.Wait()
		if recs, _ := ob.Pending(ctx, "windows", 0, 10); len(recs) != 5 {
			t.Fatalf("an ack of another epoch deleted records: %d left", len(recs))
		}
		s.OnAck("", ackPayload(ob.Epoch(), map[string]uint64{"windows": windows[4]}))
		synctest.Wait()
		if recs, _ := ob.Pending(ctx, "windows", 0, 10); len(recs) != 0 {
			t.Fatalf("%d windows left after their ack", len(recs))
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(fmt.Errorf("sender: %w", err))
		}
	})
}

func gapPayload(epoch string, marks, gaps map[string]uint64) []byte {
	b, _ := json.Marshal(map[string]any{"epoch": epoch, "acks": marks, "gaps": gaps})
	return b
}

// A batch lost on its way into the hub (a full ingest queue drops it
// after the broker's PUBACK): the hub names the gap when the next batch
// comes, and the stream is resent at once, not after the ack timeout.
// Gaps named after batches that were already in flight when the stream
// was rewound resend nothing more.
func TestGapTheHubNamesIsResentAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		ob := openOutbox(ctx, t)
		add := func(n int) []uint64 {
			items := make([]outbox.Item, n)
			for i := range items {
				items[i] = outbox.Item{Stream: "windows", EventTime: time.Now(), Data: json.RawMessage(`{"v":1}`)}
			}
			seqs, err := ob.Append(ctx, items)
			if err != nil {
				t.Fatal(err)
			}
			return seqs
		}
		seqs := add(10)
		pub := &recorder{}
		cfg := SendConfig{BatchRecords: 2, MaxInflight: 1000, AckTimeout: time.Hour}
		s := NewSender(cfg, "d1", ob, pub, slog.New(slog.DiscardHandler))
		done := make(chan error, 1)
		go func() { done <- s.Run(ctx) }()
		synctest.Wait()
		if n := pub.batches("windows", seqs[0]); n != 1 {
			t.Fatalf("first batch sent %d times, want 1", n)
		}
		epoch := ob.Epoch()
		// The first batch (seqs 1-2) was dropped: the hub holds nothing and
		// got the second, which follows seq 2.
		s.OnAck("", gapPayload(epoch, map[string]uint64{}, map[string]uint64{"windows": seqs[1]}))
		synctest.Wait()
		if n := pub.batches("windows", seqs[0]); n != 2 {
			t.Fatalf("first batch sent %d times after the hub named the gap, want 2 (resent at once, an hour before the ack timeout)", n)
		}
		// The third and fourth batches, sent before the rewind, arrive as
		// gaps too: the rewind already resends them.
		s.OnAck("", gapPayload(epoch, map[string]uint64{}, map[string]uint64{"windows": seqs[3]}))
		s.OnAck("", gapPayload(epoch, map[string]uint64{}, map[string]uint64{"windows": seqs[5]}))
		synctest.Wait()
		if n := pub.batches("windows", seqs[0]); n != 2 {
			t.Fatalf("first batch sent %d times: gaps of batches sent before the rewind rewound again", n)
		}
		// The resent first batch was lost in its turn: its successor's gap
		// looks like the stale ones, and is resent a fifth of the ack
		// timeout after the rewind.
		time.Sleep(cfg.AckTimeout / 5)
		s.OnAck("", gapPayload(epoch, map[string]uint64{}, map[string]uint64{"windows": seqs[1]}))
		synctest.Wait()
		if n := pub.batches("windows", seqs[0]); n != 3 {
			t.Fatalf("first batch sent %d times after its resend was lost too, want 3", n)
		}
		// The resent batches joined; a batch sent after the rewind is lost.
		s.OnAck("", ackPayload(epoch, map[string]uint64{"windows": seqs[9]}))
		more := add(4)
		synctest.Wait()
		s.OnAck("", gapPayload(epoch, map[string]uint64{"windows": seqs[9]}, map[string]uint64{"windows": more[1]}))
		synctest.Wait()
		if n := pub.batches("windows", more[0]); n != 2 {
			t.Fatalf("batch after the rewind sent %d times after its gap was named, want 2", n)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(fmt.Errorf("sender: %w", err))
		}
	})
}
