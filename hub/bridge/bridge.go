// Package bridge copies OUTPOST_UP from JetStream into Kafka exactly once
// (DESIGN §3.4): each batch is one Kafka transaction that also writes a
// checkpoint (the last JetStream sequence and the touched per-device, per-
// epoch, per-stream seq marks) to a compacted topic. JetStream is acked only
// after the commit. On restart the bridge loads the checkpoint, skips
// JetStream messages at or below the checkpointed sequence and drops
// records at or below the marks, so a crash anywhere writes nothing twice.
//
// The checkpoint names the stream it belongs to (its name and creation
// time): a hub whose storage was rebuilt has a new stream, which the bridge
// reads from its beginning, still deduplicated by the marks (DESIGN §3.7).
package bridge

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/sync/errgroup"
	"golang.org/x/time/rate"

	"github.com/outpost-edge/outpost/hub/kafka"
	"github.com/outpost-edge/outpost/sync/envelope"
	"github.com/outpost-edge/outpost/sync/topics"
)

// Config is the bridge section of the hub config.
type Config struct {
	BatchMessages int           `yaml:"batch_messages" usage:"most JetStream messages (envelopes) per Kafka transaction"`
	Linger        time.Duration `yaml:"linger" usage:"how long a transaction waits to fill its batch"`
	// SharedDecodeBytes bounds the decodings the acker keeps for the
	// bridge; a bridge further behind decodes for itself.
	SharedDecodeBytes int64 `yaml:"shared_decode_bytes" usage:"decoded envelopes the acker holds for the bridge, in bytes (each payload is decoded once while the bridge is this close behind the acker; 0: each decodes its own)"`
	// FeedBytes bounds the stored messages the acker holds for the
	// bridge (Feed); a bridge further behind reads the stream itself.
	FeedBytes   int64  `yaml:"feed_bytes" usage:"stream messages the acker holds for the bridge, in bytes (the bridge reads them without a JetStream delivery of its own while it is this close behind the acker; 0: it always reads its own)"`
	Compression string `yaml:"compression" usage:"Kafka batch compression: none, lz4 or zstd"`
	// Format of record values. outpost.deadletter stays JSON in either:
	// it holds what could not be understood.
	Format         string         `yaml:"format" usage:"record value format: json or avro"`
	SchemaRegistry SchemaRegistry `yaml:"schema_registry"`
}

// Options wire the bridge to its surroundings.
type Options struct {
	Stream jetstream.Stream
	// ClientOpts connect to Kafka (seed brokers, SASL); the bridge adds
	// its transactional settings.
	ClientOpts []kgo.Opt
	Kafka      kafka.Config
	// TransactionalID must be stable per hub: it fences a zombie instance.
	TransactionalID string
	Log             *slog.Logger
	// Decoder holds the decodings the bridge shares with the acker (nil:
	// its own, with the package default bound), so that each payload is
	// inflated and parsed once, and both judge it the same.
	Decoder *envelope.Shared
	// Feed, when set, holds what the acker received, for the bridge to
	// read without a delivery of its own while it keeps up (see Feed).
	Feed *Feed
	// AfterCommit, when set, runs between the Kafka commit and the JetStream
	// ack. Tests use it to crash the bridge at the worst moment.
	AfterCommit func() error
}

// Stats are the bridge's counters.
type Stats struct {
	Transactions, Records, Duplicates, Gaps, DeadLetters, Aborts atomic.Int64
	// DeliveryGaps counts the times JetStream's deliveries to the bridge
	// skipped messages, lost on the way, and it read again from its
	// checkpoint.
	DeliveryGaps atomic.Int64
	// FromFeed and FromStream count the messages the bridge read from the
	// feed and through a consumer of its own; Fallbacks the times it went
	// from the first to the second.
	FromFeed, FromStream, Fallbacks atomic.Int64
	// Backlog is the number of stream messages not yet bridged; BacklogAge
	// how long the oldest of them has waited.
	Backlog    atomic.Uint64
	BacklogAge atomic.Int64 // nanoseconds
	// Committed is the last JetStream sequence of this stream committed to
	// Kafka (0: none yet, or not known since this run started): everything
	// at or below it may leave the stream.
	Committed atomic.Uint64
	// perTopic counts the records of committed batches by topic.
	perTopic topicTotals
}

// topicTotals are records per Kafka topic (without the prefix), added
// once per committed batch.
type topicTotals struct {
	mu sync.Mutex
	m  map[string]int64
}

// TopicRecords is a snapshot of the records committed to each Kafka topic
// (without the configured prefix: windows, events, deadletter...). Dead
// letters are records of the deadletter topic, so the counts sum to
// Records plus DeadLetters.
func (s *Stats) TopicRecords() map[string]int64 {
	s.perTopic.mu.Lock()
	defer s.perTopic.mu.Unlock()
	out := make(map[string]int64, len(s.perTopic.m))
	for k, v := range s.perTopic.m {
		out[k] = v
	}
	return out
}

