package console

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-edge/outpost/hub/journal"
	"github.com/outpost-edge/outpost/sync/state"
)

// Timeline stream: what happened to each device, one subject per device.
const (
	TimelineStream        = "OUTPOST_TIMELINE"
	TimelineSubjectPrefix = "outpost_hub.timeline."
	// TimelinePerDevice bounds one device's entries (the oldest go first),
	// so a chatty device cannot fill the stream and a page stays cheap.
	TimelinePerDevice = 5000
)

// Timeline entry kinds.
const (
	KindEnrolled = "enrolled"
	KindRevoked  = "revoked"
	KindReported = "reported" // a reported-state transition: status, boot, build, models
	KindUpdate   = "update"   // an update phase, with its reason
	KindDrift    = "drift"    // the device's data drift began, changed or ended
	KindEviction = "eviction" // the device's outbox dropped records
)

// TimelineEntry is one thing that happened to a device.
type TimelineEntry struct {
	At      time.Time `json:"at"`
	Device  string    `json:"device"`
	Kind    string    `json:"kind"`
	Detail  string    `json:"detail"`
	Model   string    `json:"model,omitempty"`
	Phase   string    `json:"phase,omitempty"`
	Reason  string    `json:"reason,omitempty"`
	Rollout string    `json:"rollout,omitempty"`
	// State is the reported state a reported or update entry moved to, so
	// a restarted hub compares the next report with it.
	State *Snapshot `json:"state,omitempty"`
}

// Snapshot is the part of a reported state whose changes go into the
// timeline.
type Snapshot struct {
	Status       string            `json:"status"`
	Boot         int64             `json:"boot"`
	AgentVersion string            `json:"agent_version,omitempty"`
	Build        int64             `json:"build,omitempty"`
	Models       map[string]string `json:"models,omitempty"`  // pipeline → "model vN slot"
	Updates      map[string]string `json:"updates,omitempty"` // model → "from>to phase rollout reason"
	Evicted      int64             `json:"evicted,omitempty"` // records the outbox evicted this boot
}

// SnapshotOf takes the timeline's view of a report.
func SnapshotOf(r state.Reported) *Snapshot {
	s := &Snapshot{Status: r.Status, Boot: r.Boot, AgentVersion: r.AgentVersion, Build: r.Build, Models: map[string]string{}, Updates: map[string]string{}}
	if r.Outbox != nil {
		s.Evicted = r.Outbox.EvictedRecords
	}
	for _, m := range r.Models {
		s.Models[m.Pipeline] = fmt.Sprintf("%s v%d %s", m.Model, m.Version, m.Slot)
	}
	for name, u := range r.Updates {
		s.Updates[name] = updateKey(u)
	}
	return s
}

// NextSnapshot is the snapshot a report moves prev to: SnapshotOf, but
// a report without its outbox (the agent could not read it) keeps the
// eviction count known for this boot.
func NextSnapshot(prev *Snapshot, r state.Reported) *Snapshot {
	next := SnapshotOf(r)
	if r.Outbox == nil && prev != nil && prev.Boot == next.Boot {
		next.Evicted = prev.Evicted
	}
	return next
}

func updateKey(u state.Update) string {
	return fmt.Sprintf("%d>%d %s %s %s", u.From, u.To, u.Phase, u.Rollout, u.Reason)
}

