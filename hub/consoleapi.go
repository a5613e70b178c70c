package hub

import (
	"context"
	"time"

	"github.com/outpost-edge/outpost/hub/api"
	"github.com/outpost-edge/outpost/hub/bridge"
	"github.com/outpost-edge/outpost/hub/console"
	"github.com/outpost-edge/outpost/hub/modelstore"
	"github.com/outpost-edge/outpost/hub/rollout"
	"github.com/outpost-edge/outpost/sync/state"
)

// consoleBackend is the hub as the fleet console sees it: the same calls
// the HTTP API makes.
type consoleBackend struct{ h *Hub }

var _ console.Backend = consoleBackend{}

func (b consoleBackend) Devices() []state.Device { return b.h.deviceViews() }

func (b consoleBackend) Rollouts(ctx context.Context) ([]*rollout.Rollout, error) {
	return b.h.rollouts.List(ctx)
}

func (b consoleBackend) Rollout(ctx context.Context, id string) (*rollout.Rollout, error) {
	if err := validPathID(id); err != nil {
		return nil, rollout.ErrNotFound
	}
	return b.h.rollouts.Get(ctx, id)
}

func (b consoleBackend) RolloutAction(ctx context.Context, id, action, who string) (*rollout.Rollout, error) {
	if err := validPathID(id); err != nil {
		return nil, rollout.ErrNotFound
	}
	return b.h.rolloutAction(ctx, id, action, who)
}

func (b consoleBackend) StartRollout(ctx context.Context, spec rollout.Spec, who string) (*rollout.Rollout, error) {
	ro, err := b.h.startRollout(ctx, spec)
	if err == nil {
		b.h.log.Info("rollout started from the console", "rollout", ro.ID, "by", who)
	}
	return ro, err
}

func (b consoleBackend) Timeline(ctx context.Context, device string, offset, n int) ([]console.TimelineEntry, int, error) {
	if err := validPathID(device); err != nil {
		return nil, 0, nil
	}
	return b.h.timeline.Page(ctx, device, offset, n)
}

func (b consoleBackend) Models(ctx context.Context) ([]modelstore.Summary, error) {
	return b.h.models.List(ctx)
}

func (b consoleBackend) ModelVersions(ctx context.Context, name string) ([]modelstore.Version, error) {
	return b.h.models.Versions(ctx, name)
}

func (b consoleBackend) Pipeline() (uint64, time.Duration) {
	st := &b.h.bridge.Stats
	return st.Backlog.Load(), time.Duration(st.BacklogAge.Load())
}

func (b consoleBackend) StreamCounters() console.StreamCounters {
	st, ss := &b.h.bridge.Stats, &b.h.streamStats
	return console.StreamCounters{
		TopicRecords: st.TopicRecords(), Transactions: st.Transactions.Load(), Aborts: st.Aborts.Load(), DeadLetters: st.DeadLetters.Load(),
		Backlog: st.Backlog.Load(), BacklogAge: time.Duration(st.BacklogAge.Load()),
		IngestBytes: ss.Bytes.Load(), IngestMessages: ss.Messages.Load(),
	}
}

// DeadLetters reads the tail of the dead-letter topic from Kafka, so any
// hub of a cluster lists the same, before and after a restart.
func (b consoleBackend) DeadLetters(ctx context.Context, n int) ([]console.DeadLetter, error) {
	dls, err := bridge.TailDeadLetters(ctx, b.h.kafka.Client, b.h.kafka.Opts, b.h.cfg.Kafka.TopicPrefix+"deadletter", n)
	out := make([]console.DeadLetter, len(dls))
	for i, d := range dls {
		out[i] = console.DeadLetter{Time: d.Time, Device: d.Device, Subject: d.Subject, Reason: d.Reason, PayloadSize: d.PayloadSize}
	}
	return out, err
}

func (b consoleBackend) PipelineLease(ctx context.Context) (holder, self string, err error) {
	self = b.h.cfg.Broker.ServerName
	if b.h.lease == nil {
		return "", self, nil
	}
	holder, err = b.h.lease.Holder(ctx)
	return holder, self, err
}

// EmitAudit writes an operator action to outpost.events.
func (k *kafkaSink) EmitAudit(ctx context.Context, e console.Entry) {
	k.emit(ctx, "/outpost/hub/audit", "dev.outpost.audit.v1", e.At, map[string]any{"kind": "audit", "audit": e})
}

func (b consoleBackend) Training(ctx context.Context) []api.TrainingStatus {
	return b.h.trainStatus(ctx)
}

func (b consoleBackend) TrainingHistory(ctx context.Context, model string) ([]api.TrainingEvent, bool, error) {
	return b.h.trainer.History(ctx, model)
}
