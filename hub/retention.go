package hub

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-edge/outpost/hub/ingest"
	"github.com/outpost-edge/outpost/hub/trainer"
)

// streamHolds is what the stream's readers still need: the bridge
// everything above its last Kafka commit; the trainer what its consumer
// has not acked (it yields when the stream fills, see ingest.Hold).
func (h *Hub) streamHolds(ctx context.Context) ([]ingest.Hold, error) {
	holds := []ingest.Hold{{Name: "bridge", First: h.bridge.Stats.Committed.Load() + 1}}
	if len(h.cfg.Trainer.Models) == 0 {
		return holds, nil
	}
	c, err := h.js.Consumer(ctx, ingest.StreamName, trainer.Consumer)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return holds, nil
	}
	if err != nil {
		return nil, err
	}
	info := c.CachedInfo()
	if info.NumPending+uint64(info.NumAckPending) > 0 {
		holds = append(holds, ingest.Hold{Name: "trainer", First: info.AckFloor.Stream + 1, Yields: true})
	}
	return holds, nil
}

// onStreamFull raises a full stream (and its end) as an event in
// outpost.events; the retention loop has logged it and the metrics show it.
func (h *Hub) onStreamFull(full bool, reason string) {
	kind := "ingest_full"
	if !full {
		kind = "ingest_resumed"
	}
	st := &h.streamStats
	h.events.emit(context.Background(), "/outpost/hub/ingest", "dev.outpost.hub."+kind+".v1", time.Now().UTC(),
		map[string]any{"kind": kind, "stream": ingest.StreamName, "reason": reason,
			"bytes": st.Bytes.Load(), "max_bytes": h.cfg.Ingest.MaxBytes, "messages": st.Messages.Load()})
}
