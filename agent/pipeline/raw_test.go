package pipeline

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/agent/infer"
	"github.com/outpost-edge/outpost/agent/ingest"
	"github.com/outpost-edge/outpost/models/goengine"
	"github.com/outpost-edge/outpost/models/manifest"
	"github.com/outpost-edge/outpost/models/onnx"
	"github.com/outpost-edge/outpost/models/ort"
	"github.com/outpost-edge/outpost/test/testenv"
)

var rawT0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

// axis is a 3-axis accelerometer's reading c of sensor s at sample k
// (100 Hz): a per-sensor tone on each axis.
func axis(s, c, k int) float64 {
	return math.Sin(2*math.Pi*float64(5*(s+1)+c)*float64(k)/100) + 0.1*float64(c)
}

// vibrationLines are 100 Hz readings of ax, ay, az: sensor s1 for 4 s,
// s2 for 2 s with half its samples missing (a short window), out of
// order within each 10-sample burst, then one reading that closes them.
func vibrationLines(t *testing.T) string {
	var b strings.Builder
	emit := func(s, k int) {
		ts := rawT0.Add(time.Duration(k) * 10 * time.Millisecond).Format(time.RFC3339Nano)
		fmt.Fprintf(&b, `{"sensor":"s%d","ts":"%s","ax":%g,"ay":%g,"az":%g}`+"\n", s+1, ts, axis(s, 0, k), axis(s, 1, k), axis(s, 2, k))
	}
	for burst := 0; burst < 40; burst++ {
		for i := 9; i >= 0; i-- { // reversed: the window must sort them
			k := burst*10 + i
			emit(0, k)
			if k < 200 && k%2 == 0 {
				emit(1, k)
			}
		}
	}
	fmt.Fprintf(&b, `{"sensor":"s1","ts":"%s","ax":0,"ay":0,"az":0}`+"\n", rawT0.Add(30*time.Second).Format(time.RFC3339Nano))
	return b.String()
}

// waveRow is sensor s's window w as the CNN takes it, [3, 200] NCT,
// written out from the generator (200 steps over 2 s at 100 Hz are the
// samples themselves).
func waveRow(s, w int) []float32 {
	row := make([]float32, 600)
	for c := range 3 {
		for i := range 200 {
			row[c*200+i] = float32(axis(s, c, w*200+i))
		}
	}
	return row
}

// writeRawModel packages a model for the pipeline's vibration windows:
// a 1-D CNN on a sequence input, golden vectors from the pure-Go engine.
func writeRawModel(t *testing.T, dir string) *goengine.Engine {
	t.Helper()
	model, err := onnx.CNN1D("wave", 3, 200, 8, 5, 7)
	if err != nil {
		t.Fatal(err)
	}
	eng, err := goengine.Load(model)
	if err != nil {
		t.Fatal(err)
	}
	in := waveRow(0, 0)
	out, err := eng.RunFeeds([]onnx.Feed{{Name: "wave", Shape: []int64{1, 3, 200}, Data: in}})
	if err != nil {
		t.Fatal(err)
	}
	m := &manifest.Manifest{Name: "vibration", Version: 1, Task: "anomaly",
		Inputs: []manifest.Input{{Name: "wave", Kind: manifest.Sequence, Sequence: &manifest.SequenceSpec{
			Fields: []string{"ax", "ay", "az"}, Steps: 200, Layout: "NCT", MinSamples: 150}}},
		Outputs: manifest.Outputs{Threshold: 0.5},
		Golden:  []manifest.Golden{{Input: in, Output: out, Tolerance: 1e-5}}}
	if err := manifest.Write(dir, m, model); err != nil {
		t.Fatal(err)
	}
	return eng
}

// TestSequenceInputFeedsACNN: raw samples arriving out of order reach a
// 1-D CNN as [N, 3, 200] windows, on both engines, scored as the engine
// scores the generator's own rows; a window with too few samples is
// skipped and counted, not scored and not an error.
func TestSequenceInputFeedsACNN(t *testing.T) {
	if err := ort.Init(testenv.ORTLibrary(t)); err != nil {
		t.Fatal(err)
	}
	for _, engine := range []string{"onnxruntime", "go"} {
		t.Run(engine, func(t *testing.T) {
			dir := t.TempDir()
			eng := writeRawModel(t, filepath.Join(dir, "models", infer.Active))
			input := filepath.Join(dir, "in.jsonl")
			if err := os.WriteFile(input, []byte(vibrationLines(t)), 0o644); err != nil {
				t.Fatal(err)
			}
			cfg := fileConfig(input)
			cfg.Decode.Fields = []string{"ax", "ay", "az"}
			cfg.Window = WindowConfig{Kind: "tumbling", Size: 2 * time.Second}
			cfg.Model = &infer.Config{Dir: filepath.Join(dir, "models"), Threads: 1, Engine: engine}
			ob := &memOutbox{}
			p := runUntil(t, cfg, ob, func() bool { return len(ob.byStream("inferences")) >= 2 }, 100*time.Millisecond)
			inf := ob.byStream("inferences")
			if len(inf) != 2 {
				t.Fatalf("%d inferences, want s1's two windows: %v", len(inf), inf)
			}
			for _, r := range inf {
				start, _ := time.Parse(time.RFC3339Nano, r["window_start"].(string))
				w := int(start.Sub(rawT0) / (2 * time.Second))
				want, err := eng.RunFeeds([]onnx.Feed{{Name: "wave", Shape: []int64{1, 3, 200}, Data: waveRow(0, w)}})
				if err != nil {
					t.Fatal(err)
				}
				got := r["scores"].([]any)[0].(float64)
				if r["key"] != "s1" || math.Abs(got-float64(want[0])) > 1e-5 {
					t.Fatalf("window %d of %v: score %v, want %v", w, r["key"], got, want[0])
				}
			}
			if p.Stats.Short.Load() != 1 || p.Stats.InferErrors.Load() != 0 {
				t.Fatalf("short %d, errors %d: want s2's half-empty window skipped and counted", p.Stats.Short.Load(), p.Stats.InferErrors.Load())
			}
		})
	}
}

