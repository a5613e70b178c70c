// Package infer runs model packages on the agent: it loads them into
// slots (active, and a candidate for updates), self-tests them with their
// golden vectors before use, and runs micro-batches of feature vectors.
package infer

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/outpost-edge/outpost/models/goengine"
	"github.com/outpost-edge/outpost/models/manifest"
	"github.com/outpost-edge/outpost/models/onnx"
	"github.com/outpost-edge/outpost/models/ort"
	"github.com/outpost-edge/outpost/models/validate"
)

// Config is a pipeline's `model` section.
type Config struct {
	Dir      string `yaml:"dir"`      // a model directory with slots active/ (and candidate/), or one package
	Provider string `yaml:"provider"` // cpu (default), cuda, tensorrt, openvino
	Threads  int    `yaml:"threads"`  // ONNX Runtime intra-op threads (0: its default)
	Engine   string `yaml:"engine"`   // onnxruntime (default) or go: the pure-Go engine, for devices without ONNX Runtime
}

// UsesORT reports whether the model needs the ONNX Runtime library.
func (c Config) UsesORT() bool { return c.Engine == "" || c.Engine == "onnxruntime" }

// Slot names. Updates install into the candidate slot and switch.
const (
	Active    = "active"
	Candidate = "candidate"
)

// Engine is what runs a batch; the ONNX Runtime session is one.
type Engine interface {
	Run(x []float32, features int) ([]float32, error)
	RunFeeds(feeds []onnx.Feed) ([]float32, error)
	Outputs() int
	Close() error
}

// Model is a loaded, self-tested model package.
type Model struct {
	Manifest *manifest.Manifest
	Slot     string
	engine   Engine
	run      func(x []float32, features int) ([]float32, error) // engine.Run, or RunShared
}

// LoadSlot loads a slot of dir (or dir itself when it has no slots) on
// ONNX Runtime, which must be initialised (ort.Init).
func LoadSlot(cfg Config, slot string, log *slog.Logger) (*Model, error) {
	dir := filepath.Join(cfg.Dir, slot)
	if _, err := os.Stat(dir); err != nil {
		if slot != Active {
			return nil, fmt.Errorf("infer: slot %s: %w", slot, err)
		}
		dir = cfg.Dir // a bare package is the active model
	}
	m, onnxData, err := manifest.Load(dir)
	if err != nil {
		return nil, err
	}
	// A graph that does not take the manifest's features is refused before
	// any engine sees it.
	info, err := onnx.Inspect(onnxData)
	if err != nil {
		return nil, err
	}
	if err := validate.Fits(m, info); err != nil {
		return nil, err
	}
	var eng Engine
	provider := "go"
	if cfg.UsesORT() {
		s, err := ort.NewSessionWith(onnxData, ort.Options{Provider: cfg.Provider, IntraOpThreads: cfg.Threads, Output: m.Outputs.Scores})
		if err != nil {
			return nil, err
		}
		if s.FallbackReason != "" {
			log.Warn("execution provider unavailable, running on cpu", "model", m.Name, "asked", cfg.Provider, "reason", s.FallbackReason)
		}
		eng, provider = s, s.Provider
	} else {
		if eng, err = goengine.LoadWith(onnxData, goengine.Options{Output: m.Outputs.Scores}); err != nil {
			return nil, err
		}
	}
	model := &Model{Manifest: m, Slot: slot, engine: eng, run: eng.Run}
	if sr, ok := eng.(sharedRunner); ok {
		model.run = sr.RunShared
	}
	if ins := m.InputList(); len(ins) > 1 || ins[0].Kind != manifest.Aggregates {
		// Sequences, spectra, images and several inputs go through feeds
		// of their real shapes; one aggregates row keeps the fast path.
		var fr validate.FeedRunner = eng
		if sr, ok := eng.(sharedFeedRunner); ok {
			fr = sharedFeeds{sr}
		}
		model.run = validate.Rows(m, info, fr)
	}
	if err := model.SelfTest(); err != nil {
		eng.Close()
		return nil, err
	}
	log.Info("model loaded", "model", m.Name, "version", m.Version, "slot", slot, "engine", cfg.Engine, "provider", provider)
	return model, nil
}

// SelfTest runs the golden vectors, as one batch and row by row, on the
// path inference takes; a model that does not reproduce them is never
// used.
func (m *Model) SelfTest() error {
	run := func(x []float32, width int) ([]float32, error) {
		out, err := m.run(x, width)
		return append([]float32(nil), out...), err // the shared path's buffer is reused by the next run
	}
	if _, err := m.Manifest.CheckGolden(run); err != nil {
		return fmt.Errorf("%w: %w", ErrSelfTest, err)
	}
	return nil
}

// Infer runs one micro-batch of rows and reports how long the call took.
// The result may be the engine's own buffer: valid until the next Infer.
func (m *Model) Infer(x []float32) ([]float32, time.Duration, error) {
	start := time.Since(epoch)
	out, err := m.run(x, m.Manifest.RowWidth())
	return out, time.Since(epoch) - start, err
}

// epoch makes Infer's timing two monotonic clock reads: time.Now would
// read the wall clock too, a measurable share of a small model's call.
var epoch = time.Now()

// sharedRunner is an engine that can hand out its output buffer instead
// of a copy (ONNX Runtime's output tensor). Infer's result is therefore
// valid only until the next Infer on the same model: callers copy what
// they keep, as the pipeline does per row.
type sharedRunner interface {
	RunShared(x []float32, features int) ([]float32, error)
}

// sharedFeedRunner is the same for feeds.
type sharedFeedRunner interface {
	RunFeedsShared(feeds []onnx.Feed) ([]float32, error)
}

type sharedFeeds struct{ sharedFeedRunner }

func (s sharedFeeds) RunFeeds(feeds []onnx.Feed) ([]float32, error) { return s.RunFeedsShared(feeds) }

// Outputs is the output width per row.
func (m *Model) Outputs() int { return m.engine.Outputs() }

// Close releases the engine.
func (m *Model) Close() error { return m.engine.Close() }
