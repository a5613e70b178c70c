package ctl

import (
	"context"
	"encoding/json"
	"flag"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/outpost-edge/outpost/hub/api"
	"github.com/outpost-edge/outpost/hub/rollout"
	"github.com/outpost-edge/outpost/sync/state"
)

// isolate keeps the caller's environment and config file out of a test.
func isolate(t *testing.T) string {
	t.Helper()
	for _, k := range []string{EnvHub, EnvHubURL, EnvToken, EnvHubToken, EnvCA} {
		t.Setenv(k, "")
	}
	p := filepath.Join(t.TempDir(), "config.yaml")
	t.Setenv(EnvConfig, p)
	return p
}

// fakeHub answers the API paths it is given, and counts and records calls.
type fakeHub struct {
	*httptest.Server
	mu    sync.Mutex
	calls []string // "METHOD PATH TOKEN"
}

func newFakeHub(t *testing.T, routes map[string]func() any) *fakeHub {
	h := &fakeHub{}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		h.calls = append(h.calls, r.Method+" "+r.URL.Path+" "+strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
		h.mu.Unlock()
		f, ok := routes[r.Method+" "+r.URL.Path]
		if !ok {
			w.WriteHeader(http.StatusNotFound)
			json.NewEncoder(w).Encode(map[string]string{"error": "no route " + r.URL.Path})
			return
		}
		json.NewEncoder(w).Encode(f())
	}))
	t.Cleanup(h.Close)
	return h
}

func (h *fakeHub) Calls() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.calls...)
}

var twoDevices = func() any {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	return []state.Device{
		{ID: "pump-1", Labels: map[string]string{"site": "lab"}, Reported: &state.Reported{Status: "running", AgentVersion: "1.2", Arch: "arm64", ReportedAt: at,
			Models: []state.ModelStatus{{Pipeline: "vibration", Model: "bearing", Version: 3}}}},
		{ID: "pump-2"},
	}
}

// TestHelpListsFlags: every command's --help exits 0 on stdout with its
// usage, an example and each of its flags, and never calls the hub.
func TestHelpListsFlags(t *testing.T) {
	isolate(t)
	hub := newFakeHub(t, nil)
	for _, cmd := range commands {
		args := append(strings.Fields(cmd.path), "--help", "--hub", hub.URL)
		code, out, errOut := run(args...)
		if code != 0 || errOut != "" {
			t.Errorf("%s --help: exit %d, stderr %q", cmd.path, code, errOut)
			continue
		}
		for _, want := range []string{"Usage:", "outpostctl " + cmd.path, "Examples:", "--hub", "--context"} {
			if !strings.Contains(out, want) {
				t.Errorf("%s --help lacks %q:\n%s", cmd.path, want, out)
			}
		}
		fs := flag.NewFlagSet(cmd.path, flag.ContinueOnError)
		cmd.define(fs)
		fs.VisitAll(func(f *flag.Flag) {
			if !strings.Contains(out, "--"+f.Name+" ") && !(f.Name == "o" && strings.Contains(out, "-o, --output")) {
				t.Errorf("%s --help lacks --%s:\n%s", cmd.path, f.Name, out)
			}
		})
		if cmd.read && !strings.Contains(out, "-o, --output") {
			t.Errorf("%s --help lacks -o:\n%s", cmd.path, out)
		}
		if cmd.watch && !strings.Contains(out, "--watch") {
			t.Errorf("%s --help lacks --watch:\n%s", cmd.path, out)
		}
	}
	if code, out, _ := run("device", "revoke", "--help"); code != 0 || !strings.Contains(out, "device revoke ID") {
		t.Errorf("device revoke --help: exit %d:\n%s", code, out)
	}
	if calls := hub.Calls(); len(calls) != 0 {
		t.Errorf("help called the hub: %v", calls)
	}
}

