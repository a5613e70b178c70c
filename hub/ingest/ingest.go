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
// carries every stream's mark and a lost ack is repaired by the next.
type Ack struct {
	Acks map[string]uint64 `json:"acks"`
}

// Stats are the acker's counters.
type Stats struct {
	Envelopes, Records, Gaps, Malformed atomic.Int64
}

// Acker reads the stream in order and acks to devices.
type Acker struct {
	nc    *nats.Conn
	log   *slog.Logger
	marks envelope.Watermarks
	Stats Stats
}

// NewAcker builds an acker publishing on nc.
func NewAcker(nc *nats.Conn, log *slog.Logger) *Acker {
	return &Acker{nc: nc, log: log, marks: envelope.Watermarks{}}
}

// Run consumes from the stream's end until ctx ends. It starts at the end
// because marks rebuild from the floors devices send; replaying history
// would only re-ack what devices already deleted.
func (a *Acker) Run(ctx context.Context, s jetstream.Stream) error {
	// Marks from an earlier run (this hub led the cluster before) may miss
	// what another hub acked since; devices' floors rebuild them.
	a.marks = envelope.Watermarks{}
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverNewPolicy})
	if err != nil {
		return fmt.Errorf("ingest: acker consumer: %w", err)
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("ingest: acker messages: %w", err)
	}
	go func() { <-ctx.Done(); it.Stop() }()
	for {
		m, err := it.Next()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return nil
			}
			a.log.Warn("acker: next", "err", err)
			continue
		}
		a.handle(m.Subject(), m.Data())
	}
}

func (a *Acker) handle(subject string, data []byte) {
	p, err := topics.Parse(strings.ReplaceAll(subject, ".", "/"))
	if err != nil || p.Kind != topics.KindUp {
		a.Stats.Malformed.Add(1)
		return
	}
	// The header is enough to ack: record times and data are the bridge's
	// to check, and it dead-letters what fails.
	e, err := envelope.DecodeHeader(data)
	if err != nil || e.Device != p.Device || e.Stream != p.Stream {
		// The bridge sends it to the dead-letter topic with the reason.
		a.Stats.Malformed.Add(1)
		return
	}
	a.Stats.Envelopes.Add(1)
	if _, ok := a.marks.AcceptHeader(e); !ok {
		a.Stats.Gaps.Add(1)
		return
	}
	a.Stats.Records.Add(int64(e.Records))
	a.send(e.Device)
}

func (a *Acker) send(device string) {
	ack := Ack{Acks: a.marks[device]}
	payload, _ := json.Marshal(ack) // map of strings to ints: cannot fail
	if err := a.nc.Publish(topics.Subject(topics.Ack(device)), payload); err != nil {
		a.log.Warn("acker: publish ack", "device", device, "err", err)
	}
}
