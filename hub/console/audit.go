package console

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Audit stream: every operator action, console or API, one message each.
const (
	AuditStream  = "OUTPOST_AUDIT"
	AuditSubject = "outpost_hub.audit"
)

// Entry is one operator action.
type Entry struct {
	At     time.Time `json:"at"`
	Who    string    `json:"who"`
	Role   string    `json:"role"`
	Via    string    `json:"via"`    // console or api
	Action string    `json:"action"` // e.g. "rollout pause", "POST /v1/devices"
	Target string    `json:"target,omitempty"`
	Result string    `json:"result"` // "ok", or the error / HTTP status
}

// Audit keeps the log in a JetStream stream (replicated like the hub's
// other stores, kept a year) and hands each entry to Emit, which the hub
// points at outpost.events.
type Audit struct {
	js     jetstream.JetStream
	stream jetstream.Stream
	Emit   func(context.Context, Entry)
}

// OpenAudit creates or opens the audit stream.
func OpenAudit(ctx context.Context, js jetstream.JetStream, replicas int) (*Audit, error) {
	s, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: AuditStream, Subjects: []string{AuditSubject}, Storage: jetstream.FileStorage,
		Replicas: replicas, MaxAge: 365 * 24 * time.Hour, MaxMsgs: 1_000_000, Discard: jetstream.DiscardOld,
	})
	if err != nil {
		return nil, fmt.Errorf("console: audit stream: %w", err)
	}
	return &Audit{js: js, stream: s}, nil
}

// Record stores e (durably: JetStream acks it) and emits it.
func (a *Audit) Record(ctx context.Context, e Entry) error {
	if e.At.IsZero() {
		e.At = time.Now().UTC()
	}
	data, err := json.Marshal(e)
	if err != nil {
		return err
	}
	if a.Emit != nil {
		a.Emit(ctx, e)
	}
	if _, err := a.js.Publish(ctx, AuditSubject, data); err != nil {
		return fmt.Errorf("console: audit: %w", err)
	}
	return nil
}

// Recent returns up to n entries, newest first.
func (a *Audit) Recent(ctx context.Context, n int) ([]Entry, error) {
	info, err := a.stream.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("console: audit: %w", err)
	}
	var out []Entry
	for seq := info.State.LastSeq; seq >= info.State.FirstSeq && seq > 0 && len(out) < n; seq-- {
		m, err := a.stream.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return out, fmt.Errorf("console: audit: %w", err)
		}
		var e Entry
		if json.Unmarshal(m.Data, &e) == nil {
			out = append(out, e)
		}
	}
	return out, nil
}
