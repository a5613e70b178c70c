package ctl

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/outpost-edge/outpost/hub/api"
	"github.com/outpost-edge/outpost/sync/state"
)

// The hub's answers the golden outputs are made from: typed values, so a
// change of an API type changes them (and the golden files say how).
var (
	goldenAt  = time.Date(2026, 11, 30, 8, 15, 0, 0, time.UTC)
	goldenAck = goldenAt.Add(-4 * time.Second)
	goldenST  = &state.SelfTest{Calls: 50, LatencyP50US: 210, LatencyP99US: 390, BatchRows: 8, BatchP50US: 640, BatchP99US: 910,
		RealRows: 12, RSSGrowthMB: 3.5, ActiveVersion: 2, ActiveLatencyP50US: 190, ActiveBatchP50US: 600}
	goldenDevices = []state.Device{
		{ID: "pump-1", Labels: map[string]string{"site": "north", "hw": "rpi4"}, CreatedAt: goldenAt.Add(-time.Hour), Reported: &state.Reported{Device: "pump-1", AgentVersion: "1.4.0", Arch: "arm64",
			Boot: 3, Status: "running", StartedAt: goldenAt.Add(-time.Hour), ReportedAt: goldenAt, DesiredVersion: 7, Build: 42,
			Models: []state.ModelStatus{{Pipeline: "vibration", Model: "bearing", Version: 3, Slot: "b"}},
			Pipelines: []state.PipelineHealth{{Pipeline: "vibration", Model: "bearing", Version: 3, Events: 90000, Windows: 3000, Inferences: 2990, InferErrors: 10, NaN: 3,
				Late: 4, Rejected: 5, Calls: 750, RateSeconds: 30, InferencesPerSec: 12.5, EventsPerSec: 300, LatencyCalls: 256, LatencyP50US: 204.5, LatencyP99US: 388, RowsPerCall: 4}},
			Uplink: &state.Uplink{Connected: true, Broker: "ssl://hub.example:8883", Reconnects: 2, LastAckAt: &goldenAck, AckErrors: 1}}},
		{ID: "pump-2", Labels: map[string]string{"site": "south"}, CreatedAt: goldenAt.Add(-30 * time.Minute)},
	}
	goldenRollout = api.Rollout{ID: "r-20261130-1", State: api.Running, Wave: 1, Targeted: 3, CreatedAt: goldenAt.Add(-10 * time.Minute),
		UpdatedAt: goldenAt, WaveStarted: goldenAt.Add(-2 * time.Minute),
		Spec: api.Spec{Model: "bearing", Version: 3, Selector: map[string]string{"site": "north"}, Waves: []api.Wave{{Devices: 1}, {Percent: 100}},
			Bake: api.Duration(time.Minute), WaveTimeout: api.Duration(30 * time.Minute),
			Gates: api.Gates{MinHealthy: 1, MaxErrorRate: 0.01, MaxLatencyFactor: 3, MaxLatencyMS: 2.5}},
		Devices: map[string]*api.Device{
			"pump-1": {Wave: 0, From: 2, Phase: state.PhaseCommitted, Health: state.Health{Inferences: 1200, Calls: 150, MeanLatencyUS: 205}, SelfTest: goldenST},
			"pump-3": {Wave: 1, From: 2, Phase: state.PhaseProbation, Health: state.Health{Inferences: 40, Errors: 1, Calls: 5, MeanLatencyUS: 230}},
			"pump-4": {Wave: 1, From: 2, Phase: "pending"},
		}}
	goldenRolledBack = func() api.Rollout {
		r := goldenRollout
		r.State, r.Reason = api.RolledBack, "rolled back by admin"
		r.Devices = map[string]*api.Device{"pump-1": {From: 2, Phase: state.PhaseCommitted, Reverted: true}, "pump-3": {Wave: 1, From: 2, Phase: state.PhaseProbation, Reverted: true}}
		return r
	}()
	goldenVersions = []api.ModelVersion{
		{Name: "bearing", Version: 2, Task: "binary", Stage: "production", Metrics: map[string]float64{"accuracy": 0.93}, SHA256: strings.Repeat("ab", 32),
			Size: 48211, Golden: "reproduced on the pure-Go engine", Parameters: 12001, Ops: []string{"Gemm", "Relu", "Sigmoid"}, Created: goldenAt.Add(-48 * time.Hour),
			History: []api.Movement{{Stage: "candidate", At: goldenAt.Add(-48 * time.Hour)}, {Stage: "production", At: goldenAt.Add(-24 * time.Hour), Why: "rollout r-20261129-1 completed"}}},
		{Name: "bearing", Version: 3, Parent: 2, Task: "binary", Stage: "canary", Metrics: map[string]float64{"accuracy": 0.95, "quant_size_ratio": 0.27}, SHA256: strings.Repeat("cd", 32),
			Size: 13020, Quantization: "int8-static", Golden: "reproduced on the pure-Go engine", Parameters: 12001, Ops: []string{"DequantizeLinear", "Gemm", "QuantizeLinear", "Relu", "Sigmoid"},
			Created: goldenAt.Add(-time.Hour), History: []api.Movement{{Stage: "candidate", At: goldenAt.Add(-time.Hour)}, {Stage: "canary", At: goldenAt.Add(-10 * time.Minute), Why: "rollout r-20261130-1"}}},
	}
	goldenTraining = []api.TrainingStatus{{Model: "bearing", Pipeline: "vibration", Production: 2, Canary: 3, Champion: 3, Labelled: 5120, Skipped: 7, Drifts: 1, Checks: 4, Releases: 1,
		ProductionAccuracy: 0.912, LearnerAccuracy: 0.947, RecentProduction: 0.88, RecentLearner: 0.95,
		Join: api.JoinStats{Matched: 5120, UnmatchedLabels: 3, UnlabelledWindows: 250}, Fleet: api.FleetDrift{Devices: 3, Drifting: 2, Features: map[string]int{"vibration.rms": 2}, Active: true, Since: goldenAt.Add(-time.Hour), Last: goldenAt}}}
	goldenHistory = []api.TrainingEvent{
		{At: goldenAt.Add(-2 * time.Hour), Kind: "drift", Detail: "ADWIN on the error stream"},
		{At: goldenAt.Add(-time.Hour), Kind: "release", Version: 3, Rollout: "r-20261130-1", ProductionAccuracy: 0.91, CandidateAccuracy: 0.95},
	}
)

