package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outpost-edge/outpost/hub/kafka"
	"github.com/outpost-edge/outpost/sync/envelope"
	"github.com/outpost-edge/outpost/test/kafkatest"
	"github.com/outpost-edge/outpost/test/natstest"
)

// storedMsg is a JetStream message as the bridge sees it: subject, data,
// stream sequence and an ack that is recorded.
type storedMsg struct {
	jetstream.Msg
	subject string
	data    []byte
	seq     uint64
	acks    *[]uint64
}

func (m storedMsg) Subject() string { return m.subject }
func (m storedMsg) Data() []byte    { return m.data }
func (m storedMsg) Ack() error      { *m.acks = append(*m.acks, m.seq); return nil }
func (m storedMsg) Metadata() (*jetstream.MsgMetadata, error) {
	return &jetstream.MsgMetadata{Sequence: jetstream.SequencePair{Stream: m.seq}}, nil
}

// windowsEnvelope is one device's windows envelope of records first..last,
// continuing its stream from prev.
func windowsEnvelope(t *testing.T, device string, prev, first, last uint64) []byte {
	t.Helper()
	at := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	e := &envelope.Envelope{V: 1, Device: device, Epoch: "e1", Stream: "windows", Prev: prev}
	for s := first; s <= last; s++ {
		e.Records = append(e.Records, envelope.Record{Seq: s, EventTime: at, Data: json.RawMessage(`{"x":1}`)})
	}
	data, err := envelope.Encode(e, false)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// upStream is OUTPOST_UP on a fresh embedded JetStream.
func upStream(t *testing.T, ctx context.Context) (jetstream.JetStream, jetstream.Stream) {
	t.Helper()
	js := natstest.JetStream(t)
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "OUTPOST_UP", Subjects: []string{"outpost.v1.*.up.*"}})
	if err != nil {
		t.Fatal(err)
	}
	return js, st
}

