package pipeline

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/agent/infer"
	"github.com/outpost-edge/outpost/hub"
	"github.com/outpost-edge/outpost/hub/rollout"
	"github.com/outpost-edge/outpost/models/goengine"
	"github.com/outpost-edge/outpost/models/manifest"
	"github.com/outpost-edge/outpost/models/onnx"
	"github.com/outpost-edge/outpost/sync/state"
	"github.com/outpost-edge/outpost/test/kafkatest"
	"github.com/outpost-edge/outpost/test/service"
	"github.com/outpost-edge/outpost/test/testenv"
)

// bearing builds version v of the "bearing" model over vibration mean and
// max. kind "nan" (a linear score) overflows to inf-inf on real data (its golden vector, at
// zero, is fine); "slow" is a wide MLP, far slower than the logistic ones;
// "contrary" flags what the others do not.
func bearing(t *testing.T, v int64, kind string) string {
	t.Helper()
	var model []byte
	var err error
	feats := []manifest.Feature{{Field: "vibration", Agg: "mean", Std: 1}, {Field: "vibration", Agg: "max", Std: 1}}
	switch kind {
	case "nan":
		// No sigmoid: ONNX Runtime's clamps a NaN into range.
		model, err = onnx.MLP([]onnx.Dense{{W: [][]float32{{3e38, -3e38}}, B: []float32{0}}}, onnx.MLPOptions{})
		feats[0].Std, feats[1].Std = 1e-3, 1e-3
	case "slow":
		rng := rand.New(rand.NewPCG(uint64(v), 1))
		layer := func(in, out int) onnx.Dense {
			d := onnx.Dense{W: make([][]float32, out), B: make([]float32, out)}
			for i := range d.W {
				d.W[i] = make([]float32, in)
				for j := range d.W[i] {
					d.W[i][j] = float32(rng.NormFloat64() / 30)
				}
			}
			return d
		}
		model, err = onnx.MLP([]onnx.Dense{layer(2, 768), layer(768, 768), layer(768, 768), layer(768, 1)}, onnx.MLPOptions{Hidden: "Relu", Output: "Sigmoid"})
	case "contrary": // scores below the threshold where the others score above
		model, err = onnx.Logistic([][]float32{{0.5, -0.25}}, []float32{-5})
	default:
		model, err = onnx.Logistic([][]float32{{0.5, -0.25}}, []float32{float32(v) / 10})
	}
	if err != nil {
		t.Fatal(err)
	}
	eng, err := goengine.Load(model)
	if err != nil {
		t.Fatal(err)
	}
	out, err := eng.Run([]float32{0, 0}, 2)
	if err != nil {
		t.Fatal(err)
	}
	m := &manifest.Manifest{Name: "bearing", Version: v, Parent: v - 1, Task: "anomaly", Features: feats,
		Outputs: manifest.Outputs{Threshold: 0.5},
		Golden:  []manifest.Golden{{Input: []float32{0, 0}, Output: out, Tolerance: 1e-4}}}
	dir := t.TempDir()
	if err := manifest.Write(dir, m, model); err != nil {
		t.Fatal(err)
	}
	return dir
}

// supervised is an agent process restarted whenever it dies, as systemd's
// Restart=always does on a device.
type supervised struct {
	id      string
	dir     string
	mu      sync.Mutex
	cmd     *exec.Cmd
	stopped bool
	starts  int
	done    chan struct{}
}

func superviseAgent(t *testing.T, bin, id, conf string, env []string) *supervised {
	s := &supervised{id: id, dir: filepath.Dir(conf), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for {
			s.mu.Lock()
			if s.stopped {
				s.mu.Unlock()
				return
			}
			cmd := exec.Command(bin, "--config", conf)
			cmd.Env = append(os.Environ(), env...)
			logf, _ := os.OpenFile(filepath.Join(s.dir, "agent.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
			cmd.Stdout, cmd.Stderr = logf, logf
			service.DiesWithTest(cmd)
			err := cmd.Start()
			s.cmd = cmd
			s.starts++
			s.mu.Unlock()
			if err != nil {
				t.Errorf("start agent %s: %v", id, err)
				return
			}
			cmd.Wait()
			logf.Close()
			time.Sleep(200 * time.Millisecond)
		}
	}()
	t.Cleanup(s.stop)
	return s
}

func (s *supervised) stop() {
	s.mu.Lock()
	if !s.stopped {
		s.stopped = true
		if s.cmd != nil && s.cmd.Process != nil {
			s.cmd.Process.Signal(syscall.SIGTERM)
		}
	}
	s.mu.Unlock()
	<-s.done
}

// startCount is how many times the supervisor has started the agent.
func (s *supervised) startCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.starts
}

func (s *supervised) log() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "agent.log"))
	return string(b)
}

