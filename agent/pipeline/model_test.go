package pipeline

import (
	"errors"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/agent/infer"
	"github.com/outpost-edge/outpost/models/manifest"
	"github.com/outpost-edge/outpost/models/onnx"
	"github.com/outpost-edge/outpost/models/ort"
	"github.com/outpost-edge/outpost/models/validate"
	"github.com/outpost-edge/outpost/test/testenv"
)

func sigmoid(z float64) float32 { return float32(1 / (1 + math.Exp(-z))) }

// writeModel builds score = sigmoid(2·mean + max/2 - 10) over field v,
// packaged with its manifest and golden vectors.
func writeModel(t *testing.T, dir string, golden float32) {
	t.Helper()
	model, err := onnx.Logistic([][]float32{{2, 1}}, []float32{-10})
	if err != nil {
		t.Fatal(err)
	}
	m := &manifest.Manifest{
		Name: "overheat", Version: 3, Task: "anomaly",
		Features: []manifest.Feature{{Field: "v", Agg: "mean", Std: 1}, {Field: "v", Agg: "max", Std: 2}},
		Outputs:  manifest.Outputs{Labels: []string{"normal", "overheat"}, Threshold: 0.5},
		Golden:   []manifest.Golden{{Input: []float32{0, 0}, Output: []float32{golden}, Tolerance: 1e-6}},
	}
	if err := manifest.Write(dir, m, model); err != nil {
		t.Fatal(err)
	}
}

func TestModelScoresWindowsAndFiresActions(t *testing.T) {
	if err := ort.Init(testenv.ORTLibrary(t)); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	writeModel(t, filepath.Join(dir, "models", infer.Active), sigmoid(-10))
	input := filepath.Join(dir, "in.jsonl")
	alerts := filepath.Join(dir, "alerts.txt")
	lines := []string{
		`{"sensor":"s1","ts":"2026-11-25T12:00:01Z","v":1}`,
		`{"sensor":"s1","ts":"2026-11-25T12:00:02Z","v":3}`,
		`{"sensor":"s2","ts":"2026-11-25T12:00:03Z","v":8}`,
		`{"sensor":"s2","ts":"2026-11-25T12:00:04Z","v":10}`,
		`{"sensor":"s1","ts":"2026-11-25T12:00:30Z","v":0}`,
	}
	if err := os.WriteFile(input, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := fileConfig(input)
	cfg.Model = &infer.Config{Dir: filepath.Join(dir, "models"), Threads: 1}
	cfg.Actions = []ActionConfig{{Type: "log"}, {Type: "command", Command: []string{"sh", "-c", `echo "$OUTPOST_KEY $OUTPOST_LABEL" >> ` + alerts}}}
	ob := &memOutbox{}
	// The settle time covers the alert command, which runs asynchronously.
	p := runUntil(t, cfg, ob, func() bool { return len(ob.byStream("inferences")) >= 2 }, 200*time.Millisecond)
	inf := ob.byStream("inferences")
	if len(inf) != 2 {
		t.Fatalf("inferences = %v", inf)
	}
	want := map[string]float32{"s1": sigmoid(2*2 + 3.0/2 - 10), "s2": sigmoid(2*9 + 10.0/2 - 10)}
	for _, r := range inf {
		key := r["key"].(string)
		score := float32(r["scores"].([]any)[0].(float64))
		if math.Abs(float64(score-want[key])) > 1e-6 || r["model"] != "overheat" || r["version"] != 3.0 {
			t.Fatalf("inference %v, want score %v", r, want[key])
		}
		if (key == "s2") != r["positive"].(bool) || (key == "s2" && r["label"] != "overheat") {
			t.Fatalf("inference %v flagged wrongly", r)
		}
	}
	got, _ := os.ReadFile(alerts)
	if strings.TrimSpace(string(got)) != "s2 overheat" {
		t.Fatalf("alert command wrote %q", got)
	}
	if p.Stats.Alerts.Load() != 1 || p.Stats.Inferences.Load() != 2 {
		t.Fatalf("alerts %d inferences %d", p.Stats.Alerts.Load(), p.Stats.Inferences.Load())
	}
	// The rows the model was fed stay for an update's self-test to time a
	// candidate on: each window's features as the model reads them (mean,
	// and max normalised by its std of 2).
	rows := map[[2]float32]bool{}
	for _, r := range p.RecentRows() {
		if len(r) != 2 {
			t.Fatalf("recent row %v, want [mean, max/2]", r)
		}
		rows[[2]float32{r[0], r[1]}] = true
	}
	if len(rows) != 2 || !rows[[2]float32{2, 1.5}] || !rows[[2]float32{9, 5}] {
		t.Fatalf("recent rows %v, want [2 1.5] and [9 5]", p.RecentRows())
	}
}

func TestModelThatFailsItsGoldenVectorsIsRefused(t *testing.T) {
	if err := ort.Init(testenv.ORTLibrary(t)); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	writeModel(t, dir, 0.9) // wrong expectation
	if _, err := infer.LoadSlot(infer.Config{Dir: dir}, infer.Active, slog.New(slog.DiscardHandler)); !errors.Is(err, infer.ErrSelfTest) {
		t.Fatalf("err = %v, want ErrSelfTest", err)
	}
	// A tampered model file fails its checksum before it is even parsed.
	ok := t.TempDir()
	writeModel(t, ok, sigmoid(-10))
	if err := os.WriteFile(filepath.Join(ok, manifest.ModelFile), []byte("tampered"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := infer.LoadSlot(infer.Config{Dir: ok}, infer.Active, slog.New(slog.DiscardHandler)); !errors.Is(err, manifest.ErrChecksum) {
		t.Fatalf("err = %v, want ErrChecksum", err)
	}
	// A manifest listing three features for a two-input graph is refused
	// before any engine runs it.
	wrong := t.TempDir()
	model, _ := onnx.Logistic([][]float32{{2, 1}}, []float32{-10})
	m := &manifest.Manifest{Name: "overheat", Version: 4, Task: "anomaly",
		Features: []manifest.Feature{{Field: "v", Agg: "mean", Std: 1}, {Field: "v", Agg: "max", Std: 2}, {Field: "v", Agg: "min", Std: 1}},
		Golden:   []manifest.Golden{{Input: []float32{0, 0, 0}, Output: []float32{0}, Tolerance: 1}}}
	if err := manifest.Write(wrong, m, model); err != nil {
		t.Fatal(err)
	}
	if _, err := infer.LoadSlot(infer.Config{Dir: wrong}, infer.Active, slog.New(slog.DiscardHandler)); !errors.Is(err, validate.ErrMismatch) {
		t.Fatalf("err = %v, want validate.ErrMismatch", err)
	}
}

// TestGoEngineScoresLikeONNXRuntime runs the same package on the pure-Go
// engine: it passes the golden vectors and flags the same window.
func TestGoEngineScoresLikeONNXRuntime(t *testing.T) {
	dir := t.TempDir()
	writeModel(t, dir, sigmoid(-10))
	m, err := infer.LoadSlot(infer.Config{Dir: dir, Engine: "go"}, infer.Active, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	out, _, err := m.Infer([]float32{9, 5}) // mean 9, max 10 normalised by std 2
	if err != nil || math.Abs(float64(out[0]-sigmoid(2*9+5-10))) > 1e-6 {
		t.Fatalf("go engine score = %v, %v", out, err)
	}
}
