package state

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
)

// An older agent's report, without live health, decodes with none; a
// newer one carries it under these keys, which hubs and dashboards read.
func TestReportedHealthIsOptional(t *testing.T) {
	old, err := DecodeReported([]byte(`{"device":"d1","agent_version":"0.9.0","status":"running","models":[{"pipeline":"p","model":"m","version":1}]}`))
	if err != nil || old.Pipelines != nil || old.Uplink != nil {
		t.Fatalf("old report: %+v, %v", old, err)
	}
	if b, _ := json.Marshal(old); strings.Contains(string(b), `"pipelines"`) || strings.Contains(string(b), `"uplink"`) {
		t.Fatalf("a report without health encodes its keys: %s", b)
	}

	at := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	r := Reported{Device: "d1", Pipelines: []PipelineHealth{{Pipeline: "p", Model: "m", Version: 2, Events: 1, Rejected: 2, Late: 3, Windows: 4, Inferences: 5,
		InferErrors: 6, NaN: 7, Calls: 8, RateSeconds: 30, InferencesPerSec: 9, EventsPerSec: 10, LatencyCalls: 11, LatencyP50US: 12, LatencyP99US: 13, RowsPerCall: 14}},
		Uplink: &Uplink{Connected: true, Broker: "ssl://hub:8883", Reconnects: 15, LastAckAt: &at, AckErrors: 16}}
	b, _ := json.Marshal(r)
	var keys struct {
		Pipelines []map[string]any `json:"pipelines"`
		Uplink    map[string]any   `json:"uplink"`
	}
	if err := json.Unmarshal(b, &keys); err != nil || len(keys.Pipelines) != 1 {
		t.Fatalf("%s: %v", b, err)
	}
	wantP := map[string]any{"pipeline": "p", "model": "m", "version": 2.0, "events": 1.0, "rejected": 2.0, "late": 3.0, "windows": 4.0, "inferences": 5.0,
		"infer_errors": 6.0, "nan": 7.0, "calls": 8.0, "rate_seconds": 30.0, "inferences_per_sec": 9.0, "events_per_sec": 10.0, "latency_calls": 11.0,
		"latency_p50_us": 12.0, "latency_p99_us": 13.0, "rows_per_call": 14.0}
	wantU := map[string]any{"connected": true, "broker": "ssl://hub:8883", "reconnects": 15.0, "last_ack_at": "2026-12-01T12:00:00Z", "ack_errors": 16.0}
	if !reflect.DeepEqual(keys.Pipelines[0], wantP) || !reflect.DeepEqual(keys.Uplink, wantU) {
		t.Fatalf("encoded health:\n got %v\n     %v\nwant %v\n     %v", keys.Pipelines[0], keys.Uplink, wantP, wantU)
	}
	back, err := DecodeReported(b)
	if err != nil || !reflect.DeepEqual(back.Pipelines, r.Pipelines) || back.Uplink.LastAckAt == nil || !back.Uplink.LastAckAt.Equal(at) {
		t.Fatalf("round trip: %+v, %v", back, err)
	}
	if got := r.Pipelines[0].Rows(); got != 11 {
		t.Fatalf("rows %d, want inferences + infer errors = 11", got)
	}
}