// TestFlagsAfterArgs: rollout status ID --watch follows the rollout.
func TestFlagsAfterArgs(t *testing.T) {
	isolate(t)
	var polls atomic.Int32
	hub := newFakeHub(t, map[string]func() any{"GET /v1/rollouts/r1": func() any {
		r := rollout.Rollout{ID: "r1", Spec: rollout.Spec{Model: "bearing", Version: 2, Waves: []rollout.Wave{{Percent: 100}}}, State: rollout.Running, Targeted: 1}
		if polls.Add(1) >= 3 {
			r.State = rollout.Completed
		}
		return r
	}})
	code, out, errOut := run("--hub", hub.URL, "rollout", "status", "r1", "--watch", "--interval", "10ms")
	if code != 0 || polls.Load() < 3 || !strings.Contains(out, "completed") {
		t.Fatalf("rollout status r1 --watch: exit %d after %d polls\n%s%s", code, polls.Load(), out, errOut)
	}
}

// TestHubFlagAfterArgs: device list --hub URL asks that hub, not the
// environment's.
func TestHubFlagAfterArgs(t *testing.T) {
	isolate(t)
	envHub := newFakeHub(t, map[string]func() any{"GET /v1/devices": twoDevices})
	other := newFakeHub(t, map[string]func() any{"GET /v1/devices": twoDevices})
	t.Setenv(EnvHub, envHub.URL)
	code, out, errOut := run("device", "list", "--hub", other.URL)
	if code != 0 || !strings.Contains(out, "pump-1") {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	if len(other.Calls()) != 1 || len(envHub.Calls()) != 0 {
		t.Fatalf("--hub after args: other hub got %v, the environment's %v", other.Calls(), envHub.Calls())
	}
}

// TestOutputFormats: -o json and yaml parse, --json is -o json, wide
// adds columns, an unknown format is a usage error.
func TestOutputFormats(t *testing.T) {
	isolate(t)
	hub := newFakeHub(t, map[string]func() any{"GET /v1/devices": twoDevices})
	for _, args := range [][]string{{"-o", "json"}, {"--json"}, {"--output=json"}} {
		code, out, errOut := run(append([]string{"device", "list", "--hub", hub.URL}, args...)...)
		var devs []state.Device
		if code != 0 || json.Unmarshal([]byte(out), &devs) != nil || len(devs) != 2 || devs[0].Reported.Models[0].Version != 3 {
			t.Fatalf("device list %v: exit %d, %d devices\n%s%s", args, code, len(devs), out, errOut)
		}
	}
	code, out, _ := run("device", "list", "--hub", hub.URL, "-o", "yaml")
	var devs []map[string]any
	if code != 0 || yaml.Unmarshal([]byte(out), &devs) != nil || len(devs) != 2 || devs[0]["id"] != "pump-1" {
		t.Fatalf("device list -o yaml: exit %d\n%s", code, out)
	}
	code, out, _ = run("device", "list", "--hub", hub.URL)
	if code != 0 || !strings.Contains(out, "vibration=bearing v3") || strings.Contains(out, "LABELS") {
		t.Fatalf("device list: exit %d\n%s", code, out)
	}
	code, out, _ = run("device", "list", "--hub", hub.URL, "-o", "wide")
	if code != 0 || !strings.Contains(out, "LABELS") || !strings.Contains(out, "site=lab") {
		t.Fatalf("device list -o wide: exit %d\n%s", code, out)
	}
	if code, _, errOut := run("device", "list", "--hub", hub.URL, "-o", "xml"); code != ExitUsage || !strings.Contains(errOut, "-o must be") {
		t.Fatalf("-o xml: exit %d, %s", code, errOut)
	}
}

// TestContextsAndEnvironment: each setting comes from its flag, then
// --context, then the environment, then the current context.
func TestContextsAndEnvironment(t *testing.T) {
	isolate(t)
	routes := map[string]func() any{"GET /v1/models": func() any { return []any{} }}
	a, b, envHub, flagHub := newFakeHub(t, routes), newFakeHub(t, routes), newFakeHub(t, routes), newFakeHub(t, routes)
	for _, args := range [][]string{
		{"config", "set-context", "a", "--hub", a.URL, "--token", "tok-a"},
		{"config", "set-context", "b", "--hub", strings.TrimPrefix(b.URL, "http://"), "--token", "tok-b"},
	} {
		if code, out, errOut := run(args...); code != 0 {
			t.Fatalf("%v: exit %d\n%s%s", args, code, out, errOut)
		}
	}
	if code, out, _ := run("config", "get-contexts"); code != 0 || !strings.Contains(out, "*        a ") || strings.Contains(out, "tok-") {
		t.Fatalf("get-contexts (the first context is current, tokens hidden): exit %d\n%s", code, out)
	}
	last := func(h *fakeHub) string {
		c := h.Calls()
		if len(c) == 0 {
			return ""
		}
		return c[len(c)-1]
	}
	expect := func(what string, h *fakeHub, token string, args ...string) {
		t.Helper()
		before := len(h.Calls())
		code, out, errOut := run(append(args, "model", "list")...)
		if code != 0 || len(h.Calls()) != before+1 || last(h) != "GET /v1/models "+token {
			t.Errorf("%s: exit %d, want a call with token %q, got %q\n%s%s", what, code, token, last(h), out, errOut)
		}
	}
	expect("current context", a, "tok-a")
	t.Setenv(EnvHub, envHub.URL)
	expect("OUTPOST_HUB over the current context (its token kept)", envHub, "tok-a")
	t.Setenv(EnvToken, "tok-env")
	expect("OUTPOST_TOKEN over the current context", envHub, "tok-env")
	expect("--context over the environment", b, "tok-b", "--context", "b")
	expect("--hub and --token over --context", flagHub, "tok-flag", "--context", "b", "--hub", flagHub.URL, "--token", "tok-flag")
	t.Setenv(EnvHub, "")
	t.Setenv(EnvToken, "")
	if code, out, errOut := run("config", "use-context", "b"); code != 0 || !strings.Contains(out, `"b"`) {
		t.Fatalf("use-context: exit %d\n%s%s", code, out, errOut)
	}
	expect("use-context b", b, "tok-b")
	if code, out, _ := run("config", "current-context"); code != 0 || out != "b\n" {
		t.Fatalf("current-context: exit %d %q", code, out)
	}
	if code, _, errOut := run("model", "list", "--context", "nope"); code != ExitUsage || !strings.Contains(errOut, `"nope"`) {
		t.Fatalf("--context nope: exit %d %s", code, errOut)
	}
	if code, _, _ := run("config", "use-context", "nope"); code != ExitFailure {
		t.Fatalf("use-context nope: exit %d", code)
	}
	st, err := os.Stat(os.Getenv(EnvConfig))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("config file (holds tokens) must be 0600: %v %v", st.Mode(), err)
	}
}

