package bridge

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outpost-edge/outpost/hub/ingest"
	"github.com/outpost-edge/outpost/hub/kafka"
)

// put feeds f the messages of seqs, each following the one before it,
// the first following prev.
func put(f *Feed, prev uint64, seqs ...uint64) {
	for _, s := range seqs {
		f.Put(prev, storedMsg{subject: "outpost.v1.d.up.windows", data: make([]byte, 100), seq: s},
			&jetstream.MsgMetadata{Sequence: jetstream.SequencePair{Stream: s}})
		prev = s
	}
}

func seqsOf(items []Stored) []uint64 {
	out := make([]uint64, len(items))
	for i, it := range items {
		out[i] = it.Seq
	}
	return out
}

func TestFeedHandsOutWhatFollowsAPosition(t *testing.T) {
	f := NewFeed(1 << 20)
	put(f, 0, 1, 2, 3, 5, 6) // 4 was deleted from the stream
	got, ok := f.Take(context.Background(), 2, 10, time.Millisecond)
	if !ok || len(got) != 3 || got[0].Seq != 3 || got[2].Seq != 6 {
		t.Fatalf("after 2: %v (%v), want [3 5 6]", seqsOf(got), ok)
	}
	got, ok = f.Take(context.Background(), 0, 2, time.Hour)
	if !ok || len(got) != 2 || got[1].Seq != 2 {
		t.Fatalf("2 after 0: %v (%v), want [1 2] at once", seqsOf(got), ok)
	}
	if got, ok := f.Take(context.Background(), 6, 1, time.Millisecond); !ok || len(got) != 0 {
		t.Fatalf("after the tail: %v (%v), want nothing yet", seqsOf(got), ok)
	}
	if _, ok := f.Take(context.Background(), 7, 1, time.Millisecond); ok {
		t.Fatal("a position past what the acker received was served: the bridge would wait on an acker behind it")
	}
}

// A bridge further behind than the feed holds must read the stream: the
// feed no longer has what follows it.
func TestFeedDropsTheOldestForRoom(t *testing.T) {
	f := NewFeed(3 * (len("outpost.v1.d.up.windows") + 100 + storedOverhead))
	put(f, 0, 1, 2, 3, 4, 5)
	if n := f.Dropped.Load(); n != 2 {
		t.Fatalf("%d dropped, want 2", n)
	}
	if _, ok := f.Take(context.Background(), 1, 10, time.Millisecond); ok {
		t.Fatal("served the position before a dropped message")
	}
	got, ok := f.Take(context.Background(), 2, 10, time.Millisecond)
	if !ok || len(got) != 3 || got[0].Seq != 3 {
		t.Fatalf("after 2: %v (%v), want [3 4 5]", seqsOf(got), ok)
	}
}

// The acker's next run reads the stream from its start again: a new
// chain, which serves the bridge only once it reaches it.
func TestFeedStartsAgainWhenTheAckerDoes(t *testing.T) {
	f := NewFeed(1 << 20)
	put(f, 0, 1, 2, 3, 4, 5)
	put(f, 0, 1, 2)
	if _, ok := f.Take(context.Background(), 4, 10, time.Millisecond); ok {
		t.Fatal("served 4 from a chain that ends at 2")
	}
	put(f, 2, 3, 4, 5, 6)
	got, ok := f.Take(context.Background(), 4, 10, time.Millisecond)
	if !ok || len(got) != 2 || got[0].Seq != 5 {
		t.Fatalf("after 4: %v (%v), want [5 6]", seqsOf(got), ok)
	}
	// A delivery at or before the one it follows breaks the chain too.
	put(f, 6, 6)
	if _, ok := f.Take(context.Background(), 4, 10, time.Millisecond); ok {
		t.Fatal("served a chain that went backwards")
	}
	// A new lease starts from nothing.
	put(f, 6, 7, 8)
	f.Reset()
	if _, ok := f.Take(context.Background(), 7, 10, time.Millisecond); ok {
		t.Fatal("served what an earlier lease's acker received")
	}
}

func TestFeedTakeWaitsForAFullBatch(t *testing.T) {
	f := NewFeed(1 << 20)
	put(f, 0, 1)
	done := make(chan []Stored)
	go func() {
		got, _ := f.Take(context.Background(), 0, 3, time.Hour)
		done <- got
	}()
	put(f, 1, 2, 3)
	if got := <-done; len(got) != 3 {
		t.Fatalf("took %v, want [1 2 3]", seqsOf(got))
	}
}

// runAcker runs the real acker on st, feeding f, until the test ends.
func runAcker(t *testing.T, js jetstream.JetStream, st jetstream.Stream, f *Feed) {
	t.Helper()
	a := ingest.NewAcker(js.Conn(), nil, slog.New(slog.DiscardHandler))
	a.OnStored = f.Put
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = a.Run(ctx, st)
	}()
	t.Cleanup(func() { stop(); <-done })
}

func publishWindows(t *testing.T, ctx context.Context, js jetstream.JetStream, from, n uint64) {
	t.Helper()
	for i := from; i < from+n; i++ {
		if _, err := js.Publish(ctx, "outpost.v1.pump-7.up.windows", windowsEnvelope(t, "pump-7", 2*i, 2*i+1, 2*i+2)); err != nil {
			t.Fatal(err)
		}
	}
}

