package agent

import (
	"testing"
	"time"

	"github.com/outpost-edge/outpost/agent/pipeline"
	"github.com/outpost-edge/outpost/sync/state"
)

func TestHealthOfRates(t *testing.T) {
	prev := pipeline.Counters{Events: 1000, Inferences: 40, InferErrors: 1, Calls: 10}
	cur := pipeline.Counters{Events: 4000, Windows: 70, Inferences: 100, InferErrors: 3, NaN: 2, Late: 5, Rejected: 6, Calls: 25}
	calls := pipeline.CallLatency{Calls: 25, P50: 1500 * time.Nanosecond, P99: 9 * time.Millisecond, RowsPerCall: 4}
	got := healthOf("vibration", cur, prev, 30*time.Second, calls)
	want := state.PipelineHealth{Pipeline: "vibration", Events: 4000, Rejected: 6, Late: 5, Windows: 70, Inferences: 100, InferErrors: 3, NaN: 2, Calls: 25,
		RateSeconds: 30, InferencesPerSec: 2, EventsPerSec: 100, LatencyCalls: 25, LatencyP50US: 1.5, LatencyP99US: 9000, RowsPerCall: 4}
	if got != want {
		t.Fatalf("health:\n got %+v\nwant %+v", got, want)
	}
	// No span (a report in the same instant): counters, and no rates.
	if got := healthOf("vibration", cur, prev, 0, calls); got.RateSeconds != 0 || got.InferencesPerSec != 0 || got.EventsPerSec != 0 || got.Inferences != 100 {
		t.Fatalf("no span: %+v", got)
	}
	// A counter below its baseline reads no rate, not a negative one.
	if got := healthOf("vibration", prev, cur, time.Second, calls); got.InferencesPerSec != 0 || got.EventsPerSec != 0 {
		t.Fatalf("counters going back: %+v", got)
	}
}

type fakeSource struct {
	name string
	c    pipeline.Counters
}

func (f *fakeSource) Name() string                      { return f.name }
func (f *fakeSource) Counters() pipeline.Counters       { return f.c }
func (f *fakeSource) RecentCalls() pipeline.CallLatency { return pipeline.CallLatency{} }

// The baseline is the previous report, or an older one while the
// previous is closer than minSpan; each pipeline gets its own model.
func TestPipelineHealthBaseline(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	a, b := &fakeSource{name: "a"}, &fakeSource{name: "b"}
	pipes := []healthSource{a, b}
	models := []state.ModelStatus{{Pipeline: "b", Model: "bearing", Version: 3}}
	h := healthRates{at: start, minSpan: 15 * time.Second}

	a.c.Events, b.c.Inferences = 300, 30
	got := h.pipelineHealth(start.Add(30*time.Second), pipes, models)
	if len(got) != 2 || got[0].EventsPerSec != 10 || got[0].Model != "" || got[1].InferencesPerSec != 1 || got[1].Model != "bearing" || got[1].Version != 3 {
		t.Fatalf("first report, 30 s after the start: %+v", got)
	}
	// 5 s later, an update report: the rates still count from the first
	// report, 5 s before, and the baseline stays there.
	a.c.Events = 400
	got = h.pipelineHealth(start.Add(35*time.Second), pipes, models)
	if got[0].RateSeconds != 5 || got[0].EventsPerSec != 20 {
		t.Fatalf("report 5 s after the last: %+v", got[0])
	}
	a.c.Events = 700
	got = h.pipelineHealth(start.Add(60*time.Second), pipes, models)
	if got[0].RateSeconds != 30 || got[0].EventsPerSec != 400.0/30 {
		t.Fatalf("report 30 s after the baseline: %+v; want 400 events over 30 s", got[0])
	}
	// That one was far enough: it is the new baseline.
	got = h.pipelineHealth(start.Add(70*time.Second), pipes, models)
	if got[0].RateSeconds != 10 || got[0].EventsPerSec != 0 {
		t.Fatalf("report 10 s after the new baseline: %+v", got[0])
	}
}