// Transitions are the timeline entries a report makes after prev (nil:
// nothing known of the device, so the report itself is the transition).
func Transitions(prev *Snapshot, r state.Reported) []TimelineEntry {
	next := NextSnapshot(prev, r)
	at := r.ReportedAt
	if at.IsZero() {
		at = time.Now().UTC()
	}
	var changes []string
	if prev == nil {
		changes = append(changes, fmt.Sprintf("first report: %s, boot %d, agent %s", r.Status, r.Boot, agentString(next)))
	} else {
		if prev.Status != next.Status {
			changes = append(changes, fmt.Sprintf("status %s → %s", prev.Status, next.Status))
		}
		if prev.Boot != next.Boot {
			changes = append(changes, fmt.Sprintf("restarted (boot %d → %d)", prev.Boot, next.Boot))
		}
		if prev.AgentVersion != next.AgentVersion || prev.Build != next.Build {
			changes = append(changes, fmt.Sprintf("agent %s → %s", agentString(prev), agentString(next)))
		}
	}
	pipelines := slices.Sorted(maps.Keys(next.Models))
	if prev != nil {
		for p := range prev.Models {
			if _, ok := next.Models[p]; !ok {
				pipelines = append(pipelines, p)
			}
		}
	}
	for _, p := range pipelines {
		var was string
		if prev != nil {
			was = prev.Models[p]
		}
		now := next.Models[p]
		switch {
		case was == now:
		case now == "":
			changes = append(changes, fmt.Sprintf("%s: no longer runs %s", p, was))
		case was == "":
			changes = append(changes, fmt.Sprintf("%s runs %s", p, now))
		default:
			changes = append(changes, fmt.Sprintf("%s: %s → %s", p, was, now))
		}
	}
	var out []TimelineEntry
	if len(changes) > 0 {
		out = append(out, TimelineEntry{At: at, Device: r.Device, Kind: KindReported, Detail: strings.Join(changes, "; ")})
	}
	// The eviction counter starts again at every boot.
	since := int64(0)
	if prev != nil && prev.Boot == next.Boot {
		since = prev.Evicted
	}
	if n := next.Evicted - since; n > 0 {
		d := fmt.Sprintf("outbox evicted %d records to stay within its byte budget (%d this boot", n, next.Evicted)
		if r.Outbox != nil && r.Outbox.EvictedBytes > 0 {
			d += ", " + byteString(r.Outbox.EvictedBytes)
		}
		out = append(out, TimelineEntry{At: at, Device: r.Device, Kind: KindEviction, Detail: d + ")"})
	}
	for _, name := range slices.Sorted(maps.Keys(r.Updates)) {
		u := r.Updates[name]
		if prev != nil && prev.Updates[name] == next.Updates[name] {
			continue
		}
		uat := u.At
		if uat.IsZero() {
			uat = at
		}
		d := fmt.Sprintf("%s v%d → v%d: %s", u.Model, u.From, u.To, u.Phase)
		if u.Reason != "" {
			d += " (" + u.Reason + ")"
		}
		out = append(out, TimelineEntry{At: uat, Device: r.Device, Kind: KindUpdate, Detail: d, Model: name, Phase: u.Phase, Reason: u.Reason, Rollout: u.Rollout})
	}
	if len(out) > 0 {
		out[len(out)-1].State = next
	}
	return out
}

func agentString(s *Snapshot) string {
	if s.Build > 0 {
		return fmt.Sprintf("%s (build %d)", s.AgentVersion, s.Build)
	}
	return s.AgentVersion
}

// Timeline keeps the device timeline in a journal (a JetStream stream
// with a subject per device), replicated like the hub's other stores and
// kept for retention. Every hub of a cluster may append the same entry:
// the journal keeps one.
type Timeline struct{ j *journal.Journal }

// OpenTimeline creates or opens the timeline stream, applying retention
// (its max age) to a stream that already exists.
func OpenTimeline(ctx context.Context, js jetstream.JetStream, replicas int, retention time.Duration) (*Timeline, error) {
	if retention <= 0 {
		retention = Defaults().TimelineRetention
	}
	j, err := journal.Open(ctx, js, journal.Config{Stream: TimelineStream, Prefix: TimelineSubjectPrefix,
		Replicas: replicas, MaxAge: retention, PerKey: TimelinePerDevice})
	if err != nil {
		return nil, fmt.Errorf("console: timeline: %w", err)
	}
	return &Timeline{j: j}, nil
}

// Append stores entries, in order.
func (t *Timeline) Append(ctx context.Context, entries ...TimelineEntry) error {
	for _, e := range entries {
		if e.At.IsZero() {
			e.At = time.Now().UTC()
		}
		if err := t.j.Append(ctx, e.Device, e); err != nil {
			return fmt.Errorf("console: timeline: %w", err)
		}
	}
	return nil
}

// Last is the newest state snapshot stored for device (nil if none).
func (t *Timeline) Last(ctx context.Context, device string) (*Snapshot, error) {
	entries, _, err := journal.Read[TimelineEntry](ctx, t.j, device)
	if err != nil {
		return nil, err
	}
	for i := len(entries) - 1; i >= 0; i-- {
		if entries[i].State != nil {
			return entries[i].State, nil
		}
	}
	return nil, nil
}

// Page returns a device's entries newest first: n from offset, and how
// many there are in all.
func (t *Timeline) Page(ctx context.Context, device string, offset, n int) ([]TimelineEntry, int, error) {
	entries, total, err := journal.Read[TimelineEntry](ctx, t.j, device)
	if err != nil {
		return nil, 0, err
	}
	slices.Reverse(entries)
	if offset < 0 {
		offset = 0
	}
	if offset >= len(entries) {
		return nil, total, nil
	}
	return entries[offset:min(len(entries), offset+n)], total, nil
}

// Config is the stream's configuration, for tests.
func (t *Timeline) Config(ctx context.Context) (jetstream.StreamConfig, error) {
	return t.j.StreamConfig(ctx)
}