// bridgeConsumers are the stream's consumers a bridge made.
func bridgeConsumers(t *testing.T, ctx context.Context, st jetstream.Stream) []string {
	t.Helper()
	var out []string
	names := st.ConsumerNames(ctx)
	for n := range names.Name() {
		if strings.HasPrefix(n, ConsumerName) {
			out = append(out, n)
		}
	}
	if err := names.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// runFeedBridge runs a bridge of 4-message batches reading feed until
// the test's end; wait blocks until it has committed through seq.
func runFeedBridge(t *testing.T, ctx context.Context, kcfg kafka.Config, conn *kafka.Conn, st jetstream.Stream, feed *Feed) (b *Bridge, wait func(seq uint64)) {
	t.Helper()
	b = New(Config{BatchMessages: 4, Linger: 20 * time.Millisecond}, Options{Log: slog.New(slog.DiscardHandler), Stream: st, Feed: feed,
		ClientOpts: conn.Opts, Kafka: kcfg, TransactionalID: kcfg.TopicPrefix + "bridge"})
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- b.Run(runCtx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return b, func(seq uint64) {
		for b.Stats.Committed.Load() < seq {
			if ctx.Err() != nil {
				t.Fatalf("committed through %d, want %d", b.Stats.Committed.Load(), seq)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// While the bridge keeps up it reads what the acker received and holds no
// consumer: one delivery of each message.
func TestBridgeReadsWhatTheAckerReceived(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	kcfg, conn := realKafka(t, ctx)
	js, st := upStream(t, ctx)
	feed := NewFeed(1 << 20)
	runAcker(t, js, st, feed)
	b, wait := runFeedBridge(t, ctx, kcfg, conn, st, feed)
	publishWindows(t, ctx, js, 0, 20)
	wait(20)
	if recs := committedRecords(t, ctx, conn, kcfg.TopicPrefix+"windows", 40); len(recs) != 40 {
		t.Fatalf("Kafka holds %d of 40 records", len(recs))
	}
	if feedN, own := b.Stats.FromFeed.Load(), b.Stats.FromStream.Load(); feedN != 20 || own != 0 {
		t.Fatalf("read %d messages from the feed and %d through a consumer, want 20 and 0", feedN, own)
	}
	if cs := bridgeConsumers(t, ctx, st); len(cs) != 0 {
		t.Fatalf("the bridge holds consumers %v while it reads the feed", cs)
	}
}

// A bridge that starts further behind than the feed holds reads the
// stream through its own consumer, and returns to the feed, dropping the
// consumer, once it reaches what the feed holds. Nothing is written twice
// or skipped on either switch.
func TestBridgeBehindTheFeedCatchesUpThroughTheStream(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	kcfg, conn := realKafka(t, ctx)
	js, st := upStream(t, ctx)
	publishWindows(t, ctx, js, 0, 12)
	feed := NewFeed(3 * (len("outpost.v1.pump-7.up.windows") + len(windowsEnvelope(t, "pump-7", 0, 1, 2)) + storedOverhead))
	runAcker(t, js, st, feed)
	for feed.Tail() < 12 && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	b, wait := runFeedBridge(t, ctx, kcfg, conn, st, feed)
	wait(12)
	publishWindows(t, ctx, js, 12, 2) // what the feed holds
	wait(14)
	recs := committedRecords(t, ctx, conn, kcfg.TopicPrefix+"windows", 28)
	seen := map[string]bool{}
	for _, r := range recs {
		seen[string(r.Key)+"/"+headerValue(r, "ce_id")] = true
	}
	if len(recs) != 28 || len(seen) != 28 {
		t.Fatalf("Kafka holds %d records (%d distinct) of 28", len(recs), len(seen))
	}
	if own, feedN, fb := b.Stats.FromStream.Load(), b.Stats.FromFeed.Load(), b.Stats.Fallbacks.Load(); own < 9 || feedN < 2 || own+feedN != 14 || fb != 1 {
		t.Fatalf("read %d messages through a consumer and %d from the feed, %d fallbacks; want at least the 9 the feed dropped, the last 2 from the feed, 14 in all, 1 fallback", own, feedN, fb)
	}
	if cs := bridgeConsumers(t, ctx, st); len(cs) != 0 {
		t.Fatalf("the bridge still holds consumers %v back on the feed", cs)
	}
}

// A feed nobody fills (an acker that stalled) must not stall the bridge:
// it finds the stream holding more than the feed brought, and reads it.
func TestBridgeLeavesAFeedThatStalled(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	kcfg, conn := realKafka(t, ctx)
	js, st := upStream(t, ctx)
	b, wait := runFeedBridge(t, ctx, kcfg, conn, st, NewFeed(1<<20))
	publishWindows(t, ctx, js, 0, 5)
	wait(5)
	if recs := committedRecords(t, ctx, conn, kcfg.TopicPrefix+"windows", 10); len(recs) != 10 {
		t.Fatalf("Kafka holds %d of 10 records", len(recs))
	}
	if fb := b.Stats.Fallbacks.Load(); fb != 1 {
		t.Fatalf("%d fallbacks, want 1", fb)
	}
}

func headerValue(r *kgo.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}
