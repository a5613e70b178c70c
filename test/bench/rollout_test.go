package bench

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/agent"
	"github.com/outpost-edge/outpost/agent/infer"
	"github.com/outpost-edge/outpost/agent/ingest"
	"github.com/outpost-edge/outpost/agent/pipeline"
	"github.com/outpost-edge/outpost/hub"
	"github.com/outpost-edge/outpost/hub/modelstore"
	"github.com/outpost-edge/outpost/hub/rollout"
	"github.com/outpost-edge/outpost/models/goengine"
	"github.com/outpost-edge/outpost/models/manifest"
	"github.com/outpost-edge/outpost/models/onnx"
	"github.com/outpost-edge/outpost/sync/state"
	"github.com/outpost-edge/outpost/test/kafkatest"
)

// rolloutPackage writes version v of a small logistic model.
func rolloutPackage(b *testing.B, v int64) (dir string, mj, model []byte) {
	b.Helper()
	model, err := onnx.Logistic([][]float32{{0.5, -0.25}}, []float32{float32(v) / 10})
	if err != nil {
		b.Fatal(err)
	}
	eng, _ := goengine.Load(model)
	out, _ := eng.Run([]float32{0, 0}, 2)
	m := &manifest.Manifest{Name: "fleet", Version: v, Task: "anomaly",
		Features: []manifest.Feature{{Field: "vibration", Agg: "mean", Std: 1}, {Field: "vibration", Agg: "max", Std: 1}},
		Outputs:  manifest.Outputs{Threshold: 0.5},
		Golden:   []manifest.Golden{{Input: []float32{0, 0}, Output: out, Tolerance: 1e-5}}}
	dir = b.TempDir()
	if err := manifest.Write(dir, m, model); err != nil {
		b.Fatal(err)
	}
	mj, _ = os.ReadFile(filepath.Join(dir, manifest.ManifestFile))
	return dir, mj, model
}

// BenchmarkRollout1000 updates a fleet of agents (1,000 unless
// OUTPOST_ROLLOUT_AGENTS says otherwise) with a signed model, through the
// real parts: one hub (embedded NATS MQTT, JetStream KV, its TUF
// repository over HTTP, the rollout controller), and complete agents in
// this process (agent.Run: MQTT uplink, SQLite database, a simulator
// pipeline running the model on the pure-Go engine, TUF client and the
// update state machine with a 1 s probation). Waves 1, 10%, 50%, 100%
// with a 1 s bake. Each agent sends a window and an inference every 10 s
// and telemetry every 5 s meanwhile (about 300 records/s for 1,000, each
// fsync'd by JetStream). The metric is seconds from rollout start to
// completed.
// benchFleet is a hub and n complete agents on v1 of model "fleet".
type benchFleet struct {
	hub *hub.Hub
	// waitVersion returns once every agent reports running v.
	waitVersion func(v int64, limit time.Duration)
	agentLog    string // the agents' warnings
}