// Bridge is one running copy loop.
type Bridge struct {
	cfg        Config
	o          Options
	log        *slog.Logger
	cl         *kgo.Client
	marks      envelope.Watermarks
	lastSeq    uint64 // last JetStream sequence committed to Kafka
	streamID   string // the stream lastSeq counts in (see streamIdentity)
	deadLog    rate.Sometimes
	backlogLog rate.Sometimes
	gapLog     rate.Sometimes
	feedLog    rate.Sometimes
	// delivered is the consumer sequence of the last message fetched
	// from the current consumer (0: none yet).
	delivered uint64
	enc       *Encoder
	Stats     Stats
}

// ConsumerName begins the name of the durable JetStream consumer each run
// of the bridge reads.
const ConsumerName = "kafka-bridge"

// New validates the options; Run does the work.
func New(cfg Config, o Options) *Bridge {
	if o.Decoder == nil {
		o.Decoder = envelope.NewShared(envelope.NewDecoder(envelope.DefaultMaxDecoded), 0)
	}
	return &Bridge{cfg: cfg, o: o, log: o.Log.With("component", "bridge"), marks: envelope.Watermarks{},
		deadLog: rate.Sometimes{First: 10, Interval: 10 * time.Second}, backlogLog: rate.Sometimes{Interval: 30 * time.Second},
		gapLog: rate.Sometimes{First: 3, Interval: 10 * time.Second}, feedLog: rate.Sometimes{First: 3, Interval: time.Minute}}
}

