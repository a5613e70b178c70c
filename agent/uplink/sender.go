package uplink

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"

	"github.com/outpost-edge/outpost/agent/outbox"
	"github.com/outpost-edge/outpost/sync/envelope"
	"github.com/outpost-edge/outpost/sync/topics"
)

// SendConfig tunes batching and resends.
type SendConfig struct {
	BatchRecords int           `yaml:"batch_records" usage:"most records in one MQTT message"`
	BatchBytes   int           `yaml:"batch_bytes" usage:"most bytes of record data in one MQTT message; keep it below the hub's broker.max_payload"`
	MaxInflight  int           `yaml:"max_inflight" usage:"most records per stream sent but not yet acknowledged by the hub"`
	AckTimeout   time.Duration `yaml:"ack_timeout" usage:"resend a stream's unacknowledged records after this long without an ack of that stream"`
	Compress     bool          `yaml:"compress" usage:"zstd-compress batches"`
}

// Publisher is what the sender needs of an MQTT client.
type Publisher interface {
	Publish(ctx context.Context, topic string, qos byte, retained bool, payload []byte) error
	Connected() bool
}

// Sender drains the outbox to the hub: per stream, in seq order, in
// batches of one epoch, with a bounded in-flight window. It deletes records
// only on the hub's application-level ack, and resends a stream's unacked
// records, in order, after a reconnect or when that stream goes without an
// ack for AckTimeout. The timer is per stream: acks of other streams do not
// hold back the resend of one the hub stopped acknowledging.
type Sender struct {
	cfg    SendConfig
	device string
	ob     *outbox.Outbox
	pub    Publisher
	log    *slog.Logger
	now    func() time.Time

	acks      chan ack
	reconnect chan struct{}

	floor    map[outbox.Key]uint64     // acked by the hub
	sent     map[string]uint64         // per stream: highest seq published since its last rewind
	sentE    map[outbox.Key]uint64     // per epoch and stream: the same, the next envelope's Prev
	progress map[string]time.Time      // per stream: last ack that moved it, or last rewind
	rewound  map[outbox.Key]rewindMark // per epoch and stream: the last rewind

	ackErrors atomic.Int64
	lastAck   atomic.Int64 // unix nanoseconds of the last ack that moved a stream; 0: none
}