// goldenRoutes are the fake hub's answers.
var goldenRoutes = map[string]any{
	"GET /v1/devices": goldenDevices,
	"GET /v1/devices/pump-1": state.DeviceDetail{Device: goldenDevices[0], TimelineTotal: 2, Timeline: []state.TimelineEntry{
		{At: goldenAt.Add(-5 * time.Minute), Kind: "update", Detail: "bearing v2 → v3: committed", Model: "bearing", Phase: state.PhaseCommitted, Rollout: "r-20261130-1"},
		{At: goldenAt.Add(-time.Hour), Kind: "enrolled", Detail: "enrolled with labels hw=rpi4 site=north"}}},
	"POST /v1/devices":                         state.Credentials{Device: "pump-7", Username: "pump-7", Password: "Zm9vYmFyLXRlc3Qtb25seQ"},
	"POST /v1/enrolment-tokens":                state.EnrolToken{Token: "oet_test_0123456789", Device: "pump-8", Labels: map[string]string{"site": "lab"}, ExpiresAt: goldenAt.Add(48 * time.Hour)},
	"POST /v1/devices/pump-2/revoke":           map[string]string{"revoked": "pump-2"},
	"GET /v1/models":                           []api.ModelSummary{{Name: "bearing", Latest: 3, Production: 2, Canary: 3, Versions: 2}, {Name: "health", Latest: 1, Versions: 1}},
	"GET /v1/models/bearing":                   goldenVersions,
	"POST /v1/models":                          goldenVersions[1],
	"POST /v1/models/bearing/versions/3/stage": goldenVersions[1],
	"GET /v1/rollouts":                         []api.Rollout{goldenRollout},
	"GET /v1/rollouts/r-20261130-1":            goldenRollout,
	"POST /v1/rollouts":                        goldenRollout,
	"POST /v1/rollouts/r-20261130-1/pause":     goldenRollout,
	"POST /v1/rollouts/r-20261130-1/resume":    goldenRollout,
	"POST /v1/rollouts/r-20261130-1/abort":     goldenRollout,
	"POST /v1/rollouts/r-20261130-1/rollback":  goldenRolledBack,
	"GET /v1/train":                            goldenTraining,
	"GET /v1/train/bearing/history":            goldenHistory,
	"POST /v1/train/bearing/run":               map[string]string{"status": "judged"},
}

