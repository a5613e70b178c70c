package pipeline

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/firmware/selfupdate"
	"github.com/outpost-edge/outpost/sync/state"
	"github.com/outpost-edge/outpost/sync/tuf"
	"github.com/outpost-edge/outpost/test/testenv"
)

// buildAgentAs compiles the agent stamped with a version and build number.
func buildAgentAs(t *testing.T, ver string, build int64) string {
	t.Helper()
	root, err := testenv.Root()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "outpost-agent")
	const mod = "github.com/outpost-edge/outpost/deploy/version"
	cmd := exec.Command("go", "build", "-ldflags", fmt.Sprintf("-X %s.Version=%s -X %s.Build=%d", mod, ver, mod, build), "-o", bin, "./agent/cmd/outpost-agent")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build agent %s: %v\n%s", ver, err, out)
	}
	return bin
}

// agentBuild is what a device reports about its agent.
func agentBuild(d state.Device) (build int64, ver string) {
	if d.Reported == nil {
		return 0, ""
	}
	for _, m := range d.Reported.Models {
		if m.Model == tuf.AgentModel {
			build = m.Version
		}
	}
	return build, d.Reported.AgentVersion
}

// TestAgentSelfUpdate: a device runs its factory build (1) under a
// supervisor standing in for systemd. Build 2 rolls out through the same
// TUF repository, state machine and rollout as models: installed into a
// slot, self-tested, switched to, restarted, committed after probation.
// Build 3 passes the self-test but crashes on start; the installed binary,
// which launches every start, counts its starts and rolls it back after
// max_boots, and the rollout halts.
func TestAgentSelfUpdate(t *testing.T) {
	h, cfg, url := rolloutHub(t)
	factory := buildAgentAs(t, "1.0.0", 1)
	build2 := buildAgentAs(t, "2.0.0", 2)
	crasher := build(t, "./test/pipeline/testdata/crashagent")

	creds, err := h.Registry().Add(context.Background(), "self-1", map[string]string{"site": "lab"})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "agent.yaml")
	yaml := fmt.Sprintf(`
device: {id: self-1}
data_dir: %s
hub: {url: "tcp://%s", username: %s, password: %s}
report: {interval: 1s}
uplink: {ack_timeout: 1s}
metrics: {listen: ""}
log: {level: info}
updates: {url: "http://%s/tuf", trusted_root: %s, probation: 2s, max_boots: 2, self_update: true}
pipelines:
  - name: health
    source: {type: simulator, simulator: {sensors: 2, rate: 50}}
    decode: {key_field: sensor, time_field: ts, fields: [vibration]}
    window: {kind: tumbling, size: 500ms, max_out_of_order: 50ms}
    aggregations: [mean]
`, filepath.Join(dir, "data"), h.MQTTAddr(), creds.Username, creds.Password, h.HTTPAddr(), filepath.Join(cfg.DataDir, "tuf", "1.root.json"))
	if err := os.WriteFile(conf, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	agent := superviseAgent(t, factory, "self-1", conf, nil)
	waitAgent := func(build int64, ver string) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for time.Now().Before(deadline) {
			if b, v := agentBuild(devices(t, url)["self-1"]); b == build && v == ver {
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
		t.Logf("agent log:\n%s", tail(agent.log(), 4000))
		t.Fatalf("device not on agent build %d (%s) within 60s: %+v", build, ver, devices(t, url)["self-1"].Reported)
	}
	waitAgent(1, "1.0.0")

	for b, bin := range map[int64]string{2: build2, 3: crasher} {
		if code, out := outpostctl(t, url, "agent", "publish", bin, "--build", fmt.Sprint(b), "--arch", "amd64"); code != 0 {
			t.Fatalf("publish build %d: %s", b, out)
		}
	}

	code, out := outpostctl(t, url, "rollout", "start", tuf.AgentModel, "2", "--select", "site=lab", "--waves", "1", "--bake", "1s", "--wave-timeout", "90s", "--watch")
	if code != 0 || !strings.Contains(out, "completed") {
		t.Logf("agent log:\n%s", tail(agent.log(), 4000))
		t.Fatalf("rollout of build 2: exit %d:\n%s", code, out)
	}
	waitAgent(2, "2.0.0")
	if u := devices(t, url)["self-1"].Reported.Updates[tuf.AgentModel]; u.Phase != state.PhaseCommitted || u.To != 2 {
		t.Fatalf("agent update %+v, want committed to build 2", u)
	}
	startsBefore := agent.startCount()

	code, out = outpostctl(t, url, "rollout", "start", tuf.AgentModel, "3", "--select", "site=lab", "--waves", "1", "--bake", "1s", "--wave-timeout", "90s", "--watch")
	if code == 0 || !strings.Contains(out, "halted") || !strings.Contains(out, "crash loop") {
		t.Logf("agent log:\n%s", tail(agent.log(), 4000))
		t.Fatalf("rollout of the crashing build 3: exit %d, want halted for a crash loop:\n%s", code, out)
	}
	waitAgent(2, "2.0.0")
	u := devices(t, url)["self-1"].Reported.Updates[tuf.AgentModel]
	if u.Phase != state.PhaseRolledBack || u.To != 3 || !strings.Contains(u.Reason, "crash loop") {
		t.Fatalf("agent update %+v, want build 3 rolled back for a crash loop", u)
	}
	// Two crashed starts of build 3 (max_boots 2); the third start runs build 2.
	if crashes := strings.Count(agent.log(), "this build crashes on start"); crashes != 2 {
		t.Fatalf("build 3 crashed %d times, want max_boots = 2", crashes)
	}
	st, err := (selfupdate.Slots{Dir: filepath.Join(dir, "data", "agent")}).Load()
	if err != nil || st.CurrentBuild != 2 || st.Phase != selfupdate.PhaseRolledBack {
		t.Fatalf("slot state %+v %v, want build 2 after a rollback", st, err)
	}
	t.Logf("self-update: build 2 committed; build 3 rolled back after %d supervised starts: %s", agent.startCount()-startsBefore, u.Reason)
}
