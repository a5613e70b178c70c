package pipeline

import (
	"bytes"
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/agent/infer"
	"github.com/outpost-edge/outpost/agent/ingest"
	"github.com/outpost-edge/outpost/deploy/config"
	"github.com/outpost-edge/outpost/models/features"
	"github.com/outpost-edge/outpost/models/goengine"
	"github.com/outpost-edge/outpost/models/manifest"
	"github.com/outpost-edge/outpost/models/onnx"
	"github.com/outpost-edge/outpost/models/ort"
	"github.com/outpost-edge/outpost/test/testenv"
)

// testFrame is a w×h PNG: a diagonal gradient in a per-seed colour.
func testFrame(t *testing.T, w, h int, seed uint8) []byte {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.Set(x, y, color.RGBA{uint8(x * 255 / w), seed, uint8(y * 255 / h), 255})
		}
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

var frameSpec = &manifest.ImageSpec{Width: 32, Height: 32, Channels: "RGB", Normalize: []manifest.Norm{{Mean: 0.5, Std: 0.25}, {Mean: 0.5, Std: 0.25}, {Mean: 0.5, Std: 0.25}}}

// writeImageModel packages a small image CNN with its golden vector
// taken from one decoded test frame.
func writeImageModel(t *testing.T, dir string) *goengine.Engine {
	t.Helper()
	model, err := onnx.CNN2D("frame", 32, 8, 3, 5)
	if err != nil {
		t.Fatal(err)
	}
	eng, err := goengine.Load(model)
	if err != nil {
		t.Fatal(err)
	}
	row := frameRow(t, testFrame(t, 64, 48, 0))
	out, err := eng.RunFeeds([]onnx.Feed{{Name: "frame", Shape: []int64{1, 3, 32, 32}, Data: row}})
	if err != nil {
		t.Fatal(err)
	}
	m := &manifest.Manifest{Name: "camera", Version: 2, Task: "classification",
		Inputs:  []manifest.Input{{Name: "frame", Kind: manifest.Image, Image: frameSpec}},
		Outputs: manifest.Outputs{Labels: []string{"empty", "person", "vehicle"}},
		Golden:  []manifest.Golden{{Input: row, Output: out, Tolerance: 1e-5}}}
	if err := manifest.Write(dir, m, model); err != nil {
		t.Fatal(err)
	}
	return eng
}

func frameRow(t *testing.T, data []byte) []float32 {
	img, _, err := features.DecodeFrame(data)
	if err != nil {
		t.Fatal(err)
	}
	var sc features.Scratch
	return sc.ImageRow(frameSpec, img, nil)
}

// TestImagePipelineScoresDroppedFrames: PNGs dropped into the watched
// directory are decoded, resized and scored, one inference record per
// frame with its key and file name; a frame that does not decode is a
// dead record with the reason and its bytes; every file is removed only
// once its record is committed.
func TestImagePipelineScoresDroppedFrames(t *testing.T) {
	if err := ort.Init(testenv.ORTLibrary(t)); err != nil {
		t.Fatal(err)
	}
	for _, engine := range []string{"onnxruntime", "go"} {
		t.Run(engine, func(t *testing.T) {
			dir := t.TempDir()
			eng := writeImageModel(t, filepath.Join(dir, "models", infer.Active))
			watch := filepath.Join(dir, "frames")
			frames := map[string][]byte{"a.png": testFrame(t, 64, 48, 10), "b.png": testFrame(t, 20, 30, 200)}
			if err := os.MkdirAll(filepath.Join(watch, "cam2"), 0o755); err != nil {
				t.Fatal(err)
			}
			drop := func(name string, data []byte) {
				tmp := filepath.Join(watch, ".tmp-"+filepath.Base(name))
				if err := os.WriteFile(tmp, data, 0o644); err != nil {
					t.Fatal(err)
				}
				if err := os.Rename(tmp, filepath.Join(watch, name)); err != nil { // atomically, as documented
					t.Fatal(err)
				}
			}
			drop("a.png", frames["a.png"])
			drop("cam2/b.png", frames["b.png"])
			broken := testFrame(t, 16, 16, 1)[:80] // a PNG's magic, then truncated
			drop("c.png", broken)
			cfg := Config{Name: "door-camera",
				Source: ingest.SourceConfig{Type: "image", Image: ingest.ImageConfig{Dir: watch, Key: "cam1", Poll: 20 * time.Millisecond, Settle: time.Millisecond}},
				Model:  &infer.Config{Dir: filepath.Join(dir, "models"), Threads: 1, Engine: engine}}
			ob := &memOutbox{}
			p := runUntil(t, cfg, ob, func() bool {
				return len(ob.byStream("inferences")) >= 2 && len(ob.byStream("dead")) >= 1
			}, 200*time.Millisecond)
			inf := ob.byStream("inferences")
			if len(inf) != 2 {
				t.Fatalf("%d inferences, want one per good frame: %v", len(inf), inf)
			}
			for _, r := range inf {
				name := r["frame"].(string)
				want, err := eng.RunFeeds([]onnx.Feed{{Name: "frame", Shape: []int64{1, 3, 32, 32}, Data: frameRow(t, frames[name])}})
				if err != nil {
					t.Fatal(err)
				}
				wantKey := map[string]string{"a.png": "cam1", "b.png": "cam2"}[name]
				scores := r["scores"].([]any)
				if r["key"] != wantKey || r["firing"] != "frame" || len(scores) != 3 {
					t.Fatalf("record %v", r)
				}
				for i, s := range scores {
					if math.Abs(s.(float64)-float64(want[i])) > 1e-5 {
						t.Fatalf("%s: scores %v, want %v", name, scores, want)
					}
				}
			}
			dead := ob.byStream("dead")
			if len(dead) != 1 || dead[0]["frame"] != "c.png" || dead[0]["data"] == nil || p.Stats.Rejected.Load() != 1 {
				t.Fatalf("dead records %v, rejected %d: want c.png with its bytes", dead, p.Stats.Rejected.Load())
			}
			for _, name := range []string{"a.png", "cam2/b.png", "c.png"} {
				if _, err := os.Stat(filepath.Join(watch, name)); !os.IsNotExist(err) {
					t.Fatalf("%s is still in the watched directory after its record was committed: %v", name, err)
				}
			}
		})
	}
}

// TestImagePipelineConfig: an image pipeline needs no decode, window or
// aggregations, but a model with one image input; a window model is
// refused on it and an image model on a window pipeline.
func TestImagePipelineConfig(t *testing.T) {
	cfg := Config{Name: "cam", Source: ingest.SourceConfig{Type: "image", Image: ingest.ImageConfig{Dir: t.TempDir()}}}
	var errs config.Errors
	cfg.Validate("pipelines[0]", &errs)
	if len(errs) != 1 || errs[0].Path != "pipelines[0].model" {
		t.Fatalf("errors %v, want only pipelines[0].model", errs)
	}
	p := &Pipeline{cfg: cfg}
	win := &manifest.Manifest{Name: "m", Features: []manifest.Feature{{Field: "v", Agg: "mean"}}}
	if err := p.CheckModel(win); err == nil {
		t.Fatal("a window model was accepted on an image pipeline")
	}
}
