package pipeline

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outpost-edge/outpost/agent"
	"github.com/outpost-edge/outpost/agent/infer"
	"github.com/outpost-edge/outpost/agent/ingest"
	"github.com/outpost-edge/outpost/agent/pipeline"
	"github.com/outpost-edge/outpost/models/manifest"
	"github.com/outpost-edge/outpost/models/onnx"
	"github.com/outpost-edge/outpost/sync/state"
	"github.com/outpost-edge/outpost/test/fleettest"
	"github.com/outpost-edge/outpost/test/kafkatest"
	"github.com/outpost-edge/outpost/test/schematest"
	"github.com/outpost-edge/outpost/test/service"
	"github.com/outpost-edge/outpost/test/testenv"
)

// TestRawSignalModelsReachKafka runs the whole agent against the hub and
// the real Kafka broker with two pipelines on the simulator's vibration:
// a 1-D CNN on a sequence input (ONNX Runtime) and a logistic model on a
// spectrum input (the pure-Go engine). Both pipelines' inference
// records arrive in Kafka, scored by the model they name.
func TestRawSignalModelsReachKafka(t *testing.T) {
	brokers := kafkatest.Brokers(t)
	cfg := hubConfig(t, brokers, t.TempDir())
	h := startHub(t, cfg)
	defer h.Close()
	creds, err := h.Registry().Add(context.Background(), "edge-raw", nil)
	if err != nil {
		t.Fatal(err)
	}
	models := t.TempDir()
	cnn, err := onnx.CNN1D("wave", 1, 100, 8, 5, 3)
	if err != nil {
		t.Fatal(err)
	}
	fleettest.WritePackage(t, filepath.Join(models, "cnn", infer.Active), &manifest.Manifest{Name: "vibration-cnn", Version: 1, Task: "anomaly",
		Inputs: []manifest.Input{{Name: "wave", Kind: manifest.Sequence, Sequence: &manifest.SequenceSpec{
			Fields: []string{"vibration"}, Steps: 100, Layout: "NCT", MinSamples: 50, Short: "pad",
			Normalize: []manifest.Norm{{Mean: 0.5, Std: 0.2}}}}},
		Outputs: manifest.Outputs{Threshold: 0.99}}, cnn)
	spec := &manifest.SpectrumSpec{Fields: []string{"vibration", "current"}, Points: 64, Bands: 4, Log: true}
	weights := make([]float32, 2*spec.PerField())
	for i := range weights {
		weights[i] = 0.1
	}
	logistic, err := onnx.Logistic([][]float32{weights}, []float32{-1})
	if err != nil {
		t.Fatal(err)
	}
	fleettest.WritePackage(t, filepath.Join(models, "spectrum", infer.Active), &manifest.Manifest{Name: "vibration-spectrum", Version: 1, Task: "anomaly",
		Inputs: []manifest.Input{{Kind: manifest.Spectrum, Spectrum: spec}}, Outputs: manifest.Outputs{Threshold: 0.99}}, logistic)

	sim := ingest.SourceConfig{Type: "simulator", Simulator: ingest.SimulatorConfig{Sensors: 2, Rate: 50, Noise: 0.05, Seed: 9}}
	dec := ingest.DecodeConfig{KeyField: "sensor", TimeField: "ts", Fields: []string{"vibration", "current"}}
	win := pipeline.WindowConfig{Kind: "tumbling", Size: 2 * time.Second, MaxOutOfOrder: 100 * time.Millisecond}
	stop := runAgent(t, h, creds, "edge-raw", []pipeline.Config{
		{Name: "cnn", Source: sim, Decode: dec, Window: win, Aggregations: []string{"count"},
			Model: &infer.Config{Dir: filepath.Join(models, "cnn"), Threads: 1}},
		{Name: "spectrum", Source: sim, Decode: dec, Window: win, Aggregations: []string{"count"},
			Model: &infer.Config{Dir: filepath.Join(models, "spectrum"), Engine: "go"}},
	})
	defer stop()
	byModel := map[string]int{}
	readInferences(t, brokers, cfg.Kafka.TopicPrefix+"inferences", func(device string, d pipeline.InferenceRecord) bool {
		if device != "edge-raw" || len(d.Scores) != 1 || d.Scores[0] <= 0 || d.Scores[0] >= 1 || !strings.HasPrefix(d.Key, "sensor-") {
			t.Errorf("inference record %+v from %s", d, device)
		}
		if want := map[string]string{"cnn": "vibration-cnn", "spectrum": "vibration-spectrum"}[d.Pipeline]; d.Model != want {
			t.Errorf("pipeline %s scored by %s, want %s", d.Pipeline, d.Model, want)
		}
		byModel[d.Model]++
		return byModel["vibration-cnn"] >= 4 && byModel["vibration-spectrum"] >= 4
	})
	if byModel["vibration-cnn"] < 4 || byModel["vibration-spectrum"] < 4 {
		t.Fatalf("inferences in Kafka by model: %v, want ≥ 4 of each", byModel)
	}
}

