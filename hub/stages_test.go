package hub

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/hub/modelstore"
	"github.com/outpost-edge/outpost/hub/rollout"
	"github.com/outpost-edge/outpost/hub/trainer"
	"github.com/outpost-edge/outpost/models/goengine"
	"github.com/outpost-edge/outpost/models/manifest"
	"github.com/outpost-edge/outpost/models/onnx"
	"github.com/outpost-edge/outpost/sync/state"
	"github.com/outpost-edge/outpost/sync/tuf"
)

// stagesHub is a standalone hub that trains model "m" from pipeline "p",
// with its rollout controller ticked by the test only.
func stagesHub(t *testing.T) (*Hub, string) {
	t.Helper()
	cfg := Defaults()
	cfg.DataDir = t.TempDir()
	cfg.Broker.ServerName = "stages-test"
	cfg.Broker.NATSPort, cfg.Broker.MQTTPort = -1, -1
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.Log.Level = "warn"
	cfg.Updates.RolloutInterval = time.Minute
	cfg.Trainer.Models = []trainer.ModelConfig{{Model: "m", Pipeline: "p", LabelField: "anomaly.max"}}
	h, err := Start(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h, "http://" + h.HTTPAddr()
}

func pushVersion(t *testing.T, h *Hub, v int64) {
	t.Helper()
	if _, err := h.PushModel(context.Background(), modelPackage(t, v)); err != nil {
		t.Fatal(err)
	}
}

// modelPackage is version v of model "m": a logistic model over two
// features, with its golden vectors.
func modelPackage(t *testing.T, v int64) modelstore.PushRequest {
	t.Helper()
	model, err := onnx.Logistic([][]float32{{0.5, -0.25}}, []float32{float32(v) / 10})
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
	m := &manifest.Manifest{Name: "m", Version: v, Parent: v - 1, Task: "anomaly",
		Features: []manifest.Feature{{Field: "x", Agg: "mean", Std: 1}, {Field: "x", Agg: "max", Std: 1}},
		Outputs:  manifest.Outputs{Threshold: 0.5},
		Golden:   []manifest.Golden{{Input: []float32{0, 0}, Output: out, Tolerance: 1e-5}}}
	dir := t.TempDir()
	if err := manifest.Write(dir, m, model); err != nil {
		t.Fatal(err)
	}
	mj, err := os.ReadFile(filepath.Join(dir, manifest.ManifestFile))
	if err != nil {
		t.Fatal(err)
	}
	return modelstore.PushRequest{Manifest: mj, Model: model}
}

func stages(t *testing.T, h *Hub) string {
	t.Helper()
	vs, err := h.models.Versions(context.Background(), "m")
	if err != nil {
		t.Fatal(err)
	}
	var parts []string
	for _, v := range vs {
		parts = append(parts, fmt.Sprintf("v%d=%s", v.Version, v.Stage))
	}
	return strings.Join(parts, " ")
}

func apiCall(t *testing.T, method, url string, body, out any) {
	t.Helper()
	var rd *bytes.Reader
	if body != nil {
		data, _ := json.Marshal(body)
		rd = bytes.NewReader(data)
	} else {
		rd = bytes.NewReader(nil)
	}
	req, _ := http.NewRequest(method, url, rd)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		var e map[string]any
		json.NewDecoder(resp.Body).Decode(&e)
		t.Fatalf("%s %s: %d %v", method, url, resp.StatusCode, e)
	}
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatal(err)
		}
	}
}

// report plays the devices: each runs version v, having reached it in
// rollout id (committed).
func report(h *Hub, ids []string, v int64, id string) {
	for _, d := range ids {
		r := state.Reported{Device: d, Status: state.StatusRunning, ReportedAt: time.Now().UTC(),
			Models: []state.ModelStatus{{Pipeline: "p", Model: "m", Version: v}}, Updates: map[string]state.Update{}}
		if id != "" {
			r.Updates["m"] = state.Update{Model: "m", To: v, Rollout: id, Phase: state.PhaseCommitted, Health: state.Health{Inferences: 10}}
		}
		h.devices.put(r)
	}
}