// rolloutHub starts a hub whose rollout controller looks every 200 ms.
func rolloutHub(t *testing.T) (*hub.Hub, *hub.Config, string) {
	cfg := hubConfig(t, kafkatest.Brokers(t), t.TempDir())
	cfg.Updates.RolloutInterval = 200 * time.Millisecond
	h := startHub(t, cfg)
	t.Cleanup(h.Close)
	return h, cfg, "http://" + h.HTTPAddr()
}

// fleetAgentConfig writes the config of one device running bearing v1
// from a slot directory, taking updates from the hub.
func fleetAgentConfig(t *testing.T, h *hub.Hub, hubDir, id string, creds state.Credentials, v1 string, seed int) string {
	t.Helper()
	dir := t.TempDir()
	models := filepath.Join(dir, "models", "bearing")
	mj, _ := os.ReadFile(filepath.Join(v1, manifest.ManifestFile))
	model, _ := os.ReadFile(filepath.Join(v1, manifest.ModelFile))
	if err := manifest.Write(filepath.Join(models, infer.Active), mustManifest(t, mj), model); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "agent.yaml")
	yaml := fmt.Sprintf(`
device: {id: %s}
data_dir: %s
hub: {url: "tcp://%s", username: %s, password: %s}
report: {interval: 1s}
uplink: {ack_timeout: 1s}
metrics: {listen: ""}
log: {level: info}
runtime: {onnxruntime_library: %s}
updates: {url: "http://%s/tuf", trusted_root: %s, probation: 3s}
pipelines:
  - name: health
    source: {type: simulator, simulator: {sensors: 4, rate: 100, seed: %d}}
    decode: {key_field: sensor, time_field: ts, fields: [vibration]}
    window: {kind: tumbling, size: 200ms, max_out_of_order: 50ms}
    aggregations: [mean, max]
    model: {dir: %s}
`, id, filepath.Join(dir, "data"), h.MQTTAddr(), creds.Username, creds.Password, testenv.ORTLibrary(t),
		h.HTTPAddr(), filepath.Join(hubDir, "tuf", "1.root.json"), seed, models)
	if err := os.WriteFile(conf, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return conf
}

func mustManifest(t *testing.T, raw []byte) *manifest.Manifest {
	m, err := manifest.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// devices reads the hub's device list.
func devices(t *testing.T, url string) map[string]state.Device {
	t.Helper()
	resp, err := http.Get(url + "/v1/devices")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var list []state.Device
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		t.Fatal(err)
	}
	out := map[string]state.Device{}
	for _, d := range list {
		out[d.ID] = d
	}
	return out
}

func runningVersion(d state.Device) int64 {
	if d.Reported == nil {
		return 0
	}
	for _, m := range d.Reported.Models {
		if m.Model == "bearing" {
			return m.Version
		}
	}
	return 0
}

// waitFleet waits until every device reports running bearing version v.
func waitFleet(t *testing.T, url string, ids []string, v int64, agents []*supervised) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		devs := devices(t, url)
		ok := true
		for _, id := range ids {
			if runningVersion(devs[id]) != v {
				ok = false
			}
		}
		if ok {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, a := range agents {
		t.Logf("agent %s log:\n%s", a.id, tail(a.log(), 3000))
	}
	t.Fatalf("devices not all on bearing v%d within 60s: %+v", v, devices(t, url))
}

// waitHealth waits up to 30 s for a report of device id whose pipelines
// show windows scored with timed calls (p50 > 0, p99 ≥ p50, rows per
// call ≥ 1) and whose uplink is connected, with an ack from the hub in the
// minute before the report.
func waitHealth(t *testing.T, url, id string) {
	t.Helper()
	var r *state.Reported
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		r = devices(t, url)[id].Reported
		if r == nil || len(r.Pipelines) == 0 || r.Uplink == nil {
			continue
		}
		p, u := r.Pipelines[0], r.Uplink
		if p.Model == "bearing" && p.Inferences > 0 && p.Events > 0 && p.LatencyCalls > 0 && p.LatencyP50US > 0 && p.LatencyP99US >= p.LatencyP50US && p.RowsPerCall >= 1 &&
			u.Connected && strings.HasPrefix(u.Broker, "tcp://") && u.LastAckAt != nil && r.ReportedAt.Sub(*u.LastAckAt) < time.Minute {
			t.Logf("%s reports %+v, uplink %+v", id, p, *u)
			return
		}
	}
	if r != nil {
		t.Fatalf("%s: no report with live health within 30 s; last pipelines %+v, uplink %+v", id, r.Pipelines, r.Uplink)
	}
	t.Fatalf("%s: never reported", id)
}

func getRollout(t *testing.T, url, id string) rollout.Rollout {
	t.Helper()
	resp, err := http.Get(url + "/v1/rollouts/" + id)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r rollout.Rollout
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatal(err)
	}
	return r
}

