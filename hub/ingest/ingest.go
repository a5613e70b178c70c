// Package ingest captures what devices publish into the JetStream stream
// OUTPOST_UP and sends each device its application-level ack: per stream,
// the highest seq that the stream has stored as part of a contiguous run.
// A device deletes from its outbox only on this ack (DESIGN §3).
package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-edge/outpost/sync/envelope"
	"github.com/outpost-edge/outpost/sync/topics"
)

// StreamName is the JetStream stream that holds everything devices send.
const StreamName = "OUTPOST_UP"

// Subjects is what the stream captures: outpost/v1/+/up/+ in MQTT terms.
var Subjects = []string{"outpost.v1.*.up.*"}

// Config is the ingest section of the hub config.
type Config struct {
	MaxBytes int64         `yaml:"max_bytes" usage:"JetStream bytes held for devices' data before publishes are refused (devices keep it in their outbox meanwhile)"`
	MaxAge   time.Duration `yaml:"max_age" usage:"oldest data JetStream keeps when the bridge cannot deliver it"`
	Replicas int           `yaml:"replicas" usage:"JetStream replicas of the stream (clustered hubs)"`
	// TrimInterval is how often what Kafka (and the trainer) have is
	// removed from the stream.
	TrimInterval time.Duration `yaml:"trim_interval" usage:"how often the stream drops what the bridge has committed to Kafka and the trainer has read"`
}

// EnsureStream creates or updates OUTPOST_UP. Discard-new makes a full
// stream refuse new data instead of dropping stored data: devices, whose
// data is not acked, keep it and retry, which is the backpressure we want.
func EnsureStream(ctx context.Context, js jetstream.JetStream, cfg Config) (jetstream.Stream, error) {
	s, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:      StreamName,
		Subjects:  Subjects,
		Storage:   jetstream.FileStorage,
		Retention: jetstream.LimitsPolicy,
		Discard:   jetstream.DiscardNew,
		MaxBytes:  cfg.MaxBytes,
		MaxAge:    cfg.MaxAge,
		Replicas:  max(cfg.Replicas, 1),
	})
	if err != nil {
		return nil, fmt.Errorf("ingest: stream %s: %w", StreamName, err)
	}
	return s, nil
}

// Ack is the payload of outpost/v1/{d}/ack: level-triggered, so each one
// carries every stream's mark of one epoch, and a lost ack is repaired by
// the next.
type Ack struct {
	Epoch string            `json:"epoch,omitempty"`
	Acks  map[string]uint64 `json:"acks"`
	// Gaps names a stream whose latest batch did not join what the hub
	// holds: it follows Prev, and the hub has only up to Acks[stream].
	// What lies between was lost on its way in (dropped by a full ingest
	// queue, or by a connection that broke), so the device resends that
	// stream from its floor now rather than after its ack timeout.
	Gaps map[string]uint64 `json:"gaps,omitempty"`
}

// Stats are the acker's counters.
type Stats struct {
	Envelopes, Records, Gaps, Malformed atomic.Int64
	// Compressed counts the envelopes of Envelopes that came zstd-framed.
	Compressed atomic.Int64
	// Replayed counts the messages read at start to restore the marks.
	Replayed atomic.Int64
}

// Acker reads the stream in order and acks to devices.
type Acker struct {
	nc    *nats.Conn
	dec   *envelope.Shared
	log   *slog.Logger
	marks envelope.Watermarks
	// OnStored, when set, receives every message the acker reads, in
	// stream order, with the stream sequence of the one before it (0 for
	// the first of a run): the bridge's feed (bridge.Feed).
	OnStored func(prev uint64, m jetstream.Msg, md *jetstream.MsgMetadata)
	Stats    Stats
}

// AckerReader is the acker's reader number in the decodings it shares
// with the bridge (envelope.Shared).
const AckerReader = 0

// NewAcker builds an acker publishing on nc, reading through dec (nil:
// its own, with the package default bound), which it shares with the
// bridge so that each payload is decoded once.
func NewAcker(nc *nats.Conn, dec *envelope.Shared, log *slog.Logger) *Acker {
	if dec == nil {
		dec = envelope.NewShared(envelope.NewDecoder(envelope.DefaultMaxDecoded), 0)
	}
	return &Acker{nc: nc, dec: dec, log: log, marks: envelope.Watermarks{}}
}

