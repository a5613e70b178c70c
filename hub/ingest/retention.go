package ingest

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Hold is what one reader of the stream still needs: every message from
// First on (0: nothing).
type Hold struct {
	Name  string // "bridge", "trainer"
	First uint64
	// Yields: past half of max_bytes the stream is trimmed past this hold,
	// so a slow optional reader (the trainer) cannot stop the fleet.
	Yields bool
}

// RetentionStats are the stream's size and what trimming did.
type RetentionStats struct {
	Full              atomic.Bool
	Bytes, Messages   atomic.Uint64
	Trimmed, Overtook atomic.Int64 // messages removed; of them, ones a yielding reader had not finished
	Reason            atomic.Value // string: why the stream is full
}

// Retention keeps OUTPOST_UP down to what is not yet safe (DESIGN §3.6):
// limits retention never deletes what consumers have acknowledged, so it
// removes, on every tick, everything below the lowest message a reader
// still needs. Interest retention would do it without a loop, but drops
// what is published while no consumer exists (a bridge being recreated).
type Retention struct {
	Stream   jetstream.Stream
	MaxBytes int64
	Every    time.Duration
	// Holds reports what each reader still needs.
	Holds func(ctx context.Context) ([]Hold, error)
	// OnFull is called when the stream becomes full (with the reason) and
	// when it has room again.
	OnFull func(full bool, reason string)
	Log    *slog.Logger
	Stats  *RetentionStats
}

// FullShare is the fill level, of max_bytes, at which the stream counts as
// full: the next device batches may be refused.
const FullShare = 0.95

// Run trims until ctx ends. Errors are logged and retried on the next tick.
func (r *Retention) Run(ctx context.Context) error {
	t := time.NewTicker(r.Every)
	defer t.Stop()
	for {
		if err := r.Tick(ctx); err != nil && ctx.Err() == nil {
			r.Log.Warn("stream retention", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Tick trims once and updates the full state.
func (r *Retention) Tick(ctx context.Context) error {
	info, err := r.Stream.Info(ctx)
	if err != nil {
		return fmt.Errorf("ingest: stream info: %w", err)
	}
	holds, err := r.Holds(ctx)
	if err != nil {
		return fmt.Errorf("ingest: stream readers: %w", err)
	}
	st := info.State
	crowded := r.MaxBytes > 0 && float64(st.Bytes) > float64(r.MaxBytes)/2
	keep, keepYield := st.LastSeq+1, st.LastSeq+1 // the first sequence to keep
	for _, h := range holds {
		if h.First == 0 {
			continue
		}
		if h.Yields && crowded {
			keepYield = min(keepYield, h.First)
			continue
		}
		keep = min(keep, h.First)
	}
	if keep > st.FirstSeq && st.Msgs > 0 {
		if err := r.Stream.Purge(ctx, jetstream.WithPurgeSequence(keep)); err != nil {
			return fmt.Errorf("ingest: trim below %d: %w", keep, err)
		}
		r.Stats.Trimmed.Add(int64(keep - st.FirstSeq))
		if keepYield < keep {
			r.Stats.Overtook.Add(int64(keep - max(keepYield, st.FirstSeq)))
			r.Log.Warn("stream over half full: trimmed past a slow reader, which skips what it had not read",
				"below_seq", keep, "skipped_from", keepYield)
		}
		if info, err = r.Stream.Info(ctx); err != nil {
			return fmt.Errorf("ingest: stream info: %w", err)
		}
		st = info.State
	}
	r.Stats.Bytes.Store(st.Bytes)
	r.Stats.Messages.Store(st.Msgs)
	full := r.MaxBytes > 0 && float64(st.Bytes) >= FullShare*float64(r.MaxBytes)
	if full == r.Stats.Full.Load() {
		return nil
	}
	r.Stats.Full.Store(full)
	reason := ""
	if full {
		reason = fullReason(st, r.MaxBytes, holds)
		r.Stats.Reason.Store(reason)
		r.Log.Error("stream "+StreamName+" is full: devices' batches are refused and stay in their outboxes", "reason", reason,
			"bytes", st.Bytes, "max_bytes", r.MaxBytes, "messages", st.Msgs)
	} else {
		r.Stats.Reason.Store("")
		r.Log.Info("stream "+StreamName+" has room again", "bytes", st.Bytes, "max_bytes", r.MaxBytes)
	}
	if r.OnFull != nil {
		r.OnFull(full, reason)
	}
	return nil
}

// fullReason names what holds the stream's messages.
func fullReason(st jetstream.StreamState, maxBytes int64, holds []Hold) string {
	var parts []string
	for _, h := range holds {
		if h.First != 0 && h.First <= st.LastSeq {
			what := "the " + h.Name + " has not read"
			if h.Name == "bridge" {
				what = "the Kafka bridge has not delivered"
			}
			parts = append(parts, fmt.Sprintf("%s %d messages", what, st.LastSeq+1-max(h.First, st.FirstSeq)))
		}
	}
	if len(parts) == 0 {
		return fmt.Sprintf("%d messages not yet trimmed fill ingest.max_bytes (%d): raise it for this traffic", st.Msgs, maxBytes)
	}
	return strings.Join(parts, "; ")
}