// TestRolloutUpdatesTheFleetAndHaltsOnBadModels runs three agent processes
// (real MQTT, real TUF clients, ONNX Runtime) under a supervisor. A good
// version rolls out in two waves; then a model that outputs NaN, one with
// far more latency, and one that crashes the agent each halt the rollout
// at the canary, which goes back to the previous model on its own while
// the other devices are never touched; and one that disagrees with the
// running model in a shadow phase is refused before any switch.
func TestRolloutUpdatesTheFleetAndHaltsOnBadModels(t *testing.T) {
	h, cfg, url := rolloutHub(t)
	pkgs := map[int64]string{1: bearing(t, 1, ""), 2: bearing(t, 2, ""), 3: bearing(t, 3, "nan"), 4: bearing(t, 4, "slow"), 5: bearing(t, 5, ""), 6: bearing(t, 6, "contrary")}
	for v := int64(1); v <= 6; v++ {
		if code, out := outpostctl(t, url, "model", "push", pkgs[v]); code != 0 {
			t.Fatalf("push v%d: %s", v, out)
		}
	}
	bin := buildAgent(t)
	ids := []string{"lab-1", "lab-2", "lab-3"}
	var agents []*supervised
	for i, id := range ids {
		creds, err := h.Registry().Add(context.Background(), id, map[string]string{"site": "lab"})
		if err != nil {
			t.Fatal(err)
		}
		conf := fleetAgentConfig(t, h, cfg.DataDir, id, creds, pkgs[1], i+1)
		agents = append(agents, superviseAgent(t, bin, id, conf, []string{"OUTPOST_TEST_CRASH_MODEL=bearing:5"}))
	}
	waitFleet(t, url, ids, 1, agents)

	// A good version: a canary of one, then everyone.
	code, out := outpostctl(t, url, "rollout", "start", "bearing", "2", "--select", "site=lab", "--waves", "1,100%", "--bake", "1s", "--wave-timeout", "60s", "--watch")
	if code != 0 || !strings.Contains(out, "completed") {
		for _, a := range agents {
			t.Logf("agent %s log:\n%s", a.id, tail(a.log(), 3000))
		}
		t.Fatalf("rollout of v2: exit %d:\n%s", code, out)
	}
	t.Logf("rollout of v2:\n%s", out)
	waitFleet(t, url, ids, 2, agents)

	// What the fleet manager sees of one device: what it runs, and its
	// timeline with the update's phases (stored by the hub).
	code, out = outpostctl(t, url, "device", "show", ids[0], "-o", "json")
	var detail state.DeviceDetail
	if err := json.Unmarshal([]byte(out), &detail); code != 0 || err != nil {
		t.Fatalf("device show -o json: exit %d, %v:\n%s", code, err, out)
	}
	phases := map[string]bool{}
	for _, e := range detail.Timeline {
		if e.Model == "bearing" {
			phases[e.Phase] = true
		}
	}
	if detail.Device.ID != ids[0] || detail.Device.Reported == nil || !phases[state.PhaseDownloading] || !phases[state.PhaseCommitted] {
		t.Fatalf("device show %s: %s with %d timeline entries, bearing phases %v, want downloading to committed:\n%s", ids[0], detail.Device.ID, len(detail.Timeline), phases, out)
	}
	// Its live health: the pipeline has scored windows, with call
	// latencies, and the uplink is up with the hub acking.
	waitHealth(t, url, ids[0])
	if code, out = outpostctl(t, url, "device", "show", ids[0]); code != 0 || !strings.Contains(out, "PIPELINE") || !strings.Contains(out, "bearing v2") || !strings.Contains(out, "committed") ||
		!strings.Contains(out, "latency p50/p99") || !strings.Contains(out, "connected to tcp://") {
		t.Fatalf("device show %s: exit %d:\n%s", ids[0], code, out)
	}
	t.Logf("device show %s:\n%s", ids[0], out)
	if code, out = outpostctl(t, url, "device", "show", "no-such-device"); code == 0 || !strings.Contains(out, "404") {
		t.Fatalf("device show of an unknown device: exit %d:\n%s", code, out)
	}

	for _, bad := range []struct {
		version int64
		why     string
		flags   []string
	}{{3, "non-finite", nil}, {4, "latency", nil}, {5, "crash loop", nil},
		// Never switched to: it disagrees with v2 while it runs in shadow,
		// serving a quarter of the windows.
		{6, "agreement", []string{"--shadow", "2s", "--split", "0.25", "--min-agreement", "0.9"}}} {
		args := append([]string{"rollout", "start", "bearing", fmt.Sprint(bad.version), "--select", "site=lab", "--waves", "1,100%", "--bake", "1s", "--wave-timeout", "60s", "--watch"}, bad.flags...)
		code, out := outpostctl(t, url, args...)
		if code == 0 || !strings.Contains(out, "halted") || !strings.Contains(out, bad.why) {
			_, status := outpostctl(t, url, "rollout", "status")
			t.Log(status)
			for _, id := range ids {
				t.Logf("%s: %+v", id, devices(t, url)[id].Reported.Updates)
			}
			t.Fatalf("rollout of bad v%d: exit %d, want halted for %q:\n%s", bad.version, code, bad.why, out)
		}
		t.Logf("rollout of bad v%d:\n%s", bad.version, out)
		var list []rollout.Rollout
		resp, err := http.Get(url + "/v1/rollouts")
		if err != nil {
			t.Fatal(err)
		}
		json.NewDecoder(resp.Body).Decode(&list)
		resp.Body.Close()
		r := getRollout(t, url, list[0].ID)
		if r.State != rollout.Halted || len(r.Devices) != 1 {
			t.Fatalf("v%d rollout %s with %d devices, want halted at the canary", bad.version, r.State, len(r.Devices))
		}
		// Everyone ends on v2; only the canary ever saw the bad version.
		waitFleet(t, url, ids, 2, agents)
		devs := devices(t, url)
		for _, id := range ids {
			u, ok := devs[id].Reported.Updates["bearing"]
			_, canary := r.Devices[id]
			if canary != (ok && u.To == bad.version) {
				t.Fatalf("device %s (canary %v) last update %+v", id, canary, u)
			}
			want := state.PhaseRolledBack
			if bad.flags != nil {
				want = state.PhaseFailed // refused before the switch
			}
			// The slow model is refused at self-test now, when its
			// measured p50 is over max_latency_factor there (it is, by
			// far, unless the machine is very busy); else probation
			// rolls it back.
			if bad.version == 4 && canary && u.Phase == state.PhaseFailed {
				want = state.PhaseFailed
			}
			if canary && u.Phase != want {
				t.Fatalf("canary %s: %+v, want %s", id, u, want)
			}
		}
	}
}