// Run restores the marks from what the stream holds, acks every device
// it holds messages of, then follows the stream until ctx ends. The replay
// matters after a failover: the previous acker may have stored messages
// it never acked, and a device that sees no ack for a stream only resends
// it after its ack timeout. What the stream no longer holds (delivered to
// Kafka and trimmed) rebuilds from the floors devices send.
func (a *Acker) Run(ctx context.Context, s jetstream.Stream) error {
	// Marks from an earlier run (this hub led the cluster before) may miss
	// what another hub acked since.
	a.marks = envelope.Watermarks{}
	info, err := s.Info(ctx)
	if err != nil {
		return fmt.Errorf("ingest: acker stream info: %w", err)
	}
	replayTo := info.State.LastSeq
	if info.State.Msgs == 0 {
		replayTo = 0
	}
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy})
	if err != nil {
		return fmt.Errorf("ingest: acker consumer: %w", err)
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("ingest: acker messages: %w", err)
	}
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	replayed := map[[2]string]bool{} // (device, epoch) to ack after the replay
	finishReplay := func() {
		for k := range replayed {
			a.send(k[0], k[1])
		}
		if replayTo > 0 {
			a.log.Info("acker marks restored from the stream", "messages", a.Stats.Replayed.Load(), "acked", len(replayed), "to_seq", replayTo)
		}
		replayTo, replayed = 0, nil
	}
	if replayTo == 0 {
		finishReplay()
	}
	// An ordered consumer delivers the stream without gaps: after a
	// reset it starts again after the last message it delivered.
	var prev uint64
	for {
		m, err := it.Next()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return nil
			}
			a.log.Warn("acker: next", "err", err)
			continue
		}
		md, err := m.Metadata()
		if err != nil {
			// An ordered consumer's messages always have it.
			a.log.Warn("acker: metadata", "err", err)
			continue
		}
		// First: a bridge waiting on the feed decodes the message on
		// another core while the acker reaches it, and the acker takes
		// that decoding (envelope.Shared).
		if a.OnStored != nil {
			a.OnStored(prev, m, md)
		}
		prev = md.Sequence.Stream
		if replayTo == 0 {
			a.handle(md.Sequence.Stream, m.Subject(), m.Data(), nil)
		} else {
			a.Stats.Replayed.Add(1)
			a.handle(md.Sequence.Stream, m.Subject(), m.Data(), replayed)
			if md.Sequence.Stream >= replayTo || md.NumPending == 0 {
				finishReplay()
			}
		}
	}
}

// handle applies one stored envelope to the marks and acks it, or, during
// the replay (replayed not nil), notes whom to ack once it is done.
func (a *Acker) handle(seq uint64, subject string, data []byte, replayed map[[2]string]bool) {
	p, err := topics.Parse(strings.ReplaceAll(subject, ".", "/"))
	if err != nil || p.Kind != topics.KindUp {
		a.Stats.Malformed.Add(1)
		return
	}
	// The header is enough to ack: record times and data are the bridge's
	// to check, and it dead-letters what fails. The whole payload is
	// decoded here all the same, once, for the bridge to take, unless the
	// bridge is so far behind that it would find it dropped.
	e, err := a.dec.ReadHeader(AckerReader, seq, data)
	if err != nil || e.Device != p.Device || e.Stream != p.Stream {
		// The bridge sends it to the dead-letter topic with the reason.
		a.Stats.Malformed.Add(1)
		return
	}
	a.Stats.Envelopes.Add(1)
	if envelope.Compressed(data) {
		a.Stats.Compressed.Add(1)
	}
	if _, ok := a.marks.AcceptHeader(e); !ok {
		a.Stats.Gaps.Add(1)
		if replayed == nil {
			a.sendGap(e.Device, e.Epoch, e.Stream, e.Prev)
		}
		return
	}
	a.Stats.Records.Add(int64(e.Records))
	if replayed != nil {
		replayed[[2]string{e.Device, e.Epoch}] = true
		return
	}
	a.send(e.Device, e.Epoch)
}

func (a *Acker) send(device, epoch string) {
	a.publish(device, Ack{Epoch: epoch, Acks: a.marks.Streams(device, epoch)})
}

// sendGap acks device's marks and names stream's gap: its batch after
// prev came, the ones before it did not.
func (a *Acker) sendGap(device, epoch, stream string, prev uint64) {
	a.publish(device, Ack{Epoch: epoch, Acks: a.marks.Streams(device, epoch), Gaps: map[string]uint64{stream: prev}})
}

func (a *Acker) publish(device string, ack Ack) {
	payload, _ := json.Marshal(ack) // maps of strings to ints: cannot fail
	if err := a.nc.Publish(topics.Subject(topics.Ack(device)), payload); err != nil {
		a.log.Warn("acker: publish ack", "device", device, "err", err)
	}
}