// goldenCommands run against the fake hub. Read commands run again with
// -o json and -o yaml, whose output must parse back into what the hub
// answered.
var goldenCommands = []struct {
	name string
	args []string
	path string // the route whose answer -o json must give back ("" : not a read command)
}{
	{"device_list", []string{"device", "list"}, "GET /v1/devices"},
	{"device_list_wide", []string{"device", "list", "-o", "wide"}, ""},
	{"device_show", []string{"device", "show", "pump-1"}, "GET /v1/devices/pump-1"},
	{"device_show_wide", []string{"device", "show", "pump-1", "-o", "wide"}, ""},
	{"device_add", []string{"device", "add", "pump-7", "--label", "site=lab"}, ""},
	{"device_token", []string{"device", "token", "--device", "pump-8", "--label", "site=lab", "--ttl", "48h"}, ""},
	{"device_token_json", []string{"device", "token", "--device", "pump-8", "--json"}, ""},
	{"device_revoke", []string{"device", "revoke", "pump-2"}, ""},
	{"model_push", []string{"model", "push", "PACKAGE"}, ""},
	{"model_list", []string{"model", "list"}, "GET /v1/models"},
	{"model_show", []string{"model", "show", "bearing"}, "GET /v1/models/bearing"},
	{"model_promote", []string{"model", "promote", "bearing", "3", "--stage", "canary", "--why", "recall +3 points"}, ""},
	{"model_archive", []string{"model", "archive", "bearing", "3", "--why", "superseded"}, ""},
	{"rollout_start", []string{"rollout", "start", "bearing", "3", "--select", "site=north", "--waves", "1,100%", "--max-latency-ms", "2.5"}, ""},
	{"rollout_list", []string{"rollout", "list"}, "GET /v1/rollouts"},
	{"rollout_status", []string{"rollout", "status", "r-20261130-1"}, "GET /v1/rollouts/r-20261130-1"},
	{"rollout_status_wide", []string{"rollout", "status", "r-20261130-1", "-o", "wide"}, ""},
	{"rollout_pause", []string{"rollout", "pause", "r-20261130-1"}, ""},
	{"rollout_resume", []string{"rollout", "resume", "r-20261130-1"}, ""},
	{"rollout_abort", []string{"rollout", "abort", "r-20261130-1"}, ""},
	{"rollout_rollback", []string{"rollout", "rollback", "r-20261130-1"}, ""},
	{"train_status", []string{"train", "status"}, "GET /v1/train"},
	{"train_run", []string{"train", "run", "bearing"}, ""},
	{"train_history", []string{"train", "history", "bearing"}, "GET /v1/train/bearing/history"},
}