// tickUntil ticks the controller until rollout id is in state want;
// after each tick, each plays the devices.
func tickUntil(t *testing.T, h *Hub, id, want string, each func(*rollout.Rollout)) rollout.Rollout {
	t.Helper()
	for range 20 {
		if err := h.rollouts.Tick(context.Background()); err != nil {
			t.Fatal(err)
		}
		r, err := h.rollouts.Get(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if r.State == want {
			return *r
		}
		each(r)
		time.Sleep(5 * time.Millisecond) // past the bake
	}
	r, _ := h.rollouts.Get(context.Background(), id)
	t.Fatalf("rollout %s is %s (%s), want %s", id, r.State, r.Reason, want)
	return rollout.Rollout{}
}

func trainStatusOf(t *testing.T, base string) trainer.Status {
	t.Helper()
	var st []trainer.Status
	apiCall(t, "GET", base+"/v1/train", nil, &st)
	if len(st) != 1 {
		t.Fatalf("/v1/train: %+v, want one model", st)
	}
	return st[0]
}

// The registry's stages follow the rollouts: canary while a version rolls
// out, production (the previous production archived) once it completes;
// a rollback restores the previous production and archives the rolled-back
// version; an aborted canary is a candidate again. `train status` says the
// same as the registry.
func TestRegistryStagesFollowRollouts(t *testing.T) {
	h, base := stagesHub(t)
	ctx := context.Background()
	for v := int64(1); v <= 3; v++ {
		pushVersion(t, h, v)
	}
	if _, err := h.models.Move(ctx, "m", 1, modelstore.Production, "test"); err != nil {
		t.Fatal(err)
	}
	ids := []string{"d1", "d2", "d3"}
	for _, id := range ids {
		if _, err := h.registry.Add(ctx, id, map[string]string{"site": "a"}); err != nil {
			t.Fatal(err)
		}
	}
	report(h, ids, 1, "")

	var r rollout.Rollout
	apiCall(t, "POST", base+"/v1/rollouts", map[string]any{"model": "m", "version": 2, "waves": []map[string]any{{"devices": 1}, {"percent": 100}}, "bake": "1ms"}, &r)
	if got := stages(t, h); got != "v1=production v2=canary v3=candidate" {
		t.Fatalf("rolling out v2: %s, want v2 canary", got)
	}
	if st := trainStatusOf(t, base); st.Production != 1 || st.Canary != 2 {
		t.Fatalf("train status while v2 rolls out: production v%d, canary v%d; want v1, v2", st.Production, st.Canary)
	}
	// Each device the rollout assigns commits v2 before the next tick.
	tickUntil(t, h, r.ID, rollout.Completed, func(r *rollout.Rollout) {
		for id := range r.Devices {
			report(h, []string{id}, 2, r.ID)
		}
	})
	if got := stages(t, h); got != "v1=archived v2=production v3=candidate" {
		t.Fatalf("v2 completed: %s, want v2 production and v1 archived", got)
	}
	if st := trainStatusOf(t, base); st.Production != 2 || st.Canary != 0 {
		t.Fatalf("train status after v2 completed: production v%d, canary v%d; want v2 and none", st.Production, st.Canary)
	}

	apiCall(t, "POST", base+"/v1/rollouts/"+r.ID+"/rollback", struct{}{}, &r)
	if r.State != rollout.RolledBack || len(r.Devices) != 3 {
		t.Fatalf("rollback: %s (%s) with %d devices", r.State, r.Reason, len(r.Devices))
	}
	for id, d := range r.Devices {
		if d.From != 1 || !d.Reverted {
			t.Fatalf("rollback: %s %+v, want reverted to v1", id, d)
		}
	}
	if got := stages(t, h); got != "v1=production v2=archived v3=candidate" {
		t.Fatalf("v2 rolled back: %s, want v1 production again and v2 archived", got)
	}
	for _, id := range ids {
		d, ok, err := h.rollouts.Desired(ctx, id)
		if err != nil || !ok || d.Models["m"].Version != 1 || d.Models["m"].Target != tuf.ModelTargetName("m", 1) {
			t.Fatalf("%s desired after the rollback: %+v (%v)", id, d, err)
		}
	}
	if st := trainStatusOf(t, base); st.Production != 1 {
		t.Fatalf("train status after the rollback: production v%d, want v1", st.Production)
	}
	report(h, ids, 1, "")

	apiCall(t, "POST", base+"/v1/rollouts", map[string]any{"model": "m", "version": 3, "waves": []map[string]any{{"devices": 1}, {"percent": 100}}, "bake": "1h"}, &r)
	if got := stages(t, h); got != "v1=production v2=archived v3=canary" {
		t.Fatalf("rolling out v3: %s", got)
	}
	apiCall(t, "POST", base+"/v1/rollouts/"+r.ID+"/abort", struct{}{}, &r)
	if got := stages(t, h); got != "v1=production v2=archived v3=candidate" {
		t.Fatalf("v3 aborted: %s, want v3 a candidate again", got)
	}
	if r.Reason != "aborted: by admin" {
		t.Fatalf("abort reason %q", r.Reason)
	}
}

// /v1/train answers snake_case keys, as the rest of the API does.
func TestTrainStatusKeysAreSnakeCase(t *testing.T) {
	_, base := stagesHub(t)
	resp, err := http.Get(base + "/v1/train")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v any
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		t.Fatal(err)
	}
	var bad []string
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch x := v.(type) {
		case []any:
			for _, e := range x {
				walk(path+"[]", e)
			}
		case map[string]any:
			for k, e := range x {
				if k != strings.ToLower(k) || strings.ContainsAny(k, " -") {
					bad = append(bad, path+"."+k)
				}
				if k == "features" || k == "cohorts" { // keyed by feature and label value
					continue
				}
				walk(path+"."+k, e)
			}
		}
	}
	walk("", v)
	if _, ok := v.([]any); !ok {
		t.Fatalf("/v1/train: %v, want a list", v)
	}
	if len(bad) > 0 {
		t.Fatalf("/v1/train keys not snake_case: %v", bad)
	}
}