// TestImageModelReachesKafka: PNG files dropped into a watched directory
// run through a small CNN on the agent (pure-Go engine), and one
// inference record per frame reaches the real Kafka broker, with its
// camera's key and file name; the files are gone once delivered.
func TestImageModelReachesKafka(t *testing.T) {
	brokers := kafkatest.Brokers(t)
	cfg := hubConfig(t, brokers, t.TempDir())
	h := startHub(t, cfg)
	defer h.Close()
	creds, err := h.Registry().Add(context.Background(), "edge-cam", nil)
	if err != nil {
		t.Fatal(err)
	}
	models := t.TempDir()
	cnn, err := onnx.CNN2D("frame", 32, 8, 2, 11)
	if err != nil {
		t.Fatal(err)
	}
	fleettest.WritePackage(t, filepath.Join(models, infer.Active), &manifest.Manifest{Name: "door-cnn", Version: 1, Task: "classification",
		Inputs:  []manifest.Input{{Name: "frame", Kind: manifest.Image, Image: &manifest.ImageSpec{Width: 32, Height: 32, Channels: "RGB"}}},
		Outputs: manifest.Outputs{Labels: []string{"closed", "open"}}}, cnn)
	watch := t.TempDir()
	const frames = 6
	for i := range frames {
		img := image.NewRGBA(image.Rect(0, 0, 40+i, 30))
		for p := range img.Pix {
			img.Pix[p] = uint8(p*(i+1)) | 3
		}
		var b bytes.Buffer
		if err := png.Encode(&b, img); err != nil {
			t.Fatal(err)
		}
		tmp := filepath.Join(watch, fmt.Sprintf(".f%d", i))
		if err := os.WriteFile(tmp, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(watch, fmt.Sprintf("frame-%03d.png", i))); err != nil {
			t.Fatal(err)
		}
	}

	stop := runAgent(t, h, creds, "edge-cam", []pipeline.Config{{Name: "door",
		Source: ingest.SourceConfig{Type: "image", Image: ingest.ImageConfig{Dir: watch, Key: "door-1", Settle: 10 * time.Millisecond}},
		Model:  &infer.Config{Dir: models, Engine: "go"}}})
	defer stop()
	seen := map[string]int{}
	readInferences(t, brokers, cfg.Kafka.TopicPrefix+"inferences", func(device string, d pipeline.InferenceRecord) bool {
		if device != "edge-cam" || d.Key != "door-1" || d.Model != "door-cnn" || d.Firing != "frame" || len(d.Scores) != 2 ||
			math.Abs(float64(d.Scores[0]+d.Scores[1])-1) > 1e-5 || (d.Label != "open" && d.Label != "closed") {
			t.Errorf("inference record %+v from %s", d, device)
		}
		seen[d.Frame]++
		return len(seen) == frames
	})
	if len(seen) != frames {
		t.Fatalf("frames scored in Kafka: %v, want %d", seen, frames)
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if left, _ := filepath.Glob(filepath.Join(watch, "*.png")); len(left) == 0 {
			return
		}
	}
	left, _ := filepath.Glob(filepath.Join(watch, "*.png"))
	t.Fatalf("frames left in the watched directory after delivery: %v", left)
}

// runAgent runs the whole agent (agent.Run) as device id against h with
// these pipelines, its ONNX Runtime from the download cache; stop ends
// it and reports its error.
func runAgent(t *testing.T, h interface{ MQTTAddr() string }, creds state.Credentials, id string, pipes []pipeline.Config) (stop func()) {
	t.Helper()
	acfg := agent.Defaults()
	acfg.Device.ID = id
	acfg.Runtime.ONNXRuntime = testenv.ORTLibrary(t)
	acfg.DataDir = t.TempDir()
	acfg.Hub.URL = "tcp://" + h.MQTTAddr()
	acfg.Hub.Username, acfg.Hub.Password = creds.Username, creds.Password
	acfg.Uplink.AckTimeout = time.Second
	mport, _ := service.FreePort()
	acfg.Metrics.Listen = service.Addr(mport)
	acfg.Pipelines = pipes
	if err := acfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- agent.Run(ctx, acfg, testLogger(t)) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agent: %v", err)
		}
	}
}

// readInferences reads inference records from topic (read_committed)
// and hands each to seen until it returns true or 60 s pass; every
// record is validated against the published schemas.
func readInferences(t *testing.T, brokers []string, topic string, seen func(device string, d pipeline.InferenceRecord) bool) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeTopics(topic))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for deadline, enough := time.Now().Add(60*time.Second), false; !enough && time.Now().Before(deadline); {
		fctx, fcancel := context.WithTimeout(context.Background(), 2*time.Second)
		cl.PollFetches(fctx).EachRecord(func(r *kgo.Record) {
			schematest.Check(t, r.Topic, r.Value) // real agents' records
			var v struct {
				Device string                   `json:"device"`
				Data   pipeline.InferenceRecord `json:"data"`
			}
			if err := json.Unmarshal(r.Value, &v); err != nil {
				t.Errorf("%s: %v", r.Topic, err)
				return
			}
			enough = seen(v.Device, v.Data) || enough
		})
		fcancel()
	}
}