// Run loads the checkpoint and copies until ctx ends. Kafka failures are
// retried with backoff; meanwhile JetStream holds the backlog.
func (b *Bridge) Run(ctx context.Context) error {
	var backoff time.Duration
	for {
		txns := b.Stats.Transactions.Load()
		err := b.runOnce(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, errCrash) {
			return err
		}
		backoff = nextBackoff(backoff, b.Stats.Transactions.Load() > txns)
		b.log.Warn("bridge restarting after error", "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
	}
}

// nextBackoff is the wait before the next run after one that failed:
// doubling from 1 s to 30 s while runs fail without committing, and 1 s
// again after a run that committed (a new outage, days after the last,
// is retried at once, not after the last one's 30 s).
func nextBackoff(last time.Duration, committed bool) time.Duration {
	if last == 0 || committed {
		return time.Second
	}
	return min(2*last, 30*time.Second)
}

var errCrash = errors.New("bridge: crash injected after commit")

// errDeliveryGap: the consumer delivered messages that did not reach the
// bridge.
var errDeliveryGap = errors.New("bridge: deliveries missing")

func (b *Bridge) runOnce(ctx context.Context) error {
	if err := b.connect(); err != nil {
		return err
	}
	defer b.cl.Close()
	var err error
	if b.enc, err = NewEncoder(ctx, b.cfg, b.o.Kafka.TopicPrefix); err != nil {
		return err
	}
	if err := b.loadCheckpoint(ctx); err != nil {
		return err
	}
	if err := b.checkStream(ctx); err != nil {
		return err
	}
	b.Stats.Committed.Store(b.lastSeq)
	b.log.Info("bridge running", "checkpoint_seq", b.lastSeq, "stream", b.streamID, "devices", len(b.marks))
	for {
		err := b.follow(ctx)
		if !errors.Is(err, errDeliveryGap) {
			return err
		}
		b.Stats.DeliveryGaps.Add(1)
		b.gapLog.Do(func() {
			b.log.Warn("bridge: messages lost between JetStream and the bridge; reading again from the checkpoint", "err", err, "checkpoint_seq", b.lastSeq)
		})
	}
}

// follow reads the stream from the checkpoint and transfers it until ctx
// ends or an error, errDeliveryGap included.
func (b *Bridge) follow(ctx context.Context) error {
	// One batch is fetched and decoded while the one before it is
	// produced and committed: a commit waits on Kafka (the flush and
	// EndTxn round trips), and the next batch needs no bridge state
	// until it is converted. At most two batches are held. A failed
	// fetch travels to the transfer loop like a batch, so it neither
	// cancels the commit in hand nor replaces its outcome.
	fetchCtx, stopFetching := context.WithCancel(ctx)
	defer stopFetching()
	var g errgroup.Group
	next := make(chan *fetched)
	g.Go(func() error {
		defer close(next)
		r := &reader{b: b, pos: b.lastSeq}
		defer r.close()
		for fetchCtx.Err() == nil {
			f, err := r.next(fetchCtx)
			if err != nil {
				f = &fetched{err: err}
			}
			if f == nil {
				continue
			}
			select {
			case next <- f:
			case <-fetchCtx.Done():
				return nil
			}
			if err != nil {
				return nil
			}
		}
		return nil
	})
	g.Go(func() error {
		defer stopFetching()
		for f := range next {
			if f.err != nil {
				return f.err
			}
			if err := b.transfer(ctx, f); err != nil {
				return err
			}
			b.observeBacklog(f)
		}
		return nil
	})
	return g.Wait()
}

// feedStallCheck is how long the bridge waits on a feed that brings
// nothing before it asks the stream whether the acker has stalled.
const feedStallCheck = time.Second

// reader reads the batches after pos: from the feed while pos lies on its
// chain, else through a consumer of the bridge's own, which it drops as
// soon as the feed holds what follows.
type reader struct {
	b    *Bridge
	pos  uint64             // the last sequence read
	cons jetstream.Consumer // nil while reading the feed
	idle time.Duration      // how long the feed has brought nothing
	// behind is the stream's last sequence when it held more than the
	// feed had brought for feedStallCheck (0: not seen).
	behind uint64
}

func (r *reader) next(ctx context.Context) (*fetched, error) {
	b, feed := r.b, r.b.o.Feed
	if r.cons == nil && feed != nil {
		f, err := r.fromFeed(ctx)
		if f != nil || err != nil || r.cons == nil {
			return f, err
		}
	}
	if r.cons == nil {
		cons, err := b.openConsumer(ctx, r.pos)
		if err != nil {
			return nil, err
		}
		r.cons, b.delivered = cons, 0
	}
	f, err := b.fetch(r.cons)
	if f == nil || err != nil {
		return f, err
	}
	b.Stats.FromStream.Add(int64(len(f.items)))
	for _, it := range f.items {
		r.pos = max(r.pos, it.Seq)
	}
	if feed != nil && feed.Covers(r.pos) {
		// Caught up: the feed holds the rest. (The batch's ack, after its
		// commit, then finds no consumer: nothing can redeliver it.)
		r.close()
	}
	return f, nil
}

// fromFeed takes the next batch from the feed (nil: none yet). When the
// feed does not hold what follows pos, or the stream holds more than the
// feed has brought for a while, it opens a consumer from pos instead.
func (r *reader) fromFeed(ctx context.Context) (*fetched, error) {
	b, feed := r.b, r.b.o.Feed
	items, ok := feed.Take(ctx, r.pos, b.cfg.BatchMessages, b.cfg.Linger)
	if ok && len(items) > 0 {
		r.idle, r.behind = 0, 0
		r.pos = items[len(items)-1].Seq
		b.Stats.FromFeed.Add(int64(len(items)))
		f := &fetched{items: items}
		b.decodeBatch(f)
		return f, nil
	}
	if ctx.Err() != nil {
		return nil, nil
	}
	if ok && r.behind == 0 {
		if r.idle += b.cfg.Linger; r.idle < feedStallCheck {
			return nil, nil
		}
		// Nothing for a while: an idle fleet, or an acker that stopped
		// reading. Only the stream knows which.
		r.idle = 0
		info, err := b.o.Stream.Info(ctx)
		if err != nil {
			// Asked again at the next check; meanwhile the feed serves.
			b.log.Debug("bridge: stream info", "err", err)
			return nil, nil
		}
		if info.State.LastSeq > r.pos && feed.Tail() <= r.pos {
			// The stream holds more. The acker gets one more linger to
			// receive it: it may have been stored just now.
			r.behind = info.State.LastSeq
		}
		return nil, nil
	}
	reason := "the feed does not hold what follows the bridge (further behind than bridge.feed_bytes, or the acker restarted)"
	if ok {
		reason = "the stream holds more than the acker has received for a second"
	}
	b.feedLog.Do(func() {
		b.log.Info("bridge: reading the stream through a consumer of its own", "after_seq", r.pos, "reason", reason)
	})
	r.behind = 0
	b.Stats.Fallbacks.Add(1)
	cons, err := b.openConsumer(ctx, r.pos)
	if err != nil {
		return nil, err
	}
	r.cons, b.delivered = cons, 0
	return nil, nil
}

// close deletes the reader's consumer, if it has one.
func (r *reader) close() {
	if r.cons == nil {
		return
	}
	name := r.cons.CachedInfo().Name
	r.cons = nil
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.b.o.Stream.DeleteConsumer(ctx, name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		// It goes by itself once inactive.
		r.b.log.Debug("bridge: delete consumer", "consumer", name, "err", err)
	}
}

// openConsumer replaces every consumer an earlier run left with a new
// one, named for this run, that starts after the checkpoint. The
// checkpoint, not a consumer's ack state, says where to resume: after a
// failed transaction the consumer has delivered (and AckAll may since have
// covered) messages that never reached Kafka. The name is this run's
// alone: a bridge that lost its lease while frozen and fetches once more
// before it finds itself fenced must find its consumer gone, not pull
// from its successor's, where the messages it took would wait out AckWait
// while the successor's AckAll of a later message covered them.
func (b *Bridge) openConsumer(ctx context.Context, after uint64) (jetstream.Consumer, error) {
	names := b.o.Stream.ConsumerNames(ctx)
	var old []string
	for n := range names.Name() {
		if n == ConsumerName || strings.HasPrefix(n, ConsumerName+"-") {
			old = append(old, n)
		}
	}
	if err := names.Err(); err != nil {
		return nil, fmt.Errorf("bridge: list consumers: %w", err)
	}
	for _, n := range old {
		if err := b.o.Stream.DeleteConsumer(ctx, n); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return nil, fmt.Errorf("bridge: reset consumer %s: %w", n, err)
		}
	}
	cc := jetstream.ConsumerConfig{
		Durable:       ConsumerName + "-" + strconv.FormatInt(time.Now().UnixNano(), 36),
		AckPolicy:     jetstream.AckAllPolicy,
		AckWait:       2 * time.Minute,
		MaxAckPending: -1,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		// A crashed hub's consumer goes away by itself.
		InactiveThreshold: 10 * time.Minute,
	}
	if after > 0 {
		cc.DeliverPolicy, cc.OptStartSeq = jetstream.DeliverByStartSequencePolicy, after+1
	}
	cons, err := b.o.Stream.CreateConsumer(ctx, cc)
	if err != nil {
		return nil, fmt.Errorf("bridge: consumer: %w", err)
	}
	return cons, nil
}

