package pipeline

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	neturl "net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outpost-edge/outpost/hub/trainer"
	"github.com/outpost-edge/outpost/models/goengine"
	"github.com/outpost-edge/outpost/models/manifest"
	"github.com/outpost-edge/outpost/models/onnx"
	"github.com/outpost-edge/outpost/sync/state"
	"github.com/outpost-edge/outpost/test/kafkatest"
	"github.com/outpost-edge/outpost/test/schematest"
	"github.com/outpost-edge/outpost/test/testenv"
)

// healthV1 is an anomaly model fit to the simulator before its drift: a
// window is anomalous when its peak vibration is above 1.0. After the
// drift (the same load shakes the machine harder) normal windows peak
// around 1.1, and v1 calls them anomalous.
func healthV1(t *testing.T) string {
	t.Helper()
	feats := []manifest.Feature{{Field: "vibration", Agg: "max", Mean: 1, Std: 0.5}, {Field: "current", Agg: "mean", Mean: 10, Std: 2}}
	model, err := onnx.Logistic([][]float32{{8, 0}}, []float32{0})
	if err != nil {
		t.Fatal(err)
	}
	eng, _ := goengine.Load(model)
	golden := []float32{0.5, 0.1}
	out, _ := eng.Run(golden, 2)
	m := &manifest.Manifest{Name: "health", Version: 1, Task: "anomaly", Features: feats, Outputs: manifest.Outputs{Threshold: 0.5},
		Golden: []manifest.Golden{{Input: golden, Output: out, Tolerance: 1e-5}}}
	dir := t.TempDir()
	if err := manifest.Write(dir, m, model); err != nil {
		t.Fatal(err)
	}
	return dir
}

func trainHistoryOf(t *testing.T, url, model string) []trainer.Event {
	t.Helper()
	resp, err := http.Get(url + "/v1/train/" + model + "/history")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var evs []trainer.Event
	json.NewDecoder(resp.Body).Decode(&evs)
	return evs
}