// TestSchemelessHub: 127.0.0.1:PORT means http://; another scheme is
// refused with a clear message.
func TestSchemelessHub(t *testing.T) {
	isolate(t)
	hub := newFakeHub(t, map[string]func() any{"GET /v1/devices": twoDevices})
	if code, out, errOut := run("device", "list", "--hub", strings.TrimPrefix(hub.URL, "http://")); code != 0 || !strings.Contains(out, "pump-1") {
		t.Fatalf("scheme-less --hub: exit %d\n%s%s", code, out, errOut)
	}
	code, _, errOut := run("device", "list", "--hub", "ftp://hub:21")
	if code != ExitUsage || !strings.Contains(errOut, "want http://HOST:PORT or https://HOST:PORT") || strings.Contains(errOut, "parse") {
		t.Fatalf("ftp hub: exit %d, %s", code, errOut)
	}
	// A bad hub holds up no offline command.
	if code, out, errOut := run("keys", "show", "--hub", "ftp://hub:21", filepath.Join(t.TempDir(), "none.json")); code != ExitFailure || strings.Contains(errOut, "HOST:PORT") {
		t.Fatalf("keys show with a bad hub: exit %d\n%s%s", code, out, errOut)
	}
}

// TestRolloutSpecChecked: rates outside [0, 1] are refused before the hub
// is asked, naming the flag.
func TestRolloutSpecChecked(t *testing.T) {
	isolate(t)
	hub := newFakeHub(t, nil)
	for _, args := range [][]string{{"--max-error-rate", "2"}, {"--min-healthy", "-0.5"}, {"--split", "1.5", "--shadow", "1m"}, {"--min-agreement", "3"}} {
		code, _, errOut := run(append([]string{"--hub", hub.URL, "rollout", "start", "bearing", "2"}, args...)...)
		if code != ExitUsage || !strings.Contains(errOut, args[0]) {
			t.Errorf("rollout start %v: exit %d, %s", args, code, errOut)
		}
	}
	if calls := hub.Calls(); len(calls) != 0 {
		t.Errorf("a refused spec reached the hub: %v", calls)
	}
}