// fetched is one batch read from JetStream, decoding in the background.
type fetched struct {
	err   error // the fetch failed: no batch
	items []Stored
	// top is the delivery of the highest sequence, whose ack (AckAll)
	// acks the batch; nil for a batch from the feed.
	top   jetstream.Msg
	dec   []decoded
	ready []chan struct{}
}

// ack acks the batch to its consumer, if it came from one.
func (f *fetched) ack() error {
	if f.top == nil {
		return nil
	}
	return f.top.Ack()
}

// decodeBatch starts decoding f. Committed trails lastSeq by at most the
// batch in flight: a message it calls stale is stale, and transfer checks
// again with lastSeq.
func (b *Bridge) decodeBatch(f *fetched) {
	committed := b.Stats.Committed.Load()
	f.dec, f.ready = decodeAll(b.o.Decoder, f.items, func(i int) bool { return f.items[i].Seq <= committed })
}

// fetch reads the next batch of at most bridge.batch_messages and starts
// decoding it; nil when none came within the linger. (A fetch bounded by
// bytes too, FetchMaxBytes, answered "batch completed" with no messages
// after a lease failover in TestHubKill9InCluster, and the bridge never
// resumed.)
func (b *Bridge) fetch(cons jetstream.Consumer) (*fetched, error) {
	batch, err := cons.Fetch(b.cfg.BatchMessages, jetstream.FetchMaxWait(b.cfg.Linger))
	if err != nil {
		return nil, fmt.Errorf("bridge: fetch: %w", err)
	}
	var msgs []jetstream.Msg
	for m := range batch.Messages() {
		msgs = append(msgs, m)
	}
	if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, context.DeadlineExceeded) && len(msgs) == 0 {
		return nil, fmt.Errorf("bridge: fetch: %w", err)
	}
	if len(msgs) == 0 {
		return nil, nil
	}
	mds := make([]*jetstream.MsgMetadata, len(msgs))
	for i, m := range msgs {
		md, err := m.Metadata()
		if err != nil {
			return nil, fmt.Errorf("bridge: metadata: %w", err)
		}
		// Every delivery, redeliveries included, takes the consumer's
		// next sequence. One that skips means JetStream sent messages
		// that never arrived (the server cut a slow connection, or a
		// pull ended before its messages came); acking past them (AckAll)
		// would lose them. The batch is dropped and the stream read again
		// from the checkpoint.
		if md.Sequence.Consumer != b.delivered+1 {
			return nil, fmt.Errorf("%w: consumer delivery %d came after %d (stream seq %d)", errDeliveryGap, md.Sequence.Consumer, b.delivered, md.Sequence.Stream)
		}
		b.delivered = md.Sequence.Consumer
		mds[i] = md
	}
	f := fetchedOf(msgs, mds)
	b.decodeBatch(f)
	return f, nil
}

// fetchedOf is the batch of msgs, delivered with mds.
func fetchedOf(msgs []jetstream.Msg, mds []*jetstream.MsgMetadata) *fetched {
	f := &fetched{items: make([]Stored, len(msgs))}
	top := 0
	for i, m := range msgs {
		f.items[i] = storedOf(m, mds[i])
		// A redelivery (after AckWait) can come after newer messages in
		// a batch: the highest seq, not the last message, is what acks.
		if f.top == nil || f.items[i].Seq > f.items[top].Seq {
			f.top, top = m, i
		}
	}
	return f
}