// realKafka creates a prefix's topics on the test broker and returns the
// kafka config for them.
func realKafka(t *testing.T, ctx context.Context) (kafka.Config, *kafka.Conn) {
	t.Helper()
	cfg := kafka.Config{Brokers: kafkatest.Brokers(t), TopicPrefix: fmt.Sprintf("tr%d.", time.Now().UnixNano()), Partitions: 1, Replication: 1}
	conn, err := kafka.Connect(ctx, cfg, "", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	return cfg, conn
}

// committedRecords reads topic's committed records until it holds want of
// them or ctx ends.
func committedRecords(t *testing.T, ctx context.Context, conn *kafka.Conn, topic string, want int) []*kgo.Record {
	t.Helper()
	rd, err := kgo.NewClient(append(append([]kgo.Opt{}, conn.Opts...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().AtStart()}}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	var out []*kgo.Record
	for len(out) < want {
		fs := rd.PollFetches(ctx)
		if ctx.Err() != nil {
			break
		}
		out = append(out, fs.Records()...)
	}
	return out
}

// A message redelivered after AckWait can come last in a batch, behind
// newer messages. The batch commits through its highest sequence, and that
// message is the one acked (AckAll): going by the last message's sequence
// skipped the whole batch as committed, and a later ack covered the newer
// messages, so they never reached Kafka.
func TestBatchEndingInARedeliveryCommitsItsNewerMessages(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	kcfg, conn := realKafka(t, ctx)
	b := New(Config{}, Options{Log: slog.New(slog.DiscardHandler), ClientOpts: conn.Opts, Kafka: kcfg, TransactionalID: kcfg.TopicPrefix + "bridge"})
	if err := b.connect(); err != nil {
		t.Fatal(err)
	}
	defer b.cl.Close()
	var err error
	if b.enc, err = NewEncoder(ctx, Config{}, kcfg.TopicPrefix); err != nil {
		t.Fatal(err)
	}
	if err := b.loadCheckpoint(ctx); err != nil {
		t.Fatal(err)
	}
	// Stream messages 1..10 are committed; 5 comes again after 11 and 12.
	b.lastSeq = 10
	b.Stats.Committed.Store(10)
	const subject = "outpost.v1.pump-7.up.windows"
	var acks []uint64
	var msgs []jetstream.Msg
	var mds []*jetstream.MsgMetadata
	for _, m := range []struct {
		seq, prev, first, last uint64
	}{{11, 0, 1, 2}, {12, 2, 3, 4}, {5, 0, 1, 2}} {
		sm := storedMsg{subject: subject, data: windowsEnvelope(t, "pump-7", m.prev, m.first, m.last), seq: m.seq, acks: &acks}
		md, _ := sm.Metadata()
		msgs, mds = append(msgs, sm), append(mds, md)
	}
	f := fetchedOf(msgs, mds)
	b.decodeBatch(f)
	if err := b.transfer(ctx, f); err != nil {
		t.Fatal(err)
	}
	if b.lastSeq != 12 || len(acks) != 1 || acks[0] != 12 {
		t.Fatalf("committed through %d, acked %v; want 12 and [12]", b.lastSeq, acks)
	}
	recs := committedRecords(t, ctx, conn, kcfg.TopicPrefix+"windows", 4)
	if len(recs) != 4 {
		t.Fatalf("%d records of messages 11 and 12 in Kafka, want 4", len(recs))
	}
}

// A fetch that fails while a batch commits must not cut that commit
// short, nor take the place of its outcome: the batch in hand finishes
// first, and what it returns (here the crash injected after its commit)
// is what Run returns.
func TestFetchErrorWaitsForTheCommitInHand(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	kcfg, conn := realKafka(t, ctx)
	js, st := upStream(t, ctx)
	if _, err := js.Publish(ctx, "outpost.v1.pump-7.up.windows", windowsEnvelope(t, "pump-7", 0, 1, 2)); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	crash := errors.New("crash")
	b := New(Config{BatchMessages: 10, Linger: 20 * time.Millisecond}, Options{
		Log: slog.New(slog.DiscardHandler), Stream: st, ClientOpts: conn.Opts, Kafka: kcfg, TransactionalID: kcfg.TopicPrefix + "bridge",
		AfterCommit: func() error {
			err := error(nil)
			once.Do(func() {
				// The fetcher's next pull finds no consumer, and fails
				// while this batch is still in hand.
				for n := range st.ConsumerNames(ctx).Name() {
					if err := st.DeleteConsumer(ctx, n); err != nil {
						t.Error(err)
					}
				}
				time.Sleep(500 * time.Millisecond)
				err = crash
			})
			return err
		},
	})
	if err := b.Run(ctx); !errors.Is(err, errCrash) {
		t.Fatalf("Run returned %v, want the crash injected after the commit", err)
	}
	if got := b.Stats.Records.Load(); got != 2 {
		t.Fatalf("%d records committed, want 2", got)
	}
}

// A bridge that lost its lease while frozen fetches once more when it
// thaws, before its commit finds it fenced. Its successor has replaced the
// consumer by then; the old bridge's fetch must take nothing from the new
// one. (With one consumer name for every run, it pulled from its
// successor's consumer, and the messages it took waited out AckWait while
// the successor's AckAll of a later message covered them: lost, in
// TestAckerFailoverResumesEveryStream.)
func TestAFencedBridgeTakesNothingFromItsSuccessor(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	js, st := upStream(t, ctx)
	bridge := func() *Bridge {
		return New(Config{BatchMessages: 10, Linger: 100 * time.Millisecond}, Options{Log: slog.New(slog.DiscardHandler), Stream: st})
	}
	frozen, err := bridge().openConsumer(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	successor, err := bridge().openConsumer(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := uint64(1); i <= 3; i++ {
		if _, err := js.Publish(ctx, "outpost.v1.pump-7.up.windows", windowsEnvelope(t, "pump-7", 2*(i-1), 2*i-1, 2*i)); err != nil {
			t.Fatal(err)
		}
	}
	if f, err := bridge().fetch(frozen); err == nil && f != nil {
		t.Fatalf("the fenced bridge's consumer delivered %d messages of its successor's", len(f.items))
	}
	f, err := bridge().fetch(successor)
	if err != nil || f == nil || len(f.items) != 3 {
		t.Fatalf("the successor fetched %v (%v), want all 3 messages", f, err)
	}
}