// TestRolloutStartSendsDeviceBudgets: --max-latency-ms and --max-rss-mb
// reach the hub as the rollout's performance gates, which travel to each
// device's self-test; a negative budget is refused before the hub is asked.
func TestRolloutStartSendsDeviceBudgets(t *testing.T) {
	isolate(t)
	var got api.Spec
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/v1/rollouts" || json.NewDecoder(r.Body).Decode(&got) != nil {
			http.Error(w, "unexpected "+r.Method+" "+r.URL.Path, http.StatusBadRequest)
			return
		}
		json.NewEncoder(w).Encode(api.Rollout{ID: "r9", Spec: got})
	}))
	defer srv.Close()
	code, out, errOut := run("--hub", srv.URL, "rollout", "start", "bearing", "4", "--max-latency-ms", "2.5", "--max-rss-mb", "40", "--max-latency-factor", "1.5")
	if code != 0 || !strings.Contains(out, "rollout r9 started") {
		t.Fatalf("rollout start with budgets: exit %d\n%s%s", code, out, errOut)
	}
	if g := got.Gates; g.MaxLatencyMS != 2.5 || g.MaxRSSMB != 40 || g.MaxLatencyFactor != 1.5 {
		t.Fatalf("gates sent %+v, want max_latency_ms 2.5, max_rss_mb 40, max_latency_factor 1.5", g)
	}
	if code, _, errOut := run("--hub", srv.URL, "rollout", "start", "bearing", "4", "--max-rss-mb", "-1"); code != ExitUsage || !strings.Contains(errOut, "--max-rss-mb") {
		t.Fatalf("--max-rss-mb -1: exit %d, %s", code, errOut)
	}
}