// observeBacklog records how far behind JetStream the bridge is, and says
// so in the log every 30 s while it is behind.
func (b *Bridge) observeBacklog(f *fetched) {
	last := f.items[len(f.items)-1]
	b.Stats.Backlog.Store(last.Pending)
	var age time.Duration
	if last.Pending > 0 {
		age = time.Since(last.Time)
		b.backlogLog.Do(func() {
			b.log.Warn("bridge behind", "backlog_messages", last.Pending, "age", age.Round(time.Millisecond))
		})
	}
	b.Stats.BacklogAge.Store(int64(age))
}

func (b *Bridge) connect() error {
	opts := append(append([]kgo.Opt{}, b.o.ClientOpts...),
		kgo.TransactionalID(b.o.TransactionalID),
		kgo.TransactionTimeout(60*time.Second),
		kgo.RecordDeliveryTimeout(30*time.Second),
		kgo.ProducerLinger(0), // a transaction is already a batch
		kgo.MaxBufferedRecords(1<<20),
		kgo.ProducerBatchMaxBytes(1<<20),
	)
	switch b.cfg.Compression {
	case "zstd":
		opts = append(opts, kgo.ProducerBatchCompression(kgo.ZstdCompression()))
	case "lz4":
		opts = append(opts, kgo.ProducerBatchCompression(kgo.Lz4Compression()))
	default:
		opts = append(opts, kgo.ProducerBatchCompression(kgo.NoCompression()))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("bridge: kafka client: %w", err)
	}
	b.cl = cl
	return nil
}

// undo remembers marks a failed transaction must restore, by device,
// epoch and stream.
type undo map[[3]string]uint64

// tally counts one batch; it reaches Stats only if the batch commits, so
// counters never include records a retry writes again.
type tally struct {
	records, duplicates, gaps, dead int64
	topics                          topicCounts
}

// topicCounts are one batch's records by topic: a batch touches a few
// topics, so a slice searched in order costs less than a map.
type topicCounts []topicCount

type topicCount struct {
	topic string
	n     int64
}

func (tc *topicCounts) add(topic string, n int64) {
	for i := range *tc {
		if (*tc)[i].topic == topic {
			(*tc)[i].n += n
			return
		}
	}
	*tc = append(*tc, topicCount{topic, n})
}

func (b *Bridge) count(t tally) {
	b.Stats.Records.Add(t.records)
	b.Stats.Duplicates.Add(t.duplicates)
	b.Stats.Gaps.Add(t.gaps)
	b.Stats.DeadLetters.Add(t.dead)
	if len(t.topics) == 0 {
		return
	}
	pt := &b.Stats.perTopic
	pt.mu.Lock()
	defer pt.mu.Unlock()
	if pt.m == nil {
		pt.m = map[string]int64{}
	}
	for _, c := range t.topics {
		pt.m[c.topic] += c.n
	}
}

func (b *Bridge) transfer(ctx context.Context, f *fetched) error {
	var t tally
	saved := undo{}
	touched := map[string]bool{}
	// A redelivery (after AckWait) can come after newer messages in a
	// batch: the highest seq, not the last message, is what commits.
	var last uint64
	for _, m := range f.items {
		last = max(last, m.Seq)
	}
	if last <= b.lastSeq {
		// Committed before a crash, redelivered since.
		return f.ack()
	}
	// Records are produced as each message is converted, so Kafka is
	// already writing while the rest of the batch is decoded.
	tx, err := b.begin(ctx)
	if err != nil {
		return err
	}
	var recs []*kgo.Record
	for i, m := range f.items {
		<-f.ready[i]
		if m.Seq <= b.lastSeq {
			continue
		}
		d := f.dec[i]
		if d.Envelope == nil && d.Err == nil && d.topErr == nil {
			// The fetcher took it for stale, with an older checkpoint.
			d = decode(b.o.Decoder, m.Seq, m.Subject, m.Data)
		}
		recs = b.convert(recs[:0], m.Subject, m.Data, d, m.Seq, saved, touched, &t)
		tx.produce(recs...)
	}
	tx.produce(b.checkpoint(last, touched)...)
	if err := tx.finish(); err != nil {
		for k, v := range saved {
			b.marks.Set(k[0], k[1], k[2], v)
		}
		b.Stats.Aborts.Add(1)
		return err
	}
	b.lastSeq = last
	b.Stats.Committed.Store(last)
	b.Stats.Transactions.Add(1)
	b.count(t)
	if b.o.AfterCommit != nil {
		if err := b.o.AfterCommit(); err != nil {
			return errCrash
		}
	}
	// AckAll: the last message acks the whole batch.
	if err := f.ack(); err != nil {
		// Harmless: redelivered messages sit at or below lastSeq.
		b.log.Warn("bridge: jetstream ack", "err", err)
	}
	return nil
}

// decoded is one stored message, parsed: the part of converting it that
// needs no bridge state, so messages of a batch decode in parallel.
type decoded struct {
	p      topics.Parsed
	topErr error
	envelope.Decoded
}