// TestSpectrumInputScoresAWindow: a spectrum input's row (band RMS and
// peak of one axis) reaches a logistic model; the score is the one the
// tone's known spectrum gives.
func TestSpectrumInputScoresAWindow(t *testing.T) {
	if err := ort.Init(testenv.ORTLibrary(t)); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	// score = sigmoid(peak/10 - 1): the tone of s1's ax is 5 Hz.
	model, err := onnx.Logistic([][]float32{{0, 0, 0, 0, 0.1}}, []float32{-1})
	if err != nil {
		t.Fatal(err)
	}
	golden := []float32{0, 0, 0, 0, 10}
	m := &manifest.Manifest{Name: "tone", Version: 1, Task: "anomaly",
		Inputs: []manifest.Input{{Kind: manifest.Spectrum, Spectrum: &manifest.SpectrumSpec{
			Fields: []string{"ax"}, Points: 200, Bands: 4, Values: []string{"band_rms", "peak"}}}},
		Golden: []manifest.Golden{{Input: golden, Output: []float32{sigmoid(0)}, Tolerance: 1e-6}}}
	if err := manifest.Write(filepath.Join(dir, "models", infer.Active), m, model); err != nil {
		t.Fatal(err)
	}
	input := filepath.Join(dir, "in.jsonl")
	if err := os.WriteFile(input, []byte(vibrationLines(t)), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := fileConfig(input)
	cfg.Decode.Fields = []string{"ax", "ay", "az"}
	cfg.Window = WindowConfig{Kind: "tumbling", Size: 2 * time.Second}
	cfg.Model = &infer.Config{Dir: filepath.Join(dir, "models"), Threads: 1}
	ob := &memOutbox{}
	runUntil(t, cfg, ob, func() bool { return len(ob.byStream("inferences")) >= 3 }, 100*time.Millisecond)
	got := map[string]float64{}
	for _, r := range ob.byStream("inferences") {
		got[fmt.Sprint(r["key"], " ", r["window_start"])] = r["scores"].([]any)[0].(float64)
	}
	// s1 (5 Hz) twice, s2 (10 Hz: its half-rate samples still hold it) once.
	want := map[string]float32{"s1": sigmoid(5.0/10 - 1), "s2": sigmoid(10.0/10 - 1)}
	if len(got) != 3 {
		t.Fatalf("%d inferences, want 3: %v", len(got), got)
	}
	for k, v := range got {
		if w := want[strings.Fields(k)[0]]; math.Abs(v-float64(w)) > 1e-4 {
			t.Fatalf("%s: score %v, want %v (the tone's peak)", k, v, w)
		}
	}
}

// TestModelNeedingRawSamplesIsChecked: a model update that needs raw
// samples the running pipeline does not keep, or fields it does not
// decode, is refused with what to change.
func TestModelNeedingRawSamplesIsChecked(t *testing.T) {
	p := &Pipeline{cfg: Config{Name: "vib", Decode: ingest.DecodeConfig{Fields: []string{"ax"}}, Aggregations: []string{"mean"}}}
	seq := &manifest.Manifest{Name: "m", Inputs: []manifest.Input{{Kind: manifest.Sequence, Sequence: &manifest.SequenceSpec{Fields: []string{"ax"}, Steps: 4}}}}
	if err := p.CheckModel(seq); err == nil || !strings.Contains(err.Error(), "pipeline vib: model m needs raw samples") || !strings.Contains(err.Error(), "window.raw_samples: true") {
		t.Fatalf("raw samples not kept: %v", err)
	}
	// The config's own check is for the model at start, for which raw
	// samples are kept by themselves.
	if err := p.cfg.CheckModel(seq); err != nil {
		t.Fatalf("a model at start: %v", err)
	}
	p.cfg.Window.RawSamples = true
	if err := p.CheckModel(seq); err != nil {
		t.Fatal(err)
	}
	seq.Inputs[0].Sequence.Fields = []string{"ay"}
	if err := p.CheckModel(seq); err == nil || !strings.Contains(err.Error(), "raw samples of ay") {
		t.Fatalf("undecoded field: %v", err)
	}
	img := &manifest.Manifest{Name: "m", Inputs: []manifest.Input{{Kind: manifest.Image, Image: &manifest.ImageSpec{Width: 1, Height: 1, Channels: "RGB"}}}}
	if err := p.CheckModel(img); err == nil || !strings.Contains(err.Error(), "image source") {
		t.Fatalf("image model on a window pipeline: %v", err)
	}
}