// TestStagedRollback: --staged undoes a completed rollout as a new
// rollout of the version its devices ran before, with its selector,
// waves, bake and gates; an active rollout, or devices that came from
// different versions, are refused with what to do instead.
func TestStagedRollback(t *testing.T) {
	isolate(t)
	done := api.Rollout{ID: "r5", State: api.Completed, Spec: api.Spec{Model: "bearing", Version: 4, Selector: map[string]string{"site": "north"},
		Waves: []api.Wave{{Devices: 1}, {Percent: 100}}, Bake: api.Duration(10 * time.Minute), Gates: api.Gates{MinHealthy: 1, MaxErrorRate: 0.02, MaxLatencyFactor: 2}},
		Devices: map[string]*api.Device{"pump-1": {From: 3, Phase: "committed"}, "pump-2": {From: 3, Phase: "committed"}}}
	active := done
	active.ID, active.State = "r6", api.Running
	mixed := done
	mixed.ID, mixed.Devices = "r7", map[string]*api.Device{"pump-1": {From: 3, Phase: "committed"}, "pump-2": {From: 2, Phase: "committed"}}
	fresh := done
	fresh.ID, fresh.Devices = "r9", map[string]*api.Device{"pump-1": {From: 3, Phase: "committed"}, "pump-3": {Phase: "committed"}}
	older := done
	older.ID, older.Spec.Model = "r10", "health"
	var mu sync.Mutex
	var posted []api.Spec
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method + " " + r.URL.Path {
		case "GET /v1/rollouts/r5":
			json.NewEncoder(w).Encode(done)
		case "GET /v1/rollouts/r6":
			json.NewEncoder(w).Encode(active)
		case "GET /v1/rollouts/r7":
			json.NewEncoder(w).Encode(mixed)
		case "GET /v1/rollouts/r9":
			json.NewEncoder(w).Encode(fresh)
		case "GET /v1/rollouts/r10":
			json.NewEncoder(w).Encode(older)
		case "GET /v1/models/bearing":
			json.NewEncoder(w).Encode([]api.ModelVersion{{Name: "bearing", Version: 3, Stage: "archived"}, {Name: "bearing", Version: 4, Stage: "production"}})
		case "GET /v1/models/health":
			json.NewEncoder(w).Encode([]api.ModelVersion{{Name: "health", Version: 4, Stage: "archived"}, {Name: "health", Version: 5, Stage: "production"}})
		case "POST /v1/rollouts":
			var s api.Spec
			json.NewDecoder(r.Body).Decode(&s)
			mu.Lock()
			posted = append(posted, s)
			mu.Unlock()
			json.NewEncoder(w).Encode(api.Rollout{ID: "r8", Spec: s, State: api.Running})
		default:
			http.Error(w, `{"error":"unexpected"}`, http.StatusNotFound)
		}
	}))
	defer srv.Close()
	code, out, errOut := run("--hub", srv.URL, "rollout", "rollback", "r5", "--staged")
	if code != 0 || !strings.Contains(out, "rollout r8 started: bearing v3 back on site=north, waves 1,100%") {
		t.Fatalf("rollback --staged: exit %d\n%s%s", code, out, errOut)
	}
	if len(posted) != 1 {
		t.Fatalf("%d rollouts started, want 1", len(posted))
	}
	want := done.Spec
	want.Version = 3
	if got := posted[0]; !reflect.DeepEqual(got, want) {
		t.Fatalf("staged rollback started %+v, want %+v", got, want)
	}
	for id, msg := range map[string]string{"r6": "rollout rollback r6 without --staged", "r7": "v2 (1 devices), v3 (1 devices)",
		"r9": "on 1 devices that ran no version of it before", "r10": "production is v5 now"} {
		if code, _, errOut := run("--hub", srv.URL, "rollout", "rollback", id, "--staged"); code != ExitFailure || !strings.Contains(errOut, msg) {
			t.Errorf("rollback %s --staged: exit %d, %s (want %q)", id, code, errOut, msg)
		}
	}
	if len(posted) != 1 {
		t.Errorf("a refused staged rollback started a rollout: %+v", posted[1:])
	}
}

// TestExitCodesAndMessages: usage 2, failure 1, clean messages.
func TestExitCodesAndMessages(t *testing.T) {
	isolate(t)
	aborted := rollout.Rollout{ID: "r2", Spec: rollout.Spec{Model: "bearing", Version: 3, Waves: []rollout.Wave{{Devices: 1}}}, State: rollout.Aborted, Reason: "aborted: by the operator"}
	hub := newFakeHub(t, map[string]func() any{
		"GET /v1/rollouts/r2": func() any { return aborted },
		"GET /v1/rollouts":    func() any { return []rollout.Rollout{aborted} },
	})
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"nonsense"}, ExitUsage, "unknown command"},
		{[]string{"device", "bogus"}, ExitUsage, "unknown command"},
		{[]string{"device", "list", "--no-such-flag"}, ExitUsage, "--no-such-flag"},
		{[]string{"device", "token", "--ttl", "banana"}, ExitUsage, `"banana" for "--ttl" flag: parse error: want a duration`},
		{[]string{"device", "revoke"}, ExitUsage, "device revoke ID"},
		{[]string{"device", "revoke", "pump-9"}, ExitFailure, "404"},
		{[]string{"rollout", "status", "r2", "--watch", "--interval", "10ms"}, ExitFailure, "rollout r2 aborted: by the operator"},
	} {
		code, out, errOut := run(append([]string{"--hub", hub.URL}, tc.args...)...)
		if code != tc.code || !strings.Contains(errOut, tc.want) || strings.Contains(errOut+out, "aborted: aborted") {
			t.Errorf("%v: exit %d (want %d), stderr %q (want %q)", tc.args, code, tc.code, errOut, tc.want)
		}
	}
	code, out, _ := run("--hub", hub.URL, "rollout", "status", "r2")
	if code != 0 || strings.Contains(out, "map[") || !strings.Contains(out, "bearing v3 on every device") {
		t.Errorf("rollout status r2: exit %d\n%s", code, out)
	}
	code, out, _ = run("--hub", hub.URL, "rollout", "list", "-o", "json")
	var list []rollout.Rollout
	if code != 0 || json.Unmarshal([]byte(out), &list) != nil || len(list) != 1 {
		t.Errorf("rollout list -o json: exit %d\n%s", code, out)
	}
	if code, out, _ := run("--version"); code != 0 || !strings.Contains(out, "outpostctl") {
		t.Errorf("--version: exit %d %q", code, out)
	}
}