// startFleet starts a hub with versions 1..last of model "fleet" pushed
// and n agents running v1 (see BenchmarkRollout1000), and waits until
// they all report; everything stops when b ends.
func startFleet(b *testing.B, n int, last int64) benchFleet {
	b.Helper()
	cfg := hub.Defaults()
	cfg.DataDir = b.TempDir()
	cfg.Broker.NATSPort, cfg.Broker.MQTTPort = -1, -1
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.Kafka.Brokers = kafkatest.Brokers(b)
	cfg.Kafka.TopicPrefix = fmt.Sprintf("rollout%d.", time.Now().UnixNano())
	cfg.Updates.RolloutInterval = 100 * time.Millisecond
	if os.Getenv("OUTPOST_ROLLOUT_NOSYNC") != "" {
		cfg.Broker.SyncAlways = false
	}
	cfg.Log.Level = "error"
	log := slog.New(slog.DiscardHandler)
	// The agents' warnings, kept for a failure.
	agentLogPath := filepath.Join(b.TempDir(), "agents.log")
	agentLogFile, err := os.Create(agentLogPath)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { agentLogFile.Close() })
	agentLog := slog.New(slog.NewTextHandler(agentLogFile, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, cancel := context.WithCancel(context.Background())
	h, err := hub.Start(ctx, cfg, log)
	if err != nil {
		cancel()
		b.Fatal(err)
	}
	b.Cleanup(h.Close)
	v1dir, _, _ := rolloutPackage(b, 1)
	for v := int64(1); v <= last; v++ {
		_, mj, model := rolloutPackage(b, v)
		if _, err := h.PushModel(ctx, modelstore.PushRequest{Manifest: mj, Model: model}); err != nil {
			cancel()
			b.Fatal(err)
		}
	}

	// The fleet.
	fleetDir, err := os.MkdirTemp(shm(), "outpost-fleet-")
	if err != nil {
		cancel()
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(fleetDir) })
	var wg sync.WaitGroup
	b.Cleanup(wg.Wait)
	b.Cleanup(cancel) // first: the agents stop, then the hub
	start := time.Now()
	for i := range n {
		id := fmt.Sprintf("dev-%04d", i)
		creds, err := h.Registry().Add(ctx, id, map[string]string{"fleet": "bench"})
		if err != nil {
			b.Fatal(err)
		}
		// Each device has a disk of its own; here a thousand share one,
		// and their fsyncs would queue behind each other. tmpfs stands in
		// for a thousand disks (the hub's store stays on the real one).
		dir := filepath.Join(fleetDir, id)
		models := filepath.Join(dir, "models")
		if _, _, err := copyPackage(v1dir, filepath.Join(models, infer.Active)); err != nil {
			b.Fatal(err)
		}
		a := agent.Defaults()
		a.Device.ID = id
		a.DataDir = filepath.Join(dir, "data")
		a.Hub.URL = "tcp://" + h.MQTTAddr()
		a.Hub.Username, a.Hub.Password = creds.Username, creds.Password
		a.Hub.ReconnectJitter = 0
		a.Report.Interval = 5 * time.Second
		a.Metrics.Listen = ""
		a.Storage.Synchronous = "normal"
		a.Updates.URL = "http://" + h.HTTPAddr() + "/tuf"
		a.Updates.TrustedRoot = filepath.Join(cfg.DataDir, "tuf", "1.root.json")
		a.Updates.Probation = time.Second
		a.Pipelines = []pipeline.Config{{
			Name:         "p",
			Source:       ingest.SourceConfig{Type: "simulator", Simulator: ingest.SimulatorConfig{Sensors: 1, Rate: 1, Seed: uint64(i + 1)}},
			Decode:       ingest.DecodeConfig{KeyField: "sensor", TimeField: "ts", Fields: []string{"vibration"}},
			Window:       pipeline.WindowConfig{Kind: "tumbling", Size: 10 * time.Second},
			Aggregations: []string{"mean", "max"},
			Model:        &infer.Config{Dir: models, Engine: "go"},
		}}
		if err := a.Validate(); err != nil {
			b.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := agent.Run(ctx, a, agentLog); err != nil && ctx.Err() == nil {
				b.Errorf("agent %s: %v", id, err)
			}
		}()
	}
	waitVersion := func(v int64, limit time.Duration) {
		deadline := time.Now().Add(limit)
		for {
			on := 0
			for _, d := range h.Devices() {
				if d.Reported != nil && len(d.Reported.Models) > 0 && d.Reported.Models[0].Version == v {
					on++
				}
			}
			if on == n {
				return
			}
			if time.Now().After(deadline) {
				if data, err := os.ReadFile(agentLogPath); err == nil {
					b.Logf("agent warnings (last 4 KiB):\n%s", data[max(0, len(data)-4096):])
				}
				b.Fatalf("%d of %d agents on v%d after %s", on, n, v, limit)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitVersion(1, 5*time.Minute)
	b.Logf("%d agents connected and reporting in %s", n, time.Since(start).Round(time.Millisecond))
	return benchFleet{hub: h, waitVersion: waitVersion, agentLog: agentLogPath}
}

func BenchmarkRollout1000(b *testing.B) {
	n := 1000
	if s := os.Getenv("OUTPOST_ROLLOUT_AGENTS"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	ctx := b.Context()
	f := startFleet(b, n, int64(b.N)+1)
	h, waitVersion, agentLogPath := f.hub, f.waitVersion, f.agentLog

	ws, _ := rollout.ParseWaves("1,10%,50%,100%")
	b.ResetTimer()
	var total time.Duration
	for i := range b.N {
		v := int64(i) + 2
		t0 := time.Now()
		r, err := h.Rollouts().Start(ctx, rollout.Spec{Model: "fleet", Version: v, Selector: map[string]string{"fleet": "bench"},
			Waves: ws, Bake: rollout.Duration(time.Second), WaveTimeout: rollout.Duration(time.Minute)})
		if err != nil {
			b.Fatal(err)
		}
		stage := ""
		for {
			r, err = h.Rollouts().Get(ctx, r.ID)
			if err != nil {
				b.Fatal(err)
			}
			if s := fmt.Sprintf("%s wave %d", r.State, r.Wave+1); s != stage {
				b.Logf("%6.1fs %s: %d devices %v", time.Since(t0).Seconds(), s, len(r.Devices), r.Counts())
				stage = s
			}
			if !rollout.Active(r.State) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		took := time.Since(t0)
		total += took
		if r.State != rollout.Completed {
			devs := map[string]state.Device{}
			for _, d := range h.Devices() {
				devs[d.ID] = d
			}
			shown := 0
			for id, d := range r.Devices {
				if d.Phase == state.PhaseCommitted || shown == 5 {
					continue
				}
				shown++
				want, _, _ := h.Rollouts().Desired(ctx, id)
				rep := devs[id].Reported
				b.Logf("%s: rollout says %+v; hub desired v%d; reported %+v", id, d, want.Version, rep)
			}
			if data, err := os.ReadFile(agentLogPath); err == nil {
				b.Logf("agent warnings (last 4 KiB):\n%s", data[max(0, len(data)-4096):])
			}
			b.Fatalf("rollout %s: %s (%s) %v", r.ID, r.State, r.Reason, r.Counts())
		}
		b.Logf("rollout of v%d to %d agents: %s", v, len(r.Devices), took.Round(time.Millisecond))
	}
	b.StopTimer()
	waitVersion(int64(b.N)+1, time.Minute)
	b.ReportMetric(total.Seconds()/float64(b.N), "s/rollout")
	b.ReportMetric(float64(n)*float64(b.N)/total.Seconds(), "devices/s")
}

func copyPackage(src, dst string) (string, string, error) {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return "", "", err
	}
	for _, f := range []string{manifest.ManifestFile, manifest.ModelFile} {
		data, err := os.ReadFile(filepath.Join(src, f))
		if err != nil {
			return "", "", err
		}
		if err := os.WriteFile(filepath.Join(dst, f), data, 0o644); err != nil {
			return "", "", err
		}
	}
	return src, dst, nil
}

// shm is a tmpfs directory when the machine has one.
func shm() string {
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		return "/dev/shm"
	}
	return os.TempDir()
}

// BenchmarkRollback100 times `outpostctl rollout rollback` (the
// controller's Rollback, as the API calls it) from the call until every
// device runs its previous version again, on 100 complete agents (as in
// BenchmarkRollout1000; OUTPOST_ROLLBACK_AGENTS changes the number).
// Each iteration first rolls v2 out to the whole fleet in one wave,
// untimed, then rolls it back to v1: one desired state per device, each
// naming v1's signed TUF target, which the agent downloads, verifies,
// self-tests and switches to. The target is 10 s for 100 devices.
func BenchmarkRollback100(b *testing.B) {
	n := 100
	if s := os.Getenv("OUTPOST_ROLLBACK_AGENTS"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	ctx := b.Context()
	f := startFleet(b, n, 2)
	h := f.hub
	all, _ := rollout.ParseWaves("100%")
	var total, worst time.Duration
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		r, err := h.Rollouts().Start(ctx, rollout.Spec{Model: "fleet", Version: 2, Selector: map[string]string{"fleet": "bench"},
			Waves: all, Bake: rollout.Duration(time.Millisecond), WaveTimeout: rollout.Duration(2 * time.Minute)})
		if err != nil {
			b.Fatal(err)
		}
		for rollout.Active(r.State) {
			time.Sleep(50 * time.Millisecond)
			if r, err = h.Rollouts().Get(ctx, r.ID); err != nil {
				b.Fatal(err)
			}
		}
		if r.State != rollout.Completed {
			b.Fatalf("rollout of v2: %s (%s) %v", r.State, r.Reason, r.Counts())
		}
		f.waitVersion(2, time.Minute)
		b.StartTimer()
		t0 := time.Now()
		r, err = h.Rollouts().Rollback(ctx, r.ID, "by the benchmark")
		if err != nil {
			b.Fatal(err)
		}
		sent := time.Since(t0)
		f.waitVersion(1, time.Minute)
		took := time.Since(t0)
		b.StopTimer()
		total += took
		worst = max(worst, took)
		b.Logf("rollback of %d devices to v1: desired states sent in %s, every device on v1 in %s", len(r.Devices), sent.Round(time.Millisecond), took.Round(time.Millisecond))
	}
	b.ReportMetric(total.Seconds()/float64(b.N), "s/rollback")
	b.ReportMetric(worst.Seconds(), "worst_s")
	if worst > 10*time.Second {
		b.Logf("over the 10 s target for %d devices (worst %s)", n, worst.Round(time.Millisecond))
	}
}