// BridgeReader is the bridge's reader number in the decodings it shares
// with the acker.
const BridgeReader = 1

func decode(dec *envelope.Shared, seq uint64, subject string, data []byte) decoded {
	var d decoded
	if d.p, d.topErr = topics.Parse(strings.ReplaceAll(subject, ".", "/")); d.topErr == nil {
		d.Decoded = dec.Read(BridgeReader, seq, data)
	}
	return d
}

// decodeAll decodes msgs on every core in the background; ready[i] closes
// when out[i] is set.
func decodeAll(dec *envelope.Shared, msgs []Stored, skip func(i int) bool) (out []decoded, ready []chan struct{}) {
	out, ready = make([]decoded, len(msgs)), make([]chan struct{}, len(msgs))
	for i := range ready {
		ready[i] = make(chan struct{})
	}
	workers := min(runtime.GOMAXPROCS(0), len(msgs))
	for w := 0; w < workers; w++ {
		go func() {
			for i := w; i < len(msgs); i += workers {
				if !skip(i) {
					out[i] = decode(dec, msgs[i].Seq, msgs[i].Subject, msgs[i].Data)
				}
				close(ready[i])
			}
		}()
	}
	return out, ready
}

// convert turns one stored, decoded MQTT message into Kafka records.
func (b *Bridge) convert(recs []*kgo.Record, subject string, data []byte, d decoded, sseq uint64, saved undo, touched map[string]bool, t *tally) []*kgo.Record {
	dead := func(device, reason string) []*kgo.Record {
		t.dead++
		t.topics.add(deadTopic, 1)
		return append(recs, b.deadLetter(subject, device, data, sseq, reason))
	}
	if d.topErr != nil {
		return dead(subjectDevice(subject), d.topErr.Error())
	}
	p, e, err := d.p, d.Envelope, d.Err
	switch {
	case err != nil:
		b.acceptBadRecords(d, saved, touched, t)
		return dead(p.Device, err.Error())
	case e.Device != p.Device:
		return dead(p.Device, fmt.Sprintf("envelope names device %q, topic names %q", e.Device, p.Device))
	case e.Stream != p.Stream:
		return dead(p.Device, fmt.Sprintf("envelope names stream %q, topic names %q", e.Stream, p.Stream))
	}
	k := [3]string{e.Device, e.Epoch, e.Stream}
	if _, ok := saved[k]; !ok {
		saved[k] = b.marks.Get(e.Device, e.Epoch, e.Stream)
	}
	fresh, ok := b.marks.Accept(e)
	if !ok {
		t.gaps++
		return recs
	}
	t.duplicates += int64(len(e.Records) - len(fresh))
	if len(fresh) == 0 {
		return recs
	}
	touched[e.Device] = true
	name := TopicFor(e.Stream)
	topic := b.o.Kafka.TopicPrefix + name
	src := NewSource(e.Device, e.Epoch, e.Stream)
	n := len(recs)
	var refused []*kgo.Record // refused by the encoder (an Avro schema)
	recs = b.enc.Records(recs, topic, src, fresh, func(r envelope.Record, err error) {
		refused = append(refused, b.deadLetter(subject, e.Device, r.Data, sseq, err.Error()))
	})
	written := int64(len(recs) - n)
	t.dead += int64(len(refused))
	if len(refused) > 0 {
		t.topics.add(deadTopic, int64(len(refused)))
	}
	recs = append(recs, refused...)
	t.records += written
	if written > 0 {
		t.topics.add(name, written)
	}
	return recs
}

// acceptBadRecords handles an envelope whose header is sound but whose
// records are not (a time or data that does not parse). The acker acks it
// on its header, so the device deletes those records: the bridge must move
// its marks past them too, or the device's next batch would look like a
// gap and never be written. The whole payload goes to the dead-letter
// topic, so nothing is lost.
func (b *Bridge) acceptBadRecords(d decoded, saved undo, touched map[string]bool, t *tally) {
	h, p := d.Header, d.p
	if d.HeaderErr != nil || h.Device != p.Device || h.Stream != p.Stream {
		return // the acker refused it too
	}
	k := [3]string{h.Device, h.Epoch, h.Stream}
	if _, ok := saved[k]; !ok {
		saved[k] = b.marks.Get(h.Device, h.Epoch, h.Stream)
	}
	if _, ok := b.marks.AcceptHeader(h); !ok {
		t.gaps++
		return
	}
	touched[h.Device] = true
}

// subjectDevice is the device a stored subject names, even when the rest
// of it does not parse: the broker lets a device publish only under its
// own id, so the id is the authenticated device's. Empty if it is not one.
func subjectDevice(subject string) string {
	rest, ok := strings.CutPrefix(subject, topics.Subject(topics.Root)+".")
	if !ok {
		return ""
	}
	d, _, _ := strings.Cut(rest, ".")
	if topics.ValidDevice(d) != nil {
		return ""
	}
	return d
}