// TestKill9AtEveryUpdateStep updates eight agent processes at once, each
// killed with SIGKILL (OUTPOST_TEST_CRASHPOINT) at a different step of the
// update state machine and restarted by its supervisor. Every restart
// must find a complete model to load (an agent that cannot load its model
// exits, and the rollout would never finish), and every device must end
// the update committed on the new version.
func TestKill9AtEveryUpdateStep(t *testing.T) {
	h, cfg, url := rolloutHub(t)
	v1, v2 := bearing(t, 1, ""), bearing(t, 2, "")
	for _, p := range []string{v1, v2} {
		if code, out := outpostctl(t, url, "model", "push", p); code != 0 {
			t.Fatal(out)
		}
	}
	bin := buildAgent(t)
	points := []string{"downloading", "verifying", "installing", "selftest", "shadow", "switching", "switched", "probation"}
	var ids []string
	var agents []*supervised
	for i, point := range points {
		id := "crash-" + point
		creds, err := h.Registry().Add(context.Background(), id, map[string]string{"fleet": "crash"})
		if err != nil {
			t.Fatal(err)
		}
		conf := fleetAgentConfig(t, h, cfg.DataDir, id, creds, v1, i+1)
		ids = append(ids, id)
		// Seven agents restarting at once on two cores: latency says
		// nothing about the model here, so its gate stays out of the way.
		agents = append(agents, superviseAgent(t, bin, id, conf, []string{"OUTPOST_TEST_CRASHPOINT=" + point, "OUTPOST_AGENT_UPDATES_MAX_LATENCY_FACTOR=100"}))
	}
	waitFleet(t, url, ids, 1, agents)
	code, out := outpostctl(t, url, "rollout", "start", "bearing", "2", "--select", "fleet=crash", "--waves", "100%", "--wave-timeout", "90s", "--max-latency-factor", "100", "--shadow", "1s", "--watch")
	if code != 0 {
		for _, a := range agents {
			t.Logf("agent %s log:\n%s", a.id, tail(a.log(), 3000))
		}
		t.Fatalf("rollout: exit %d:\n%s", code, out)
	}
	waitFleet(t, url, ids, 2, agents)
	for i, a := range agents {
		log := a.log()
		if !strings.Contains(log, "test crash point reached") {
			t.Errorf("%s never reached its crash point", a.id)
		}
		a.mu.Lock()
		starts := a.starts
		a.mu.Unlock()
		if starts < 2 {
			t.Errorf("%s started %d times: the kill at %s did not happen", a.id, starts, points[i])
		}
		if strings.Contains(log, "level=ERROR") {
			t.Errorf("%s logged errors:\n%s", a.id, tail(log, 2000))
		}
	}
}
