package schematest

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/agent/pipeline"
	"github.com/outpost-edge/outpost/hub/console"
	"github.com/outpost-edge/outpost/hub/trainer"
	"github.com/outpost-edge/outpost/sync/state"
)

// TestWriterStructs: the Go structs agents and the hub marshal as data,
// with every field set (omitempty ones too), pass their stream's schema.
// A field added to a writer and not to its schema fails here
// (additionalProperties: false).
func TestWriterStructs(t *testing.T) {
	s, err := Compile(nil)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 11, 25, 12, 0, 5, 123, time.UTC)
	upd := state.Update{Model: "bearing", From: 3, To: 4, Rollout: "r1", Phase: state.PhaseShadow, Reason: "why",
		Health:   state.Health{Inferences: 1, Errors: 1, NaN: 1, Calls: 1, MeanLatencyUS: 1, BaselineLatencyUS: 1, BootsSinceSwitch: 1},
		Shadow:   &state.Shadow{Rows: 1, Agreement: 0.5, Errors: 1, NaN: 1, RowLatencyUS: 1, ActiveRowLatencyUS: 1, Split: 0.5},
		SelfTest: &state.SelfTest{Calls: 1, LatencyP50US: 1, LatencyP99US: 1, BatchRows: 1, BatchP50US: 1, BatchP99US: 1, RSSGrowthMB: 1, ActiveVersion: 3, ActiveLatencyP50US: 1, ActiveBatchP50US: 1},
		At:       at}
	cases := []struct {
		stream string
		data   any
	}{
		{"windows", pipeline.WindowRecord{Pipeline: "p", Key: "k", Start: at, End: at, Firing: "update", Revision: 1, Count: 3,
			Fields: map[string]map[string]float64{"temp": {"mean": 1, "p99": 2}}}},
		{"inferences", pipeline.InferenceRecord{Pipeline: "p", Key: "k", WindowStart: at, WindowEnd: at, Firing: "frame", Model: "m", Version: 1,
			Scores: []float32{0.5}, Label: "open", Positive: true, LatencyUS: 3, Frame: "f.png"}},
		{"drift", pipeline.DriftRecord{Pipeline: "p", Windows: 200, From: at, To: at,
			Features: map[string]pipeline.FeatureDrift{"temp.mean": {PSI: 1, KSD: 0.5, KSP: 0.01, Drift: true}}, Drifted: []string{"temp.mean"}}},
		{"events", map[string]any{"kind": "model_update", "update": upd}},
		{"events", map[string]any{"kind": "trainer_release", "model": "m", "event": trainer.Event{At: at, Kind: "release", Detail: "d", Version: 2,
			Rollout: "r", ProductionAccuracy: 0.5, CandidateAccuracy: 0.9}}},
		{"events", map[string]any{"kind": "audit", "audit": console.Entry{At: at, Who: "w", Role: "admin", Via: "api", Action: "a", Target: "t", Result: "ok"}}},
		{"labels", trainer.LabelRecord{Pipeline: "p", Key: "k", WindowStart: at, EventTime: at, Label: 1}},
	}
	for _, c := range cases {
		data, err := json.Marshal(c.data)
		if err != nil {
			t.Fatal(err)
		}
		if err := Validate(s.Data[c.stream], data); err != nil {
			t.Errorf("%T as %s data: %v\n%s", c.data, c.stream, err, data)
		}
	}
	cloud := trainer.LabelRecord{Device: "d", Pipeline: "p", Key: "k", EventTime: at, Label: 0}
	data, _ := json.Marshal(cloud)
	if err := Validate(s.Label, data); err != nil {
		t.Errorf("cloud label: %v\n%s", err, data)
	}
}

// fakeT records what Check reports.
type fakeT struct {
	testing.TB
	errors   []string
	failed   bool
	cleanups []func()
}

func (f *fakeT) Helper() {}
func (f *fakeT) Errorf(format string, args ...any) {
	f.errors = append(f.errors, format)
	f.failed = true
}
func (f *fakeT) Fail()             { f.failed = true }
func (f *fakeT) Cleanup(fn func()) { f.cleanups = append(f.cleanups, fn) }

// TestCheckFails: a record that breaks its data schema fails the test;
// past maxReported the rest are counted, and the total reported at the end.
func TestCheckFails(t *testing.T) {
	Shared(t)
	good := `{"device":"d","stream":"telemetry","seq":1,"event_time":"2026-11-25T12:00:05Z","data":{"kind":"agent_health","uptime_s":1,"outbox_depth":0,"outbox_bytes":0,"heap_bytes":1,"goroutines":1}}`
	f := &fakeT{TB: t}
	Check(f, "outpost.telemetry", []byte(good))
	if f.failed {
		t.Fatalf("good record failed: %v", f.errors)
	}
	bad := strings.Replace(good, `"goroutines":1`, `"goroutines":"1"`, 1)
	for range maxReported + 3 {
		Check(f, "outpost.telemetry", []byte(bad))
	}
	if !f.failed || len(f.errors) != maxReported || len(f.cleanups) != 1 {
		t.Fatalf("failed %v, %d errors, %d cleanups; want %d errors and one cleanup", f.failed, len(f.errors), len(f.cleanups), maxReported)
	}
	f.cleanups[0]()
	if len(f.errors) != maxReported+1 {
		t.Errorf("no total reported at the end: %v", f.errors)
	}
	err := Shared(t).CheckRecord([]byte(bad))
	if err == nil || !strings.Contains(err.Error(), "'/data/goroutines'") {
		t.Errorf("error does not name the path: %v", err)
	}
}