// DeadLetter is the value of an outpost.deadletter record the hub writes.
type DeadLetter struct {
	Subject     string    `json:"subject"`
	Device      string    `json:"device,omitempty"`
	Reason      string    `json:"reason"`
	StreamSeq   uint64    `json:"stream_seq"`
	PayloadB64  string    `json:"payload_b64"`
	PayloadSize int       `json:"payload_size"`
	Time        time.Time `json:"time"`
}

// deadTopic is the dead-letter topic without the prefix.
const deadTopic = "deadletter"

// maxDeadPayload bounds what a dead letter carries of the bad payload.
const maxDeadPayload = 64 << 10

func (b *Bridge) deadLetter(subject, device string, data []byte, sseq uint64, reason string) *kgo.Record {
	// A device spewing garbage must not flood the log: every dead letter
	// is counted and kept in Kafka, only some are logged.
	b.deadLog.Do(func() {
		b.log.Warn("dead letter", "subject", subject, "reason", reason, "bytes", len(data), "total_before", b.Stats.DeadLetters.Load())
	})
	keep := data
	if len(keep) > maxDeadPayload {
		keep = keep[:maxDeadPayload]
	}
	now := time.Now().UTC()
	v, _ := json.Marshal(DeadLetter{Subject: subject, Device: device, Reason: reason, StreamSeq: sseq,
		PayloadB64: base64.StdEncoding.EncodeToString(keep), PayloadSize: len(data), Time: now})
	id := "hub:" + strconv.FormatUint(sseq, 10)
	return &kgo.Record{
		Topic: b.o.Kafka.TopicPrefix + deadTopic,
		Key:   []byte(device),
		Value: v,
		Headers: []kgo.RecordHeader{
			{Key: "ce_specversion", Value: []byte("1.0")},
			{Key: "ce_id", Value: []byte(id)},
			{Key: "ce_source", Value: []byte("/outpost/hub")},
			{Key: "ce_type", Value: []byte("dev.outpost.deadletter.v1")},
			{Key: "ce_time", Value: []byte(now.Format(time.RFC3339Nano))},
			{Key: "content-type", Value: []byte("application/json")},
		},
	}
}

// Checkpoint keys in the compacted topic.
const (
	keySeq      = "jetstream_seq"
	keyDevicePf = "marks/"
	keyLoad     = "load"
)

// position is the value of the checkpoint's keySeq record: the last
// sequence committed, in which stream. Hubs before stream identities wrote
// the bare number.
type position struct {
	Stream string `json:"stream"`
	Seq    uint64 `json:"seq"`
}

func (b *Bridge) checkpoint(last uint64, touched map[string]bool) []*kgo.Record {
	topic := b.o.Kafka.TopicPrefix + kafka.CheckpointTopic
	pos, _ := json.Marshal(position{Stream: b.streamID, Seq: last}) // cannot fail
	out := []*kgo.Record{{Topic: topic, Key: []byte(keySeq), Value: pos}}
	for d := range touched {
		v, _ := b.marks.MarshalDevice(d) // maps of strings and ints: cannot fail
		out = append(out, &kgo.Record{Topic: topic, Key: []byte(keyDevicePf + d), Value: v})
	}
	return out
}

// txn is one open Kafka transaction.
type txn struct {
	ctx    context.Context
	cl     *kgo.Client
	failed atomic.Value // the first produce error
}

func (b *Bridge) begin(ctx context.Context) (*txn, error) {
	if err := b.cl.BeginTransaction(); err != nil {
		return nil, fmt.Errorf("bridge: begin transaction: %w", err)
	}
	return &txn{ctx: ctx, cl: b.cl}, nil
}

func (t *txn) produce(recs ...*kgo.Record) {
	for _, r := range recs {
		t.cl.Produce(t.ctx, r, func(_ *kgo.Record, err error) {
			if err != nil {
				t.failed.CompareAndSwap(nil, err)
			}
		})
	}
}

// finish waits for every record and commits, or aborts if any failed.
func (t *txn) finish() error {
	if err := t.cl.Flush(t.ctx); err != nil {
		t.failed.CompareAndSwap(nil, err)
	}
	// franz-go may report a successful commit after every produce failed:
	// the per-record results decide.
	if err, _ := t.failed.Load().(error); err != nil {
		abortCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = t.cl.AbortBufferedRecords(abortCtx)
		_ = t.cl.EndTransaction(abortCtx, kgo.TryAbort)
		return fmt.Errorf("bridge: produce: %w", err)
	}
	if err := t.cl.EndTransaction(t.ctx, kgo.TryCommit); err != nil {
		return fmt.Errorf("bridge: commit: %w", err)
	}
	return nil
}

