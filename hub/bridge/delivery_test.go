package bridge

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// losingStream is a real stream whose consumers lose the messages of one
// fetch on the way: JetStream delivers them (the consumer's sequence moves
// on), the bridge never sees them. That is what happens when nats.go's
// Fetch gives up (a second past its expiry) before a busy server has
// served the pull: BenchmarkHubToKafka at 2000 messages lost consumer
// deliveries 21-37 this way as the burst began, and a device's tail with
// them.
type losingStream struct {
	jetstream.Stream
	lose *atomic.Int32 // the fetch, counted from 1, that loses its messages
}

func (s losingStream) CreateConsumer(ctx context.Context, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	c, err := s.Stream.CreateConsumer(ctx, cfg)
	return losingConsumer{Consumer: c, lose: s.lose}, err
}

type losingConsumer struct {
	jetstream.Consumer
	lose *atomic.Int32
}

func (c losingConsumer) Fetch(n int, opts ...jetstream.FetchOpt) (jetstream.MessageBatch, error) {
	batch, err := c.Consumer.Fetch(n, opts...)
	if err != nil || c.lose.Add(-1) != 0 {
		return batch, err
	}
	var lost int
	for range batch.Messages() {
		lost++
	}
	if lost == 0 { // nothing to lose yet: lose the next one
		c.lose.Store(1)
	}
	return emptyBatch{}, nil
}

type emptyBatch struct{}

func (emptyBatch) Messages() <-chan jetstream.Msg {
	ch := make(chan jetstream.Msg)
	close(ch)
	return ch
}
func (emptyBatch) Error() error { return nil }

// Messages JetStream delivered that never reached the bridge must not be
// acked past. A later fetch's AckAll covered them, retention trimmed them,
// and the device's following batches were gaps: acked to the device, never
// in Kafka. The bridge sees the consumer's sequence skip, drops the batch
// and reads again from its checkpoint.
func TestDeliveriesLostOnTheWayAreReadAgain(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	kcfg, conn := realKafka(t, ctx)
	js, st := upStream(t, ctx)
	const batches = 12
	for i := uint64(0); i < batches; i++ {
		if _, err := js.Publish(ctx, "outpost.v1.pump-7.up.windows", windowsEnvelope(t, "pump-7", 2*i, 2*i+1, 2*i+2)); err != nil {
			t.Fatal(err)
		}
	}
	var lose atomic.Int32
	lose.Store(2) // the first fetch commits, the second is lost
	b := New(Config{BatchMessages: 3, Linger: 50 * time.Millisecond}, Options{
		Log: slog.New(slog.DiscardHandler), Stream: losingStream{Stream: st, lose: &lose},
		ClientOpts: conn.Opts, Kafka: kcfg, TransactionalID: kcfg.TopicPrefix + "bridge",
	})
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- b.Run(runCtx) }()
	for b.Stats.Committed.Load() < batches && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	readCtx, cancelRead := context.WithTimeout(ctx, 10*time.Second)
	defer cancelRead()
	recs := committedRecords(t, readCtx, conn, kcfg.TopicPrefix+"windows", 2*batches)
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2*batches || b.Stats.Gaps.Load() != 0 {
		t.Fatalf("Kafka holds %d of %d records, %d batches taken for gaps", len(recs), 2*batches, b.Stats.Gaps.Load())
	}
	if got := b.Stats.DeliveryGaps.Load(); got != 1 {
		t.Fatalf("%d delivery gaps counted, want 1", got)
	}
}