// TestDriftIsDetectedAndRetrained is issue 7's end to end: two agents
// stream windows whose `anomaly.max` is the label; the simulator's concept
// drift starts 15 s in; the hub's trainer sees production's error rate
// jump (ADWIN), judges the learner it kept warm from production against
// it on a holdout of post-drift windows, and releases the learner as v2:
// exported to ONNX, quantized to int8, signed, and rolled out to one
// canary device, which commits it.
func TestDriftIsDetectedAndRetrained(t *testing.T) {
	cfg := hubConfig(t, kafkatest.Brokers(t), t.TempDir())
	cfg.Updates.RolloutInterval = 200 * time.Millisecond
	cfg.Trainer.Models = []trainer.ModelConfig{{Model: "health", Pipeline: "machine", LabelField: "anomaly.max",
		LearningRate: 0.05, Holdout: 300, Margin: 0.05, Quantize: "int8-static", Canary: true, Select: map[string]string{"site": "lab"}}}
	h := startHub(t, cfg)
	defer func() { h.Close() }() // the hub restarts below
	url := "http://" + h.HTTPAddr()
	if code, out := outpostctl(t, url, "model", "push", healthV1(t)); code != 0 {
		t.Fatal(out)
	}
	if code, out := outpostctl(t, url, "model", "promote", "health", "1"); code != 0 {
		t.Fatal(out)
	}

	bin := buildAgent(t)
	ids := []string{"mill-1", "mill-2"}
	var agents []*supervised
	for i, id := range ids {
		creds, err := h.Registry().Add(context.Background(), id, map[string]string{"site": "lab"})
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		models := filepath.Join(dir, "models", "health")
		mj, _ := os.ReadFile(filepath.Join(healthV1(t), manifest.ManifestFile))
		onnxData, _ := os.ReadFile(filepath.Join(healthV1(t), manifest.ModelFile))
		if err := manifest.Write(filepath.Join(models, "active"), mustManifest(t, mj), onnxData); err != nil {
			t.Fatal(err)
		}
		conf := filepath.Join(dir, "agent.yaml")
		os.WriteFile(conf, []byte(fmt.Sprintf(`
device: {id: %s}
data_dir: %s
hub: {url: "tcp://%s", username: %s, password: %s}
report: {interval: 1s}
uplink: {ack_timeout: 1s}
metrics: {listen: ""}
runtime: {onnxruntime_library: %s}
updates: {url: "http://%s/tuf", trusted_root: %s, probation: 2s}
pipelines:
  - name: machine
    source: {type: simulator, simulator: {sensors: 20, rate: 20, noise: 0.05, anomaly_rate: 0.01, drift_after: 15s, seed: %d}}
    decode: {key_field: sensor, time_field: ts, fields: [vibration, current, anomaly], max_skew: 1h}
    window: {kind: tumbling, size: 500ms, max_out_of_order: 50ms}
    aggregations: [max, mean]
    model: {dir: %s}
`, id, filepath.Join(dir, "data"), h.MQTTAddr(), creds.Username, creds.Password, testenv.ORTLibrary(t), h.HTTPAddr(),
			filepath.Join(cfg.DataDir, "tuf", "1.root.json"), i+1, models)), 0o644)
		agents = append(agents, superviseAgent(t, bin, id, conf, nil))
	}

	// Wait for the release: drift, holdout, export, quantize, register, canary.
	var rel trainer.Event
	deadline := time.Now().Add(120 * time.Second)
	for rel.Kind != "release" {
		if time.Now().After(deadline) {
			_, status := outpostctl(t, url, "train", "status")
			t.Logf("%s\nhistory %+v", status, trainHistoryOf(t, url, "health"))
			for _, a := range agents {
				t.Logf("agent %s log:\n%s", a.id, tail(a.log(), 2000))
			}
			t.Fatal("no release within 120 s")
		}
		time.Sleep(500 * time.Millisecond)
		for _, e := range trainHistoryOf(t, url, "health") {
			if e.Kind == "failed" {
				t.Fatalf("release failed: %s", e.Detail)
			}
			if e.Kind == "release" {
				rel = e
			}
		}
	}
	evs := trainHistoryOf(t, url, "health")
	if evs[0].Kind != "drift" {
		t.Fatalf("history %+v: the release was not triggered by a drift", evs)
	}
	t.Logf("drift detected; v%d released: post-drift holdout accuracy %.3f (v1) → %.3f (v2); canary rollout %s",
		rel.Version, rel.ProductionAccuracy, rel.CandidateAccuracy, rel.Rollout)
	if rel.CandidateAccuracy < rel.ProductionAccuracy+0.2 {
		t.Fatalf("candidate %.3f vs production %.3f: not clearly better after the drift", rel.CandidateAccuracy, rel.ProductionAccuracy)
	}
	var v struct {
		Versions []struct {
			Version      int64              `json:"version"`
			Parent       int64              `json:"parent"`
			Metrics      map[string]float64 `json:"metrics"`
			Stage        string             `json:"stage"`
			Quantization string             `json:"quantization"`
		}
	}
	_, show := outpostctl(t, url, "model", "show", "health")
	if !strings.Contains(show, "v2") && !strings.Contains(show, " 2 ") {
		t.Logf("model show:\n%s", show)
	}
	resp, err := http.Get(url + "/v1/models/health")
	if err != nil {
		t.Fatal(err)
	}
	json.NewDecoder(resp.Body).Decode(&v.Versions)
	resp.Body.Close()
	if len(v.Versions) != 2 || v.Versions[1].Parent != 1 || v.Versions[1].Metrics["holdout_accuracy"] != rel.CandidateAccuracy {
		t.Fatalf("registry versions %+v", v.Versions)
	}
	if q := v.Versions[1].Metrics["quantized_recent_accuracy"]; q == 0 {
		t.Fatalf("v2 was not quantized: metrics %v", v.Versions[1].Metrics)
	}

	// The canary: exactly one device takes v2 and commits it.
	deadline = time.Now().Add(60 * time.Second)
	for {
		devs := devices(t, url)
		on := 0
		for _, id := range ids {
			if u, ok := devs[id].Reported.Updates["health"]; ok && u.To == rel.Version && u.Phase == state.PhaseCommitted {
				on++
			}
		}
		r := getRollout(t, url, rel.Rollout)
		if on == 1 && len(r.Devices) == 1 {
			t.Logf("canary committed v%d on one of two devices; rollout %s is %s", rel.Version, r.ID, r.State)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("canary: %d devices committed v%d, rollout %+v", on, rel.Version, r)
		}
		time.Sleep(300 * time.Millisecond)
	}
	// Cloud teams see the drift and the release in outpost.events.
	kinds := map[string]bool{}
	cl, err := kgo.NewClient(kgo.SeedBrokers(kafkatest.Brokers(t)...), kgo.ConsumeTopics(cfg.Kafka.TopicPrefix+"events"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	for !(kinds["trainer_drift/health"] && kinds["trainer_release/health"]) && ctx.Err() == nil {
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			// The agents' model_update and drift records, the trainer's events.
			schematest.Check(t, r.Topic, r.Value)
			var rec struct {
				Device string `json:"device"`
				Data   struct {
					Kind  string `json:"kind"`
					Model string `json:"model"`
				} `json:"data"`
			}
			json.Unmarshal(r.Value, &rec)
			if rec.Device == "_hub" {
				kinds[rec.Data.Kind+"/"+rec.Data.Model] = true
			}
		})
	}
	if !kinds["trainer_drift/health"] || !kinds["trainer_release/health"] {
		t.Fatalf("trainer events in outpost.events: %v", kinds)
	}
	_, status := outpostctl(t, url, "train", "status")
	_, hist := outpostctl(t, url, "train", "history", "health")
	t.Logf("outpostctl train status:\n%s\noutpostctl train history health:\n%s", status, hist)

	// The history outlives a hub restart: it is stored in JetStream, not
	// only in the trainer's memory.
	before := trainHistoryOf(t, url, "health")
	h.Close()
	h = startHub(t, cfg)
	url = "http://" + h.HTTPAddr()
	after := trainHistoryOf(t, url, "health")
	if len(after) < len(before) {
		t.Fatalf("after a restart the history has %d events, before it %d: %+v", len(after), len(before), after)
	}
	for i, e := range before {
		if !after[i].At.Equal(e.At) || after[i].Kind != e.Kind || after[i].Version != e.Version || after[i].CandidateAccuracy != e.CandidateAccuracy {
			t.Fatalf("event %d before the restart %+v, after %+v", i, e, after[i])
		}
	}
	t.Logf("%d trainer events survived the restart", len(before))
	// So does the console's retraining page: the release, and the
	// champion against the challenger on the chart.
	// The console needs a login even on a hub without an admin token
	// (any token logs in as operator there).
	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Jar: jar}
	if resp, err = browser.PostForm(url+"/login", neturl.Values{"token": {""}}); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp, err = browser.Get(url + "/training/health"); err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(page), `href="/rollouts/`+rel.Rollout+`"`) ||
		!strings.Contains(string(page), `id="accuracy-chart"`) || !strings.Contains(string(page), `class="s1"`) {
		t.Fatalf("the retraining page after the restart: %d\n%s", resp.StatusCode, page)
	}
}