// LastAck is when a hub ack last moved any stream forward; zero: none
// since the sender started. Safe from any goroutine.
func (s *Sender) LastAck() time.Time {
	if n := s.lastAck.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// AckErrors counts acks the outbox could not record (a full disk, an I/O
// error). The sender keeps running: the records stay in the outbox and a
// later, cumulative ack deletes them.
func (s *Sender) AckErrors() int64 { return s.ackErrors.Load() }

// ackFailed counts an ack the outbox could not record and logs the first
// of a run of them.
func (s *Sender) ackFailed(err error) {
	if s.ackErrors.Add(1)%100 == 1 {
		s.log.Warn("uplink: cannot record the hub's ack; keeping the records and going on", "err", err, "ack_errors", s.ackErrors.Load())
	}
}

// rewindMark is where a stream stood when it was last rewound. Batches in
// flight then reach the hub after the rewind and may be named as gaps
// too; the rewind already resends them.
type rewindMark struct {
	sent, floor uint64 // sentE and the floor then
	at          time.Time
}

// ack is one ack message: one epoch's marks by stream, and the streams
// whose latest batch the hub could not join to what it holds (by the
// batch's Prev).
type ack struct {
	epoch string
	marks map[string]uint64
	gaps  map[string]uint64
}

// NewSender builds a sender; wire OnAck and OnConnect to the MQTT client.
func NewSender(cfg SendConfig, device string, ob *outbox.Outbox, pub Publisher, log *slog.Logger) *Sender {
	return &Sender{cfg: cfg, device: device, ob: ob, pub: pub, log: log, now: time.Now,
		acks: make(chan ack, 64), reconnect: make(chan struct{}, 1)}
}

// OnAck is the handler of outpost/v1/{d}/ack. It never blocks: a full
// queue drops the ack, and the next (cumulative) one repairs it.
func (s *Sender) OnAck(_ string, payload []byte) {
	var a struct {
		Epoch string            `json:"epoch"`
		Acks  map[string]uint64 `json:"acks"`
		Gaps  map[string]uint64 `json:"gaps"`
	}
	if err := json.Unmarshal(payload, &a); err != nil {
		s.log.Warn("ignoring malformed ack", "err", err)
		return
	}
	select {
	case s.acks <- ack{epoch: a.Epoch, marks: a.Acks, gaps: a.Gaps}:
	default:
	}
}

// OnConnect makes the sender rewind to the floors: whatever was in flight
// on the old connection may be lost.
func (s *Sender) OnConnect() {
	select {
	case s.reconnect <- struct{}{}:
	default:
	}
}

// Run sends until ctx ends.
func (s *Sender) Run(ctx context.Context) error {
	floors, err := s.ob.Floors(ctx)
	if err != nil {
		return err
	}
	s.floor, s.sent, s.sentE, s.progress = floors, map[string]uint64{}, map[outbox.Key]uint64{}, map[string]time.Time{}
	s.rewound = map[outbox.Key]rewindMark{}
	s.rewind()
	tick := time.NewTicker(max(s.cfg.AckTimeout/4, 10*time.Millisecond))
	defer tick.Stop()
	for {
		progressed := false
		if s.pub.Connected() {
			if progressed, err = s.sendSome(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("uplink send", "err", err)
				s.rewind()
			}
		}
		if progressed {
			// Drain acks without blocking, then keep sending.
			s.drainAcks(ctx)
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case a := <-s.acks:
			if err := s.applyAck(ctx, a); err != nil {
				s.ackFailed(err)
			}
		case <-s.reconnect:
			s.rewind()
		case <-s.ob.Notify():
		case <-tick.C:
			s.resendStalled()
		}
	}
}

// resendStalled rewinds every stream that has records in flight and has
// had no ack for AckTimeout.
func (s *Sender) resendStalled() {
	now := s.now()
	for stream := range s.sent {
		if s.inflight(stream) > 0 && now.Sub(s.progress[stream]) > s.cfg.AckTimeout {
			s.log.Info("no ack within timeout; resending the stream from its floor", "stream", stream, "timeout", s.cfg.AckTimeout)
			s.rewindStream(stream)
		}
	}
}

func (s *Sender) drainAcks(ctx context.Context) {
	for {
		select {
		case a := <-s.acks:
			if err := s.applyAck(ctx, a); err != nil {
				s.ackFailed(err)
			}
		default:
			return
		}
	}
}

func (s *Sender) applyAck(ctx context.Context, a ack) error {
	for stream, seq := range a.marks {
		k := outbox.Key{Epoch: a.epoch, Stream: stream}
		if seq <= s.floor[k] {
			continue
		}
		if err := s.ob.Ack(ctx, a.epoch, stream, seq); err != nil {
			return fmt.Errorf("uplink: %w", err)
		}
		s.floor[k] = seq
		now := s.now()
		s.progress[stream] = now
		s.lastAck.Store(now.UnixNano())
	}
	for stream, prev := range a.gaps {
		k := outbox.Key{Epoch: a.epoch, Stream: stream}
		if prev <= s.floor[k] || s.sentE[k] <= s.floor[k] {
			continue // acked since, or nothing resent yet
		}
		if !s.gapIsNew(k, prev) {
			continue
		}
		s.log.Info("the hub is missing records it was sent; resending the stream from its floor", "stream", stream, "floor", s.floor[k], "missing_to", prev)
		s.rewindStream(stream)
	}
	return nil
}

// gapIsNew tells a gap the hub names (its batch followed prev, and the
// hub lacks what lies between prev and the floor) from one the last
// rewind already resends: the batches then in flight arrive after it and
// are named as gaps too. A gap is new when its batch began past what was
// in flight then; when the hub has joined resent batches since (the floor
// moved: over one connection every batch sent before the rewind came
// before them); or a fifth of the ack timeout after the rewind (a resent
// batch lost in its turn).
func (s *Sender) gapIsNew(k outbox.Key, prev uint64) bool {
	r, ok := s.rewound[k]
	return !ok || prev >= r.sent || s.floor[k] > r.floor || s.now().Sub(r.at) >= s.cfg.AckTimeout/5
}

// rewind makes every stream start again from its floor.
func (s *Sender) rewind() {
	now := s.now()
	for k, v := range s.sentE {
		s.rewound[k] = rewindMark{sent: v, floor: s.floor[k], at: now}
	}
	clear(s.sent)
	clear(s.sentE)
	for k := range s.progress {
		s.progress[k] = now
	}
}

// rewindStream makes one stream start again from its floor: everything
// above it is sent again, and the hub drops what it already has.
func (s *Sender) rewindStream(stream string) {
	delete(s.sent, stream)
	now := s.now()
	for k, v := range s.sentE {
		if k.Stream == stream {
			s.rewound[k] = rewindMark{sent: v, floor: s.floor[k], at: now}
			delete(s.sentE, k)
		}
	}
	s.progress[stream] = now
}

// inflight approximates the records of stream sent but not yet acked (seq
// gaps from other streams' records make it conservative).
func (s *Sender) inflight(stream string) int {
	n := 0
	for k, v := range s.sentE {
		if k.Stream == stream && v > s.floor[k] {
			n += int(v - s.floor[k])
		}
	}
	return n
}

// sendSome publishes at most one batch per stream that has room in its
// window. It reports whether anything was sent.
func (s *Sender) sendSome(ctx context.Context) (bool, error) {
	streams, err := s.ob.Streams(ctx)
	if err != nil {
		return false, err
	}
	slices.Sort(streams)
	progressed := false
	for _, stream := range streams {
		inflight := s.inflight(stream)
		room := s.cfg.MaxInflight - inflight
		if room <= 0 {
			continue
		}
		b, err := s.ob.Next(ctx, stream, s.sent[stream], min(room, s.cfg.BatchRecords))
		if err != nil {
			return progressed, err
		}
		if len(b.Records) == 0 {
			continue
		}
		recs := cutToBytes(b.Records, s.cfg.BatchBytes)
		k := outbox.Key{Epoch: b.Epoch, Stream: stream}
		e := &envelope.Envelope{V: envelope.Version, Device: s.device, Epoch: b.Epoch, Stream: stream,
			Floor: s.floor[k], Prev: max(s.floor[k], s.sentE[k]), Records: recs}
		payload, err := envelope.Encode(e, s.cfg.Compress)
		if err != nil {
			return progressed, err
		}
		if err := s.pub.Publish(ctx, topics.Up(s.device, stream), 1, false, payload); err != nil {
			return progressed, err
		}
		if inflight == 0 {
			s.progress[stream] = s.now() // the ack timeout counts from the first record in flight
		}
		s.sent[stream], s.sentE[k] = e.Last(), e.Last()
		progressed = true
	}
	return progressed, nil
}

// recordOverhead approximates a record's envelope JSON around its data.
const recordOverhead = 64

// cutToBytes keeps the longest prefix of recs within limit bytes, and at
// least one record, so a batch never outgrows the broker's payload limit.
func cutToBytes(recs []envelope.Record, limit int) []envelope.Record {
	if limit <= 0 {
		return recs
	}
	size := 0
	for i, r := range recs {
		size += len(r.Data) + recordOverhead
		if size > limit && i > 0 {
			return recs[:i]
		}
	}
	return recs
}
