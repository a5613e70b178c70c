package hub

import (
	"context"
	"time"

	"github.com/outpost-edge/outpost/hub/api"
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

// EmitAudit writes an operator action to outpost.events.
func (k *kafkaSink) EmitAudit(ctx context.Context, e console.Entry) {
	k.emit(ctx, "/outpost/hub/audit", "dev.outpost.audit.v1", e.At, map[string]any{"kind": "audit", "audit": e})
}

func (b consoleBackend) Training(ctx context.Context) []api.TrainingStatus { return b.h.trainStatus(ctx) }

func (b consoleBackend) TrainingHistory(ctx context.Context, model string) ([]api.TrainingEvent, bool, error) {
	return b.h.trainer.History(ctx, model)
}