// commit produces recs in one transaction, checking every result.
func (b *Bridge) commit(ctx context.Context, recs []*kgo.Record) error {
	tx, err := b.begin(ctx)
	if err != nil {
		return err
	}
	tx.produce(recs...)
	return tx.finish()
}

// loadCheckpoint reads the compacted checkpoint topic to its end. It first
// commits a sentinel in its own transaction: that initialises this
// producer, which aborts any transaction a crashed predecessor left open,
// and gives the reader an exact record to stop at under read_committed.
func (b *Bridge) loadCheckpoint(ctx context.Context) error {
	topic := b.o.Kafka.TopicPrefix + kafka.CheckpointTopic
	nonce := strconv.FormatInt(time.Now().UnixNano(), 36)
	if err := b.commit(ctx, []*kgo.Record{{Topic: topic, Key: []byte(keyLoad), Value: []byte(nonce)}}); err != nil {
		return fmt.Errorf("bridge: checkpoint sentinel: %w", err)
	}
	rd, err := kgo.NewClient(append(append([]kgo.Opt{}, b.o.ClientOpts...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().AtStart()}}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()))...)
	if err != nil {
		return fmt.Errorf("bridge: checkpoint reader: %w", err)
	}
	defer rd.Close()
	b.marks, b.lastSeq, b.streamID = envelope.Watermarks{}, 0, ""
	for {
		fs := rd.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return err
		}
		var ferr error
		fs.EachError(func(_ string, _ int32, err error) { ferr = err })
		if ferr != nil {
			return fmt.Errorf("bridge: read checkpoint: %w", ferr)
		}
		done := false
		fs.EachRecord(func(r *kgo.Record) {
			if string(r.Key) == keyLoad && string(r.Value) == nonce {
				done = true
			}
			if !done {
				b.applyCheckpoint(r)
			}
		})
		if done {
			return nil
		}
	}
}

func (b *Bridge) applyCheckpoint(r *kgo.Record) {
	key := string(r.Key)
	switch {
	case key == keySeq:
		var pos position
		if err := json.Unmarshal(r.Value, &pos); err == nil && pos.Stream != "" {
			b.lastSeq, b.streamID = pos.Seq, pos.Stream
		} else if n, err := strconv.ParseUint(string(r.Value), 10, 64); err == nil {
			b.lastSeq, b.streamID = n, "" // before identities: checked against the stream's state
		}
	case strings.HasPrefix(key, keyDevicePf):
		if err := b.marks.UnmarshalDevice(strings.TrimPrefix(key, keyDevicePf), r.Value); err != nil {
			b.log.Warn("bridge: unreadable marks in the checkpoint; that device's resends may be written again", "key", key, "err", err)
		}
	}
}

// streamIdentity names one incarnation of a stream: a stream deleted and
// made again (a hub whose storage was rebuilt) has the same name but
// another creation time, and its sequences start again at 1.
func streamIdentity(info *jetstream.StreamInfo) string {
	return info.Config.Name + "@" + info.Created.UTC().Format(time.RFC3339Nano)
}

// checkStream makes sure the checkpoint's sequence counts in this stream.
// If it does not (the hub's storage was rebuilt on an existing Kafka), the
// stream is read from its beginning: the marks still drop what Kafka has.
// Skipping up to the old sequence would ack messages never delivered.
func (b *Bridge) checkStream(ctx context.Context) error {
	info, err := b.o.Stream.Info(ctx)
	if err != nil {
		return fmt.Errorf("bridge: stream info: %w", err)
	}
	id := streamIdentity(info)
	switch {
	case b.streamID == id && b.lastSeq > info.State.LastSeq:
		// The same stream, shorter than what Kafka has: its tail is gone
		// (a store restored from a backup, or writes a power loss took
		// before they were synced). New messages take those sequences
		// again; skipping them as committed would lose them. Resume at the
		// stream's end, deduplicated by (device, epoch, seq).
		b.log.Warn("bridge: the stream ends before the checkpoint (restored or truncated store); resuming at its end, deduplicated by (device, epoch, seq)",
			"stream", id, "checkpoint_seq", b.lastSeq, "stream_last_seq", info.State.LastSeq)
		b.lastSeq = info.State.LastSeq
	case b.streamID == id:
	case b.lastSeq == 0:
	case b.streamID == "" && b.lastSeq <= info.State.LastSeq:
		// A checkpoint from before identities, consistent with this
		// stream: adopt it; the next commit names the stream.
		b.log.Info("bridge: checkpoint without a stream identity taken for this stream", "stream", id, "checkpoint_seq", b.lastSeq)
	default:
		b.log.Warn("bridge: the checkpoint belongs to another stream (hub storage rebuilt?); reading this one from its beginning, deduplicated by (device, epoch, seq)",
			"checkpoint_stream", b.streamID, "checkpoint_seq", b.lastSeq, "stream", id, "stream_last_seq", info.State.LastSeq)
		b.lastSeq = 0
	}
	b.streamID = id
	return nil
}
