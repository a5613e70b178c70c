package pipeline

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/hub/modelstore"
	"github.com/outpost-edge/outpost/hub/rollout"
	"github.com/outpost-edge/outpost/models/manifest"
	"github.com/outpost-edge/outpost/models/onnx"
	"github.com/outpost-edge/outpost/models/ort"
	"github.com/outpost-edge/outpost/sync/state"
	"github.com/outpost-edge/outpost/test/testenv"
)

// wideBearing is version v of the bearing model as a wide MLP,
// 2-1024-1024-1024-1: some two million multiply-adds a row.
func wideBearing(t *testing.T, v int64) (dir string, model []byte) {
	t.Helper()
	rng := rand.New(rand.NewPCG(uint64(v), 7))
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
	model, err := onnx.MLP([]onnx.Dense{layer(2, 1024), layer(1024, 1024), layer(1024, 1024), layer(1024, 1)}, onnx.MLPOptions{Hidden: "Relu", Output: "Sigmoid"})
	if err != nil {
		t.Fatal(err)
	}
	s, err := ort.NewSessionWith(model, ort.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	out, err := s.Run([]float32{0, 0}, 2)
	if err != nil {
		t.Fatal(err)
	}
	m := &manifest.Manifest{Name: "bearing", Version: v, Parent: v - 1, Task: "anomaly",
		Features: []manifest.Feature{{Field: "vibration", Agg: "mean", Std: 1}, {Field: "vibration", Agg: "max", Std: 1}},
		Outputs:  manifest.Outputs{Threshold: 0.5},
		Golden:   []manifest.Golden{{Input: []float32{0, 0}, Output: append([]float32(nil), out...), Tolerance: 1e-4}}}
	dir = t.TempDir()
	if err := manifest.Write(dir, m, model); err != nil {
		t.Fatal(err)
	}
	return dir, model
}

// p50US times model on ONNX Runtime at batch 1, as the agent runs it.
func p50US(t *testing.T, model []byte) float64 {
	t.Helper()
	s, err := ort.NewSessionWith(model, ort.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var ds []time.Duration
	for i := range 101 {
		start := time.Now()
		if _, err := s.Run([]float32{0, 0}, 2); err != nil {
			t.Fatal(err)
		}
		if i > 0 {
			ds = append(ds, time.Since(start))
		}
	}
	slices.Sort(ds)
	return float64(ds[len(ds)/2]) / 1e3
}

// pushAPI pushes a package through the hub's HTTP API.
func pushAPI(t *testing.T, url, dir string) {
	t.Helper()
	mj, err := os.ReadFile(filepath.Join(dir, manifest.ManifestFile))
	if err != nil {
		t.Fatal(err)
	}
	model, _ := os.ReadFile(filepath.Join(dir, manifest.ModelFile))
	body, _ := json.Marshal(modelstore.PushRequest{Manifest: mj, Model: model})
	resp, err := http.Post(url+"/v1/models", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		var b bytes.Buffer
		b.ReadFrom(resp.Body)
		t.Fatalf("push %s: %s %s", dir, resp.Status, b.String())
	}
}

func getJSON(t *testing.T, url string, v any) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if v != nil {
		json.NewDecoder(resp.Body).Decode(v)
	}
	return resp.StatusCode
}

// TestDeviceGateRefusesAModelOverTheDeviceBudget rolls out, to three agent
// processes, a model ten times slower than the device's budget: the
// rollout's max_latency_ms is a tenth of the latency the model has on
// this machine. The canary measures it at self-test, refuses it before
// the switch and reports the measurement; the rollout halts; the other
// devices are never touched; and the hub shows the cost by label.
func TestDeviceGateRefusesAModelOverTheDeviceBudget(t *testing.T) {
	if err := ort.Init(testenv.ORTLibrary(t)); err != nil {
		t.Fatal(err)
	}
	h, cfg, url := rolloutHub(t)
	v1 := bearing(t, 1, "")
	v2, model := wideBearing(t, 2)
	pushAPI(t, url, v1)
	pushAPI(t, url, v2)
	budgetMS := p50US(t, model) / 10 / 1e3
	t.Logf("v2 p50 here %.0f µs: budget max_latency_ms %.4f", budgetMS*1e4, budgetMS)

	bin := buildAgent(t)
	ids := []string{"gate-1", "gate-2", "gate-3"}
	var agents []*supervised
	for i, id := range ids {
		creds, err := h.Registry().Add(context.Background(), id, map[string]string{"fleet": "gate", "hw": "lab-" + runtime.GOARCH})
		if err != nil {
			t.Fatal(err)
		}
		conf := fleetAgentConfig(t, h, cfg.DataDir, id, creds, v1, i+1)
		agents = append(agents, superviseAgent(t, bin, id, conf, nil))
	}
	waitFleet(t, url, ids, 1, agents)

	spec := rollout.Spec{Model: "bearing", Version: 2, Selector: map[string]string{"fleet": "gate"},
		Waves: []rollout.Wave{{Devices: 1}, {Percent: 100}}, Bake: rollout.Duration(time.Second), WaveTimeout: rollout.Duration(60 * time.Second),
		Gates: rollout.Gates{MaxLatencyMS: budgetMS, MaxRSSMB: 4096}}
	body, _ := json.Marshal(spec)
	resp, err := http.Post(url+"/v1/rollouts", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	var r rollout.Rollout
	json.NewDecoder(resp.Body).Decode(&r)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("start rollout: %s", resp.Status)
	}
	deadline := time.Now().Add(60 * time.Second)
	for rollout.Active(r.State) && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
		r = getRollout(t, url, r.ID)
	}
	logs := func() {
		for _, a := range agents {
			t.Logf("agent %s log:\n%s", a.id, tail(a.log(), 40))
		}
	}
	if r.State != rollout.Halted || len(r.Devices) != 1 || !strings.Contains(r.Reason, "max_latency_ms") {
		logs()
		t.Fatalf("rollout %s (%s) with %d devices, want halted at the canary on max_latency_ms", r.State, r.Reason, len(r.Devices))
	}
	t.Logf("halted: %s", r.Reason)
	var canary string
	for id, d := range r.Devices {
		canary = id
		st := d.SelfTest
		if d.Phase != state.PhaseFailed || st == nil || st.Calls < 3 || st.LatencyP99US <= budgetMS*1e3 || st.ActiveLatencyP50US <= 0 {
			logs()
			t.Fatalf("canary %s: %+v, selftest %+v", id, d, st)
		}
		t.Logf("canary %s measured %+v", id, *st)
		if st.LatencyP50US < 3*budgetMS*1e3 {
			t.Errorf("canary measured p50 %.0f µs, not far over the budget %.0f µs", st.LatencyP50US, budgetMS*1e3)
		}
	}
	// Every device stays on v1; the canary never switched, the others
	// never saw v2 at all: no desired state, no update.
	time.Sleep(2 * time.Second)
	devs := devices(t, url)
	for _, id := range ids {
		d := devs[id]
		if v := runningVersion(d); v != 1 {
			t.Fatalf("%s runs v%d", id, v)
		}
		u, ok := d.Reported.Updates["bearing"]
		if id == canary {
			if !ok || u.To != 2 || u.Phase != state.PhaseFailed || u.SelfTest == nil || !strings.Contains(u.Reason, "self-test") {
				t.Fatalf("canary's update %+v", u)
			}
			if strings.Contains(agents[slices.Index(ids, id)].log(), "phase=switching") {
				t.Fatalf("canary switched:\n%s", tail(agents[slices.Index(ids, id)].log(), 40))
			}
			continue
		}
		if ok {
			t.Fatalf("%s, not the canary, has an update: %+v", id, u)
		}
		if code := getJSON(t, url+"/v1/devices/"+id+"/desired", nil); code != http.StatusNotFound {
			t.Fatalf("%s, not the canary, has a desired state (%d)", id, code)
		}
	}
	// The cost of v2 by hardware label, in the rollout and per model.
	var withCosts struct {
		ID    string         `json:"id"`
		Costs []rollout.Cost `json:"costs"`
	}
	getJSON(t, url+"/v1/rollouts/"+r.ID+"?by=hw", &withCosts)
	if withCosts.ID != r.ID || len(withCosts.Costs) != 1 || withCosts.Costs[0].Devices != 1 || withCosts.Costs[0].Refused != 1 ||
		withCosts.Costs[0].LatencyP99US.Max <= budgetMS*1e3 {
		t.Fatalf("rollout costs %+v", withCosts)
	}
	var mc struct {
		Classes []rollout.Cost `json:"classes"`
	}
	if code := getJSON(t, fmt.Sprintf("%s/v1/models/bearing/versions/2/costs?by=hw", url), &mc); code != http.StatusOK || len(mc.Classes) != 1 ||
		mc.Classes[0].Value != withCosts.Costs[0].Value {
		t.Fatalf("model costs %d %+v", code, mc)
	}
	t.Logf("costs by hw: %+v", mc.Classes)
}
