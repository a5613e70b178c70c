package uplink

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
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
	AckTimeout   time.Duration `yaml:"ack_timeout" usage:"resend unacknowledged records after this long without an ack"`
	Compress     bool          `yaml:"compress" usage:"zstd-compress batches"`
}

// Publisher is what the sender needs of an MQTT client.
type Publisher interface {
	Publish(ctx context.Context, topic string, qos byte, retained bool, payload []byte) error
	Connected() bool
}

// Sender drains the outbox to the hub: per stream, in seq order, in
// batches, with a bounded in-flight window. It deletes records only on the
// hub's application-level ack, and resends everything unacked, in order,
// after a reconnect or an ack timeout.
type Sender struct {
	cfg    SendConfig
	device string
	ob     *outbox.Outbox
	pub    Publisher
	log    *slog.Logger

	acks      chan map[string]uint64
	reconnect chan struct{}

	floor   map[string]uint64 // acked by the hub
	sent    map[string]uint64 // highest seq published since the last rewind
	lastAck time.Time
}

// NewSender builds a sender; wire OnAck and OnConnect to the MQTT client.
func NewSender(cfg SendConfig, device string, ob *outbox.Outbox, pub Publisher, log *slog.Logger) *Sender {
	return &Sender{cfg: cfg, device: device, ob: ob, pub: pub, log: log,
		acks: make(chan map[string]uint64, 64), reconnect: make(chan struct{}, 1)}
}

// OnAck is the handler of outpost/v1/{d}/ack. It never blocks: a full
// queue drops the ack, and the next (cumulative) one repairs it.
func (s *Sender) OnAck(_ string, payload []byte) {
	var a struct {
		Acks map[string]uint64 `json:"acks"`
	}
	if err := json.Unmarshal(payload, &a); err != nil {
		s.log.Warn("ignoring malformed ack", "err", err)
		return
	}
	select {
	case s.acks <- a.Acks:
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
	s.floor, s.sent = floors, map[string]uint64{}
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
			if err := s.drainAcks(ctx); err != nil {
				return err
			}
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case a := <-s.acks:
			if err := s.applyAck(ctx, a); err != nil {
				return err
			}
		case <-s.reconnect:
			s.rewind()
		case <-s.ob.Notify():
		case <-tick.C:
			if s.inflight() && time.Since(s.lastAck) > s.cfg.AckTimeout {
				s.log.Info("no ack within timeout; resending from the floor", "timeout", s.cfg.AckTimeout)
				s.rewind()
			}
		}
	}
}

func (s *Sender) drainAcks(ctx context.Context) error {
	for {
		select {
		case a := <-s.acks:
			if err := s.applyAck(ctx, a); err != nil {
				return err
			}
		default:
			return nil
		}
	}
}

func (s *Sender) applyAck(ctx context.Context, acks map[string]uint64) error {
	s.lastAck = time.Now()
	for stream, seq := range acks {
		if seq <= s.floor[stream] {
			continue
		}
		if err := s.ob.Ack(ctx, stream, seq); err != nil {
			return fmt.Errorf("uplink: %w", err)
		}
		s.floor[stream] = seq
		if s.sent[stream] < seq {
			s.sent[stream] = seq
		}
	}
	return nil
}

func (s *Sender) rewind() {
	for k := range s.sent {
		delete(s.sent, k)
	}
	for k, v := range s.floor {
		s.sent[k] = v
	}
	s.lastAck = time.Now()
}

func (s *Sender) inflight() bool {
	for k, v := range s.sent {
		if v > s.floor[k] {
			return true
		}
	}
	return false
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
		room := s.cfg.MaxInflight - int(s.sent[stream]-s.floor[stream])
		// seq gaps (other streams' records) make this count conservative.
		if room <= 0 {
			continue
		}
		recs, err := s.ob.Pending(ctx, stream, s.sent[stream], min(room, s.cfg.BatchRecords))
		if err != nil {
			return progressed, err
		}
		if len(recs) == 0 {
			continue
		}
		recs = cutToBytes(recs, s.cfg.BatchBytes)
		e := &envelope.Envelope{V: envelope.Version, Device: s.device, Stream: stream,
			Floor: s.floor[stream], Prev: s.sent[stream], Records: recs}
		payload, err := envelope.Encode(e, s.cfg.Compress)
		if err != nil {
			return progressed, err
		}
		if err := s.pub.Publish(ctx, topics.Up(s.device, stream), 1, false, payload); err != nil {
			return progressed, err
		}
		s.sent[stream] = e.Last()
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
