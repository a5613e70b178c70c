// Package journal keeps append-only histories in a JetStream stream, one
// subject per key (a device's timeline, a model's training history):
// replicated like the hub's other stores, bounded per key and by age, and
// read back in order. Every hub of a cluster may append the same entry:
// its message id (a hash of the entry) makes JetStream keep one.
package journal

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Config names a journal's stream and bounds it.
type Config struct {
	Stream   string // e.g. OUTPOST_TIMELINE
	Prefix   string // subjects are Prefix + key, e.g. "outpost_hub.timeline."
	Replicas int
	MaxAge   time.Duration // entries older than this go
	PerKey   int64         // at most this many entries a key; the oldest go first
}

// Journal is one opened stream.
type Journal struct {
	cfg    Config
	js     jetstream.JetStream
	stream jetstream.Stream
}

// Open creates or opens the stream, applying the bounds to a stream that
// already exists.
func Open(ctx context.Context, js jetstream.JetStream, cfg Config) (*Journal, error) {
	s, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: cfg.Stream, Subjects: []string{cfg.Prefix + "*"}, Storage: jetstream.FileStorage,
		Replicas: cfg.Replicas, MaxAge: cfg.MaxAge, MaxMsgsPerSubject: cfg.PerKey, Discard: jetstream.DiscardOld,
		Duplicates: min(2*time.Minute, cfg.MaxAge),
	})
	if err != nil {
		return nil, fmt.Errorf("journal %s: %w", cfg.Stream, err)
	}
	return &Journal{cfg: cfg, js: js, stream: s}, nil
}

// Append stores v, JSON-encoded, as key's next entry.
func (j *Journal) Append(ctx context.Context, key string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("journal %s: %w", j.cfg.Stream, err)
	}
	// The id is the entry's hash under its subject: the same entry of two
	// keys is two entries.
	subj := j.subject(key)
	h := sha256.New()
	h.Write([]byte(subj))
	h.Write([]byte{0})
	h.Write(data)
	sum := h.Sum(nil)
	msg := &nats.Msg{Subject: subj, Data: data, Header: nats.Header{}}
	msg.Header.Set(jetstream.MsgIDHeader, hex.EncodeToString(sum[:16]))
	if _, err := j.js.PublishMsg(ctx, msg); err != nil {
		return fmt.Errorf("journal %s: %w", j.cfg.Stream, err)
	}
	return nil
}

// subject is key's subject: the key itself when it is one subject token
// of letters, digits, '-' and '_' (every device id), else "=" and its
// base64url form (a model name may hold a '.', which would split it).
func (j *Journal) subject(key string) string {
	for _, r := range key {
		if !(r == '-' || r == '_' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9')) {
			return j.cfg.Prefix + "=" + base64.RawURLEncoding.EncodeToString([]byte(key))
		}
	}
	return j.cfg.Prefix + key
}

// Read returns key's entries, oldest first, each JSON-decoded with
// into T (an entry that does not decode is left out), and how many are stored.
func Read[T any](ctx context.Context, j *Journal, key string) ([]T, int, error) {
	subj := j.subject(key)
	info, err := j.stream.Info(ctx, jetstream.WithSubjectFilter(subj))
	if err != nil {
		return nil, 0, fmt.Errorf("journal %s: %w", j.cfg.Stream, err)
	}
	total := int(info.State.Subjects[subj])
	if total == 0 {
		return nil, 0, nil
	}
	cons, err := j.stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subj}, DeliverPolicy: jetstream.DeliverAllPolicy})
	if err != nil {
		return nil, 0, fmt.Errorf("journal %s: %w", j.cfg.Stream, err)
	}
	out := make([]T, 0, total)
	for read := 0; read < total; {
		batch, err := cons.Fetch(min(500, total-read), jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return out, total, fmt.Errorf("journal %s: %w", j.cfg.Stream, err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			var e T
			if json.Unmarshal(m.Data(), &e) == nil {
				out = append(out, e)
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return out, total, fmt.Errorf("journal %s: %w", j.cfg.Stream, err)
		}
		if got == 0 {
			break // aged out while we read
		}
		read += got
	}
	return out, total, nil
}

// StreamConfig is the stream's configuration as the server holds it.
func (j *Journal) StreamConfig(ctx context.Context) (jetstream.StreamConfig, error) {
	info, err := j.stream.Info(ctx)
	if err != nil {
		return jetstream.StreamConfig{}, err
	}
	return info.Config, nil
}