// TestCompletion: cobra writes completion scripts for each shell.
func TestCompletion(t *testing.T) {
	isolate(t)
	for _, sh := range []string{"bash", "zsh", "fish", "powershell"} {
		if code, out, errOut := run("completion", sh); code != 0 || !strings.Contains(out, "outpostctl") {
			t.Errorf("completion %s: exit %d %s", sh, code, errOut)
		}
	}
}

// TestWatchListUntilInterrupted: --watch on a list prints again on change
// and ends cleanly when the context ends.
func TestWatchListUntilInterrupted(t *testing.T) {
	isolate(t)
	var n atomic.Int32
	hub := newFakeHub(t, map[string]func() any{"GET /v1/devices": func() any {
		devs := twoDevices().([]state.Device)
		if n.Add(1) > 2 {
			devs = devs[:1]
		}
		return devs
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	var out, errb strings.Builder
	code := Main(ctx, []string{"device", "list", "-w", "--interval", "20ms", "--hub", hub.URL}, &out, &errb)
	if code != 0 || strings.Count(out.String(), "DEVICE") != 2 || n.Load() < 4 {
		t.Fatalf("device list --watch: exit %d after %d polls\n%s%s", code, n.Load(), out.String(), errb.String())
	}
}

// TestWatchInterruptedMidRequest: an interrupt that lands while a poll is
// in flight ends the watch as cleanly as one between polls (it used to
// exit 1 with "context deadline exceeded").
func TestWatchInterruptedMidRequest(t *testing.T) {
	isolate(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var n atomic.Int32
	hub := newFakeHub(t, map[string]func() any{"GET /v1/devices": func() any {
		if n.Add(1) == 2 {
			cancel() // the interrupt arrives while this answer is pending
			time.Sleep(200 * time.Millisecond)
		}
		return twoDevices()
	}})
	var out, errb strings.Builder
	code := Main(ctx, []string{"device", "list", "-w", "--interval", "1ms", "--hub", hub.URL}, &out, &errb)
	if code != 0 || strings.Count(out.String(), "DEVICE") != 1 || errb.Len() != 0 {
		t.Fatalf("device list --watch interrupted mid-request: exit %d\n%s%s", code, out.String(), errb.String())
	}
}

// TestInspectOutputFormats: model inspect takes -o json|yaml beside --json.
func TestInspectOutputFormats(t *testing.T) {
	isolate(t)
	dir := writePackage(t)
	var viaJSON, viaO map[string]any
	code, out, errOut := run("model", "inspect", dir, "--json")
	if code != 0 || json.Unmarshal([]byte(out), &viaJSON) != nil {
		t.Fatalf("--json: exit %d\n%s%s", code, out, errOut)
	}
	code, out, _ = run("model", "inspect", "-o", "json", dir)
	if code != 0 || json.Unmarshal([]byte(out), &viaO) != nil || len(viaO) != len(viaJSON) {
		t.Fatalf("-o json: exit %d\n%s", code, out)
	}
	var viaYAML map[string]any
	code, out, _ = run("model", "inspect", dir, "--output", "yaml")
	if code != 0 || yaml.Unmarshal([]byte(out), &viaYAML) != nil || len(viaYAML) != len(viaJSON) {
		t.Fatalf("-o yaml: exit %d\n%s", code, out)
	}
	if code, _, _ := run("model", "inspect", dir, "-o", "xml"); code != ExitUsage {
		t.Fatalf("-o xml: exit %d", code)
	}
}

// TestRolloutRollback: rollout rollback ID posts the rollback and says how
// many devices were sent back; following the rolled-back rollout then
// ends in a failure whose message does not repeat the state.
func TestRolloutRollback(t *testing.T) {
	isolate(t)
	back := rollout.Rollout{ID: "r3", Spec: rollout.Spec{Model: "bearing", Version: 3, Waves: []rollout.Wave{{Percent: 100}}}, State: rollout.RolledBack,
		Reason: "rolled back by admin", Devices: map[string]*rollout.Device{"pump-1": {From: 2, Phase: "committed", Reverted: true}, "pump-2": {From: 2, Phase: "committed", Reverted: true}}}
	hub := newFakeHub(t, map[string]func() any{
		"POST /v1/rollouts/r3/rollback": func() any { return back },
		"GET /v1/rollouts/r3":           func() any { return back },
	})
	code, out, errOut := run("--hub", hub.URL, "rollout", "rollback", "r3")
	if code != 0 || !strings.Contains(out, "rollout r3 is rolled_back: 2 devices sent back") {
		t.Fatalf("rollout rollback r3: exit %d\n%s%s", code, out, errOut)
	}
	if calls := hub.Calls(); len(calls) != 1 || !strings.HasPrefix(calls[0], "POST /v1/rollouts/r3/rollback") {
		t.Fatalf("calls %v, want one POST /v1/rollouts/r3/rollback", calls)
	}
	code, _, errOut = run("--hub", hub.URL, "rollout", "status", "r3", "--watch", "--interval", "10ms")
	if code != ExitFailure || !strings.Contains(errOut, "rollout r3 rolled_back: by admin") || strings.Contains(errOut, "rolled back") {
		t.Fatalf("rollout status r3 --watch: exit %d, stderr %q; want %q", code, errOut, "rollout r3 rolled_back: by admin")
	}
	if code, _, errOut := run("--hub", hub.URL, "rollout", "rollback"); code != ExitUsage || !strings.Contains(errOut, "rollout rollback ID") {
		t.Fatalf("rollout rollback without ID: exit %d, %q", code, errOut)
	}
}

// TestAgentPublishSendsABinary: the build goes up as
// application/octet-stream, as the hub's OpenAPI document says (it was
// labelled application/json).
func TestAgentPublishSendsABinary(t *testing.T) {
	isolate(t)
	var media, query string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		media, query = r.Header.Get("Content-Type"), r.URL.RawQuery
		w.WriteHeader(http.StatusCreated)
		json.NewEncoder(w).Encode(api.AgentPublished{Target: "agents/arm64/7", Build: 7, Arch: "arm64"})
	}))
	defer srv.Close()
	bin := filepath.Join(t.TempDir(), "outpost-agent")
	if err := os.WriteFile(bin, []byte("\x7fELF..."), 0o755); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := run("--hub", srv.URL, "agent", "publish", bin, "--build", "7", "--arch", "arm64")
	if code != 0 || !strings.Contains(out, "for arm64 as agents/arm64/7") {
		t.Fatalf("agent publish: exit %d\n%s%s", code, out, errOut)
	}
	if media != "application/octet-stream" || !strings.Contains(query, "build=7") {
		t.Fatalf("sent Content-Type %q, query %q; want application/octet-stream and build=7", media, query)
	}
}
