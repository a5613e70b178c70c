package console_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/hub/console"
	"github.com/outpost-edge/outpost/sync/state"
	"github.com/outpost-edge/outpost/test/natstest"
)

// The timeline stream takes its max age from console.timeline_retention,
// and a changed retention applies to the stream that already exists.
func TestTimelineRetention(t *testing.T) {
	ctx := context.Background()
	js := natstest.JetStream(t)
	tl, err := console.OpenTimeline(ctx, js, 1, 2*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := tl.Config(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MaxAge != 2*time.Hour || cfg.MaxMsgsPerSubject != console.TimelinePerDevice {
		t.Fatalf("stream max age %s, per subject %d", cfg.MaxAge, cfg.MaxMsgsPerSubject)
	}
	if tl, err = console.OpenTimeline(ctx, js, 1, 0); err != nil {
		t.Fatal(err)
	}
	if cfg, _ = tl.Config(ctx); cfg.MaxAge != console.Defaults().TimelineRetention || cfg.MaxAge != 30*24*time.Hour {
		t.Fatalf("default retention: %s", cfg.MaxAge)
	}
	// Entries older than the retention go.
	if tl, err = console.OpenTimeline(ctx, js, 1, time.Second); err != nil {
		t.Fatal(err)
	}
	if err := tl.Append(ctx, console.TimelineEntry{Device: "d", Kind: console.KindEnrolled, Detail: "x"}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, n, err := tl.Page(ctx, "d", 0, 10)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("an entry outlived a 1s retention: %d left", n)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Pages are per device, newest first; the same entry appended twice (two
// hubs of a cluster) is stored once.
func TestTimelinePaging(t *testing.T) {
	ctx := context.Background()
	tl, err := console.OpenTimeline(ctx, natstest.JetStream(t), 1, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 120 {
		if err := tl.Append(ctx, console.TimelineEntry{At: t0.Add(time.Duration(i) * time.Second), Device: "a", Kind: console.KindReported, Detail: fmt.Sprint("a", i)}); err != nil {
			t.Fatal(err)
		}
		if i < 5 {
			if err := tl.Append(ctx, console.TimelineEntry{At: t0, Device: "b", Kind: console.KindReported, Detail: fmt.Sprint("b", i)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	dup := console.TimelineEntry{At: t0, Device: "b", Kind: console.KindReported, Detail: "b0"}
	if err := tl.Append(ctx, dup); err != nil {
		t.Fatal(err)
	}
	page, total, err := tl.Page(ctx, "a", 0, 50)
	if err != nil {
		t.Fatal(err)
	}
	if total != 120 || len(page) != 50 || page[0].Detail != "a119" || page[49].Detail != "a70" {
		t.Fatalf("first page: total %d, %d entries, %q … %q", total, len(page), page[0].Detail, page[len(page)-1].Detail)
	}
	page, _, _ = tl.Page(ctx, "a", 100, 50)
	if len(page) != 20 || page[0].Detail != "a19" || page[19].Detail != "a0" {
		t.Fatalf("last page: %d entries", len(page))
	}
	page, total, _ = tl.Page(ctx, "b", 0, 50)
	if total != 5 || len(page) != 5 || page[0].Detail != "b4" {
		t.Fatalf("device b: total %d, %v", total, page)
	}
	if page, total, _ = tl.Page(ctx, "nobody", 0, 50); total != 0 || len(page) != 0 {
		t.Fatalf("unknown device: %d", total)
	}
}

// Transitions turn reports into entries, and Last gives a restarted hub
// the state to compare the next report with.
func TestTimelineTransitions(t *testing.T) {
	ctx := context.Background()
	tl, err := console.OpenTimeline(ctx, natstest.JetStream(t), 1, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	r := state.Reported{Device: "p", Status: state.StatusRunning, Boot: 1, AgentVersion: "1.0", ReportedAt: now,
		Models: []state.ModelStatus{{Pipeline: "vib", Model: "bearing", Version: 1, Slot: "a"}}}
	first := console.Transitions(nil, r)
	if len(first) != 1 || !strings.Contains(first[0].Detail, "first report") || !strings.Contains(first[0].Detail, "vib runs bearing v1 a") {
		t.Fatalf("first: %+v", first)
	}
	if err := tl.Append(ctx, first...); err != nil {
		t.Fatal(err)
	}
	prev, err := tl.Last(ctx, "p")
	if err != nil || prev == nil {
		t.Fatalf("last: %v %v", prev, err)
	}
	if again := console.Transitions(prev, r); len(again) != 0 {
		t.Fatalf("the same report again: %+v", again)
	}
	r.Updates = map[string]state.Update{"bearing": {Model: "bearing", From: 1, To: 2, Phase: state.PhaseRolledBack, Reason: "golden mismatch", Rollout: "ro-1", At: now}}
	r.Boot = 2
	next := console.Transitions(prev, r)
	if len(next) != 2 || next[0].Kind != console.KindReported || !strings.Contains(next[0].Detail, "boot 1 → 2") ||
		next[1].Kind != console.KindUpdate || next[1].Reason != "golden mismatch" || next[1].State == nil {
		t.Fatalf("restart and update: %+v", next)
	}
	// The outbox evicts: one entry per report that saw it grow; the
	// counter starts again with the next boot.
	s2 := console.SnapshotOf(r)
	r.Outbox = &state.Outbox{Records: 10, EvictedRecords: 40, EvictedBytes: 4096}
	ev := console.Transitions(s2, r)
	if len(ev) != 1 || ev[0].Kind != console.KindEviction || !strings.Contains(ev[0].Detail, "evicted 40 records") || !strings.Contains(ev[0].Detail, "4.0 KiB") {
		t.Fatalf("eviction: %+v", ev)
	}
	s3 := console.SnapshotOf(r)
	if again := console.Transitions(s3, r); len(again) != 0 {
		t.Fatalf("the same eviction count again: %+v", again)
	}
	// A report without its outbox (the agent could not read it) is no
	// news; the next one with it counts from what was known.
	saved := r.Outbox
	r.Outbox = nil
	if none := console.Transitions(s3, r); len(none) != 0 {
		t.Fatalf("a report without its outbox: %+v", none)
	}
	if kept := console.NextSnapshot(s3, r); kept.Evicted != 40 {
		t.Fatalf("a report without its outbox forgot the evictions: %d", kept.Evicted)
	}
	s3 = console.NextSnapshot(s3, r)
	r.Outbox = saved
	r.Outbox.EvictedRecords = 55
	if more := console.Transitions(s3, r); len(more) != 1 || !strings.Contains(more[0].Detail, "evicted 15 records") || !strings.Contains(more[0].Detail, "(55 this boot") {
		t.Fatalf("more evictions: %+v", more)
	}
	r.Boot, r.Outbox.EvictedRecords = 3, 5
	if reboot := console.Transitions(s3, r); len(reboot) != 2 || reboot[1].Kind != console.KindEviction || !strings.Contains(reboot[1].Detail, "evicted 5 records") {
		t.Fatalf("evictions after a reboot: %+v", reboot)
	}
}
