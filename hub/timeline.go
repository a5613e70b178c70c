package hub

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/outpost-edge/outpost/hub/console"
	"github.com/outpost-edge/outpost/sync/state"
)

// timelineQueue bounds the reports and events waiting to be written to
// the device timeline; past it the hub logs and drops (the timeline is a
// record, not the control path).
const timelineQueue = 4096

// timelineWriter appends to the device timeline off the NATS callbacks,
// one device's entries in order. It keeps each device's last snapshot in
// memory and, for a device it has not seen since it started, reads the
// newest one stored, so a restarted hub records only real transitions.
type timelineWriter struct {
	h     *Hub
	in    chan func(context.Context)
	snaps map[string]*console.Snapshot
	drift map[[2]string]string // device, pipeline → drifted features
}

func (h *Hub) startTimeline(runCtx context.Context) {
	w := &timelineWriter{h: h, in: make(chan func(context.Context), timelineQueue), snaps: map[string]*console.Snapshot{}, drift: map[[2]string]string{}}
	h.timelineW.Store(w)
	h.group.Go(func() error {
		for {
			select {
			case <-runCtx.Done():
				return nil
			case f := <-w.in:
				ctx, cancel := context.WithTimeout(runCtx, 10*time.Second)
				f(ctx)
				cancel()
			}
		}
	})
}

func (w *timelineWriter) enqueue(f func(context.Context)) {
	if w == nil {
		return
	}
	select {
	case w.in <- f:
	default:
		w.h.log.Warn("device timeline: queue full, entry dropped")
	}
}

func (w *timelineWriter) append(ctx context.Context, entries ...console.TimelineEntry) {
	if len(entries) == 0 {
		return
	}
	if err := w.h.timeline.Append(ctx, entries...); err != nil {
		w.h.log.Warn("device timeline: append", "device", entries[0].Device, "err", err)
	}
}

// reported records the transitions a report makes.
func (w *timelineWriter) reported(r state.Reported) {
	w.enqueue(func(ctx context.Context) {
		prev, ok := w.snaps[r.Device]
		if !ok {
			var err error
			if prev, err = w.h.timeline.Last(ctx, r.Device); err != nil {
				w.h.log.Warn("device timeline: read last state", "device", r.Device, "err", err)
				return
			}
		}
		entries := console.Transitions(prev, r)
		w.snaps[r.Device] = console.NextSnapshot(prev, r)
		w.append(ctx, entries...)
	})
}

// event records one enrolment, revocation or the like.
func (w *timelineWriter) event(device, kind, detail string) {
	at := time.Now().UTC()
	w.enqueue(func(ctx context.Context) {
		w.append(ctx, console.TimelineEntry{At: at, Device: device, Kind: kind, Detail: detail})
	})
}

// drifted records a device's drift record when the set of drifting
// features of a pipeline changes.
func (w *timelineWriter) drifted(device, pipeline string, features []string) {
	fs := slices.Sorted(slices.Values(features))
	key := strings.Join(fs, ", ")
	at := time.Now().UTC()
	w.enqueue(func(ctx context.Context) {
		k := [2]string{device, pipeline}
		was, seen := w.drift[k]
		w.drift[k] = key
		if was == key || (!seen && key == "") {
			return
		}
		detail := fmt.Sprintf("%s: data drift in %s", pipeline, key)
		if key == "" {
			detail = fmt.Sprintf("%s: data drift ended (was %s)", pipeline, was)
		}
		w.append(ctx, console.TimelineEntry{At: at, Device: device, Kind: console.KindDrift, Detail: detail})
	})
}

// labelList writes labels as k=v, sorted.
func labelList(l map[string]string) string {
	if len(l) == 0 {
		return "(none)"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(l)) {
		parts = append(parts, k+"="+l[k])
	}
	return strings.Join(parts, ",")
}