// ownTests are the commands that work offline, on files a test makes
// (keys, bundles, ONNX files, packages), each with its output checked by
// the test named.
var ownTests = map[string]string{
	"quant":           "TestQuantCommand, TestInspectOutputFormats",
	"model inspect":   "TestInspectOutputFormats",
	"model validate":  "TestModelValidate",
	"model import":    "TestModelImportScikitLearn",
	"model run":       "TestModelImportScikitLearn",
	"firmware keygen": "test/pipeline TestArm64BundleEnrolsAndStreamsUnderQemu",
	"firmware build":  "test/pipeline TestArm64BundleEnrolsAndStreamsUnderQemu, test/cross TestBundlesForEveryArchitecture",
	"firmware flash":  "test/pipeline TestArm64BundleEnrolsAndStreamsUnderQemu",
	"agent publish":   "test/pipeline TestAgentSelfUpdate",
	"keys init":       "hub/updates TestOfflineKeysServeDevicesAndRotate",
	"keys rotate":     "hub/updates TestOfflineKeysServeDevicesAndRotate",
	"keys sign":       "hub/updates TestOfflineKeysServeDevicesAndRotate",
	"keys show":       "hub/updates TestOfflineKeysServeDevicesAndRotate",
}

// TestGoldenOutputs: every command's output against the hub's answers
// above is the golden file under testdata/golden (go test ./hub/ctl -run
// Golden -update rewrites them), and a read command's -o json and -o
// yaml give back exactly what the hub answered. Every command is either
// here or in ownTests.
func TestGoldenOutputs(t *testing.T) {
	isolate(t)
	var mu sync.Mutex
	var calls []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := r.Method + " " + r.URL.Path
		mu.Lock()
		calls = append(calls, key)
		mu.Unlock()
		v, ok := goldenRoutes[key]
		if !ok {
			w.WriteHeader(http.StatusNotFound)
			json.NewEncoder(w).Encode(map[string]string{"error": "no route " + key})
			return
		}
		json.NewEncoder(w).Encode(v)
	}))
	defer srv.Close()
	pkg := writePackage(t)
	covered := map[string]bool{}
	for _, gc := range goldenCommands {
		args := append([]string{"--hub", srv.URL}, gc.args...)
		for i, a := range args {
			if a == "PACKAGE" {
				args[i] = pkg
			}
		}
		covered[strings.Join(gc.args[:2], " ")] = true
		code, out, errOut := run(args...)
		if code != 0 {
			t.Errorf("%s: exit %d\n%s", gc.name, code, errOut)
			continue
		}
		checkGolden(t, gc.name, out)
		if gc.path == "" {
			continue
		}
		want, err := json.Marshal(goldenRoutes[gc.path])
		if err != nil {
			t.Fatal(err)
		}
		var wantV any
		json.Unmarshal(want, &wantV)
		for _, format := range []string{"json", "yaml"} {
			code, out, errOut := run(append(args, "-o", format)...)
			var got any
			var perr error
			if format == "json" {
				perr = json.Unmarshal([]byte(out), &got)
			} else {
				perr = yaml.Unmarshal([]byte(out), &got)
				got = normalise(got)
			}
			if code != 0 || perr != nil || !reflect.DeepEqual(got, wantV) {
				t.Errorf("%s -o %s: exit %d, parse %v; it does not give back the hub's answer\n%s%s", gc.name, format, code, perr, out, errOut)
			}
		}
	}
	for _, c := range commands {
		if !covered[c.path] && ownTests[c.path] == "" {
			t.Errorf("command %q has no golden output here and no test of its own named in ownTests", c.path)
		}
	}
}

// normalise turns YAML's decoded values into JSON's (numbers as float64,
// timestamps as RFC 3339 strings), so both compare to one answer.
func normalise(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = normalise(e)
		}
		return x
	case []any:
		for i, e := range x {
			x[i] = normalise(e)
		}
		return x
	case int:
		return float64(x)
	case time.Time:
		return x.Format(time.RFC3339Nano)
	}
	return v
}

// checkGolden compares out with testdata/golden/NAME.txt, or writes it
// with -update.
func checkGolden(t *testing.T, name, out string) {
	t.Helper()
	path := filepath.Join("testdata", "golden", name+".txt")
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(out), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test ./hub/ctl -run Golden -update writes it)", err)
	}
	if string(want) != out {
		t.Errorf("%s: output differs from %s (go test ./hub/ctl -run Golden -update, then read the diff)\ngot:\n%s\nwant:\n%s", name, path, out, want)
	}
}
