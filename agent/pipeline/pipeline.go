// Package pipeline wires one configured data path on the agent: a source,
// the decoder, an event-time window operator, and the outbox. Every window
// result, late event and rejected input becomes an outbox record before
// anything else happens to it.
package pipeline

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/outpost-edge/outpost/agent/infer"
	"github.com/outpost-edge/outpost/agent/ingest"
	"github.com/outpost-edge/outpost/agent/outbox"
	"github.com/outpost-edge/outpost/agent/window"
	"github.com/outpost-edge/outpost/deploy/config"
	"github.com/outpost-edge/outpost/models/features"
	"github.com/outpost-edge/outpost/models/manifest"
	"github.com/outpost-edge/outpost/models/ort"
	"github.com/outpost-edge/outpost/models/validate"
	"github.com/outpost-edge/outpost/sync/topics"
)

// Config is one entry of the agent's `pipelines` list.
type Config struct {
	Name         string              `yaml:"name"`
	Source       ingest.SourceConfig `yaml:"source"`
	Decode       ingest.DecodeConfig `yaml:"decode"`
	Window       WindowConfig        `yaml:"window"`
	Aggregations []string            `yaml:"aggregations"`
	Model        *infer.Config       `yaml:"model"`   // optional: run a model on every window result
	Actions      []ActionConfig      `yaml:"actions"` // what to do when the model flags a window
	Drift        *DriftConfig        `yaml:"drift"`   // optional: compare feature distributions with a reference
}

// WindowConfig is the YAML form of window.Spec.
type WindowConfig struct {
	Kind            string        `yaml:"kind"`
	Size            time.Duration `yaml:"size"`
	Slide           time.Duration `yaml:"slide"`
	Gap             time.Duration `yaml:"gap"`
	Count           int           `yaml:"count"`
	Watermark       string        `yaml:"watermark"`
	MaxOutOfOrder   time.Duration `yaml:"max_out_of_order"`
	AllowedLateness time.Duration `yaml:"allowed_lateness"`
	IdleTimeout     time.Duration `yaml:"idle_timeout"`
	EarlyEvery      int           `yaml:"early_every"`
	EarlyInterval   time.Duration `yaml:"early_interval"`
	// RawSamples keeps each window's raw readings, which sequence and
	// spectrum model inputs need; it is on by itself when the model at
	// start needs them, and set it to let a model update add such inputs.
	RawSamples bool `yaml:"raw_samples"`
	// MaxSamples bounds the raw readings kept per key and window.
	MaxSamples int `yaml:"max_samples"` // default 4096
}

// defaultMaxSamples keeps 40 s at 100 Hz per key and window.
const defaultMaxSamples = 4096

// frames reports whether the pipeline reads camera frames (an image
// source) instead of lines.
func (c Config) frames() bool { return c.Source.Type == "image" }

func (c Config) spec() window.Spec {
	if c.frames() {
		// A window operator that never sees an event keeps checkpoints
		// and ticks uniform.
		return window.Spec{Kind: window.Tumbling, Size: time.Second, Fields: []string{"frame"}}
	}
	w := c.Window
	percentiles := false
	for _, a := range c.Aggregations {
		percentiles = percentiles || window.Agg(a).IsPercentile()
	}
	s := window.Spec{Kind: window.Kind(w.Kind), Size: w.Size, Slide: w.Slide, Gap: w.Gap, Count: w.Count,
		Watermark: w.Watermark, MaxOutOfOrder: w.MaxOutOfOrder, AllowedLateness: w.AllowedLateness,
		IdleTimeout: w.IdleTimeout, EarlyEvery: w.EarlyEvery, EarlyInterval: w.EarlyInterval, Fields: c.Decode.Fields,
		Percentiles: percentiles}
	if w.RawSamples {
		// Every decoded field: a model update may read other fields than
		// the model it replaces.
		for i := range c.Decode.Fields {
			s.Raw = append(s.Raw, i)
		}
		s.MaxSamples = w.MaxSamples
		if s.MaxSamples == 0 {
			s.MaxSamples = defaultMaxSamples
		}
	}
	return s
}

// Validate adds every wrong field, by path, to errs.
func (c Config) Validate(path string, errs *config.Errors) {
	if err := topics.ValidDevice(c.Name); err != nil { // same token rules as ids
		errs.Add(path+".name", "must be letters, digits, '-' and '_'")
	}
	c.Source.Validate(path+".source", errs.Add)
	if c.frames() {
		// Frames are not windowed: decode, window and aggregations do not apply.
		if c.Model == nil {
			errs.Add(path+".model", "an image pipeline needs a model with an image input")
		}
		if c.Drift != nil {
			errs.Add(path+".drift", "drift compares window aggregates; an image pipeline has none")
		}
	}
	if _, err := ingest.NewDecoder(c.Decode, c.Name); err != nil && !c.frames() {
		errs.Add(path+".decode", err.Error())
	}
	if err := c.spec().Validate(); err != nil && !c.frames() {
		errs.Add(path+".window", err.Error())
	}
	if c.Window.MaxSamples < 0 || c.Window.MaxSamples > 1<<20 {
		errs.Add(path+".window.max_samples", "must be 0 (default 4096) to 1048576")
	}
	if c.Model != nil {
		if c.Model.Dir == "" {
			errs.Add(path+".model.dir", "must not be empty")
		}
		if c.Model.Provider != "" && !slices.Contains(ort.Providers, c.Model.Provider) {
			errs.Add(path+".model.provider", fmt.Sprintf("must be one of %v, got %q", ort.Providers, c.Model.Provider))
		}
		if e := c.Model.Engine; e != "" && e != "onnxruntime" && e != "go" {
			errs.Add(path+".model.engine", fmt.Sprintf("must be onnxruntime or go, got %q", e))
		}
		if c.Model.Threads < 0 {
			errs.Add(path+".model.threads", "must not be negative")
		}
	}
	for i, a := range c.Actions {
		a.validate(fmt.Sprintf("%s.actions[%d]", path, i), errs)
	}
	if len(c.Actions) > 0 && c.Model == nil {
		errs.Add(path+".actions", "actions need a model to trigger them")
	}
	if len(c.Aggregations) == 0 && !c.frames() {
		errs.Add(path+".aggregations", "name at least one of "+fmt.Sprint(window.Aggs))
	}
	if c.Drift != nil {
		c.Drift.validate(path+".drift", errs)
	}
	for i, a := range c.Aggregations {
		if _, err := window.ParseAgg(a); err != nil {
			errs.Add(fmt.Sprintf("%s.aggregations[%d]", path, i), err.Error())
		}
	}
}

// Store is the outbox, as the pipeline uses it: records and the pipeline's
// checkpoint are committed together.
type Store interface {
	AppendCheckpoint(ctx context.Context, items []outbox.Item, name string, state []byte) ([]uint64, error)
	Checkpoint(ctx context.Context, name string) ([]byte, error)
}

// DeltaStore is a Store that keeps checkpoints as a global row plus one
// row per window key, so that a commit writes only the keys that changed
// (the SQLite outbox). With a plain Store every commit writes a full
// snapshot.
type DeltaStore interface {
	AppendCheckpointDelta(ctx context.Context, items []outbox.Item, cp outbox.CheckpointDelta) ([]uint64, error)
	CheckpointKeys(ctx context.Context, name string) ([]outbox.KeyState, error)
}

// checkpoint is what a pipeline stores with each batch of records.
type checkpoint struct {
	Offset int64 `json:"offset"` // source position after the last processed line
	// Window is the operator's full snapshot (format 0, and every
	// checkpoint before delta checkpoints), or with formatDelta its global
	// part, the key rows being stored beside it.
	Window []byte `json:"window"`
	Format int    `json:"format,omitempty"`
}

// formatDelta marks a checkpoint whose window keys are stored as rows.
const formatDelta = 2

// Stats count one pipeline's work.
type Stats struct {
	Events, Rejected, Windows, Late atomic.Int64
	Inferences, InferErrors, Alerts atomic.Int64
	// WriteErrors counts failed outbox commits (retried, nothing dropped).
	WriteErrors atomic.Int64
	// InferLatency observes each micro-batch call, for the histogram.
	InferLatency func(time.Duration)
	// WatermarkLag is how far the watermark trails processing time.
	WatermarkLag atomic.Int64 // nanoseconds
	// InferCalls and InferNanos give the mean micro-batch latency; NaN
	// counts rows whose scores held a NaN or an infinity. Updates watch
	// them during probation.
	InferCalls, InferNanos, NaN atomic.Int64
	// DriftChecks counts comparisons with the reference; DriftDetected
	// those that found a feature drifted.
	DriftChecks, DriftDetected atomic.Int64
	// Short counts windows not scored because they held too few raw
	// samples for the model's input; RawDropped raw samples past a
	// window's max_samples.
	Short, RawDropped atomic.Int64
}

// Pipeline is one running data path.
type Pipeline struct {
	cfg    Config
	ob     Store
	log    *slog.Logger
	dec    *ingest.Decoder
	op     *window.Operator
	aggs   []window.Agg
	source func(context.Context, chan<- ingest.Line) error
	items  []outbox.Item
	acks   []func() // source messages to acknowledge after the next flush
	// maxUnacked is how many acks wait before a flush is forced: the
	// source's window, set when it connects.
	maxUnacked  atomic.Int64
	model       *infer.Model
	swaps       chan swap // model updates, applied between batches
	shadow      *infer.Model
	split       float64
	shadowStats shadowCounters
	recent      recent // the latest rows fed to the model, for self-tests
	calls       calls  // the latest model calls, for the reported latency
	drift       *driftState
	scratch     features.Scratch // rows of sequence and spectrum inputs
	acts        *actions
	offset      int64 // source position of the last processed line
	saved       int64 // offset in the last stored checkpoint
	keyRows     []outbox.KeyState
	rejLog      rate.Sometimes
	writeLog    rate.Sometimes
	Stats       Stats
}

// New builds a pipeline from a validated config and resumes from its
// checkpoint, if it has one.
func New(ctx context.Context, cfg Config, ob Store, log *slog.Logger) (*Pipeline, error) {
	dec, err := ingest.NewDecoder(cfg.Decode, cfg.Name)
	if err != nil && !cfg.frames() {
		return nil, err
	}
	p := &Pipeline{cfg: cfg, ob: ob, log: log.With("pipeline", cfg.Name), dec: dec, swaps: make(chan swap),
		rejLog: rate.Sometimes{First: 5, Interval: 10 * time.Second}, writeLog: rate.Sometimes{First: 1, Interval: 10 * time.Second}}
	for _, a := range cfg.Aggregations {
		g, err := window.ParseAgg(a)
		if err != nil {
			return nil, err
		}
		p.aggs = append(p.aggs, g)
	}
	if cfg.Model != nil {
		if p.model, err = infer.LoadSlot(*cfg.Model, infer.Active, p.log); err != nil {
			return nil, fmt.Errorf("pipeline %s: %w", cfg.Name, err)
		}
		// Raw samples are kept only for pipelines whose model needs them.
		if len(p.model.Manifest.RawFields()) > 0 {
			p.cfg.Window.RawSamples = true
		}
		// The manifest must only ask for what this pipeline computes.
		if err := p.CheckModel(p.model.Manifest); err != nil {
			return nil, err
		}
		p.acts = newActions(cfg.Actions, p.log)
	}
	if p.op, err = window.New(p.cfg.spec()); err != nil {
		return nil, err
	}
	if cfg.Drift != nil {
		p.drift = newDrift(*cfg.Drift, p.driftNames())
	}
	if err := p.resume(ctx); err != nil {
		return nil, err
	}
	p.maxUnacked.Store(int64(cfg.Source.MQTT.Window(false)))
	if cfg.Source.MQTT.ClientID == "" {
		cfg.Source.MQTT.ClientID = "outpost-" + cfg.Name
	}
	if p.source, err = ingest.Open(cfg.Source, p.offset, log, func(n int) { p.maxUnacked.Store(int64(n)) }); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *Pipeline) checkpointName() string { return "pipeline/" + p.cfg.Name }

// resume restores window state and the source position. A checkpoint from
// another window configuration cannot be continued: the pipeline then
// starts its windows afresh and says so.
func (p *Pipeline) resume(ctx context.Context) error {
	data, err := p.ob.Checkpoint(ctx, p.checkpointName())
	if err != nil || data == nil {
		return err
	}
	var cp checkpoint
	if err := json.Unmarshal(data, &cp); err != nil {
		p.log.Warn("ignoring unreadable checkpoint", "err", err)
		return nil
	}
	if err := p.restoreWindow(ctx, cp); err != nil {
		p.log.Warn("window configuration changed; open windows start afresh", "err", err)
	}
	p.offset, p.saved = cp.Offset, cp.Offset
	p.log.Info("resumed from checkpoint", "offset", cp.Offset, "open_windows", p.op.OpenWindows())
	return nil
}

// restoreWindow restores the operator from a full snapshot (older
// checkpoints: the next commit rewrites them as key rows) or from the
// global part and key rows of a delta checkpoint.
func (p *Pipeline) restoreWindow(ctx context.Context, cp checkpoint) error {
	if cp.Format != formatDelta {
		return p.op.Restore(cp.Window)
	}
	ds, ok := p.ob.(DeltaStore)
	if !ok {
		return fmt.Errorf("%w: a delta checkpoint in a store without key rows", window.ErrSnapshot)
	}
	rows, err := ds.CheckpointKeys(ctx, p.checkpointName())
	if err != nil {
		return err
	}
	keys := make([]window.KeyState, len(rows))
	for i, r := range rows {
		keys[i] = window.KeyState{Key: r.Key, State: r.State}
	}
	return p.op.RestoreState(cp.Window, keys)
}

// flushEvery bounds how long results wait before one fsync'd outbox commit.
const (
	flushEvery = 50 * time.Millisecond
	flushItems = 1000
)

// Run processes until ctx ends or the source finishes. When ctx ends it
// stops the source and keeps processing and committing what the source
// hands over until the source has returned: what a source acknowledged
// (an HTTP 200, an MQTT PUBACK) is then in the outbox. Run never returns
// with its source still running or a commit in flight.
func (p *Pipeline) Run(ctx context.Context) error {
	lines := make(chan ingest.Line, 4096)
	srcDone := make(chan error, 1)
	srcCtx, stopSrc := context.WithCancel(ctx)
	defer stopSrc()
	// Never closed: a source that sends after returning must not panic.
	go func() { srcDone <- p.source(srcCtx, lines) }()
	// Commits are not cut short by ctx: they must land while stopping.
	wctx := context.WithoutCancel(ctx)
	tick := time.NewTicker(flushEvery)
	defer tick.Stop()
	var results []window.Result
	stalled := false // the outbox refused the last write: stop reading input
	done := ctx.Done()
	for {
		in := lines
		if stalled {
			in = nil // backpressure: the source blocks, nothing accepted is dropped
		}
		select {
		case l := <-in:
			results = p.handle(l, results[:0])
			if len(p.items) >= flushItems || (len(p.acks) > 0 && int64(len(p.acks)) >= p.maxUnacked.Load()) {
				stalled = !p.tryFlush(wctx)
			}
		case err := <-srcDone:
			return p.finish(wctx, lines, err)
		case now := <-tick.C:
			if !stalled {
				results = p.op.Advance(now, results[:0])
				p.addResults(results)
				if wm := p.op.Watermark(); !wm.IsZero() {
					p.Stats.WatermarkLag.Store(int64(now.Sub(wm)))
				}
			}
			stalled = !p.tryFlush(wctx)
		case sw := <-p.swaps:
			if sw.shadow {
				p.shadow, p.split = sw.model, sw.split
				if sw.model != nil {
					p.log.Info("candidate model in shadow", "model", sw.model.Manifest.Name, "version", sw.model.Manifest.Version, "split", sw.split)
				}
				close(sw.done)
				continue
			}
			old := p.model
			p.model = sw.model
			if old != nil {
				old.Close()
			}
			p.log.Info("model switched", "model", sw.model.Manifest.Name, "version", sw.model.Manifest.Version, "slot", sw.model.Slot)
			close(sw.done)
		case <-done:
			// Keep committing until the source has returned: an HTTP push
			// already handed over waits for its commit.
			done = nil
			stopSrc()
		}
	}
}

type swap struct {
	model  *infer.Model
	shadow bool    // set the shadow (candidate) model instead of the active one
	split  float64 // with shadow: the share of windows the candidate serves
	done   chan struct{}
}

// Name is the pipeline's configured name.
func (p *Pipeline) Name() string { return p.cfg.Name }

// ModelConfig is the pipeline's model section; ok is false without one.
func (p *Pipeline) ModelConfig() (infer.Config, bool) {
	if p.cfg.Model == nil {
		return infer.Config{}, false
	}
	return *p.cfg.Model, true
}

// Manifest is the manifest of the model as loaded at start; after a swap
// the caller knows what it installed.
func (p *Pipeline) Manifest() *manifest.Manifest {
	if p.model == nil {
		return nil
	}
	return p.model.Manifest
}

// CheckModel refuses a model that asks for features this running pipeline
// does not compute: an update's model, judged by what the pipeline keeps
// now (raw samples only if it started with them).
func (p *Pipeline) CheckModel(m *manifest.Manifest) error {
	if err := p.cfg.computes().Feeds(m); err != nil {
		return fmt.Errorf("pipeline %s: %w", p.cfg.Name, err)
	}
	return nil
}

// CheckModel refuses a model this pipeline could not start with. It needs
// no running pipeline: the agent checks its config's model packages with
// it before it enrols. Raw samples are kept by themselves for a model at
// start that needs them, as New does.
func (c Config) CheckModel(m *manifest.Manifest) error {
	if len(m.RawFields()) > 0 {
		c.Window.RawSamples = true
	}
	return c.computes().Feeds(m)
}

// computes is what the pipeline computes for a model.
func (c Config) computes() validate.Pipeline {
	return validate.Pipeline{Images: c.frames(), Fields: c.Decode.Fields, Aggregations: c.Aggregations, RawSamples: c.Window.RawSamples}
}

// SwapModel hands m to the running pipeline, which uses it from the next
// batch on and closes the model it replaces.
func (p *Pipeline) SwapModel(ctx context.Context, m *infer.Model) error {
	sw := swap{model: m, done: make(chan struct{})}
	select {
	case p.swaps <- sw:
	case <-ctx.Done():
		return fmt.Errorf("pipeline %s: swap model: %w", p.cfg.Name, ctx.Err())
	}
	<-sw.done
	return nil
}

// SetShadow runs m beside the active model from the next batch on (nil
// stops it). With split 0 its outputs are only compared with the active
// model's; with split in (0, 1] it serves that share of the windows (by a
// hash of key and window start), and is compared on those. The pipeline
// does not close m: the caller keeps it.
func (p *Pipeline) SetShadow(ctx context.Context, m *infer.Model, split float64) error {
	sw := swap{model: m, shadow: true, split: split, done: make(chan struct{})}
	select {
	case p.swaps <- sw:
	case <-ctx.Done():
		return fmt.Errorf("pipeline %s: shadow model: %w", p.cfg.Name, ctx.Err())
	}
	<-sw.done
	return nil
}

// ShadowHealth is a snapshot of the shadow counters.
func (p *Pipeline) ShadowHealth() ShadowStats { return p.shadowStats.snapshot() }

// Health is a snapshot of the inference counters.
func (p *Pipeline) Health() (inferences, errors, nan, calls, nanos int64) {
	s := &p.Stats
	return s.Inferences.Load(), s.InferErrors.Load(), s.NaN.Load(), s.InferCalls.Load(), s.InferNanos.Load()
}

// tryFlush writes pending records; a failure (a full disk, say) is a
// state, not a crash: it is counted and logged, the records stay pending,
// and the next tick tries again.
func (p *Pipeline) tryFlush(ctx context.Context) bool {
	if err := p.flush(ctx); err != nil {
		p.Stats.WriteErrors.Add(1)
		p.writeLog.Do(func() {
			p.log.Error("outbox write failed; input paused until it succeeds", "pending", len(p.items), "err", err)
		})
		return false
	}
	return true
}

// finish processes the lines the source left queued and commits them.
func (p *Pipeline) finish(ctx context.Context, lines <-chan ingest.Line, srcErr error) error {
	var results []window.Result
	for more := true; more; {
		select {
		case l := <-lines:
			results = p.handle(l, results[:0])
		default:
			more = false
		}
	}
	fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := p.flush(fctx); err != nil {
		return err
	}
	return srcErr
}

func (p *Pipeline) handle(l ingest.Line, results []window.Result) []window.Result {
	if l.Ack != nil {
		p.acks = append(p.acks, l.Ack)
	}
	if l.Offset > 0 {
		p.offset = l.Offset
	}
	if l.Frame != nil {
		p.handleFrame(l.Frame)
		return results
	}
	r, rej := p.dec.Decode(l.Data, l.Arrival)
	if rej != nil {
		p.Stats.Rejected.Add(1)
		p.rejLog.Do(func() { p.log.Warn("input rejected", "reason", rej.Reason, "rejected_total", p.Stats.Rejected.Load()) })
		p.add("dead", l.Arrival, map[string]any{"pipeline": p.cfg.Name, "reason": rej.Reason, "line": string(rej.Line)})
		return results
	}
	p.Stats.Events.Add(1)
	results, late := p.op.Process(window.Event{Key: r.Key, Time: r.Time, Values: r.Values, Watermark: r.Watermark}, l.Arrival, results)
	if late {
		p.Stats.Late.Add(1)
		vals := map[string]float64{}
		for i, f := range p.cfg.Decode.Fields {
			vals[f] = r.Values[i]
		}
		p.add("late", r.Time, map[string]any{"pipeline": p.cfg.Name, "key": r.Key, "event_time": r.Time, "values": vals, "watermark": p.op.Watermark()})
	}
	p.addResults(results)
	return results
}

// maxDeadFrame is the largest undecodable frame a dead record carries
// whole (base64): a camera's broken frame can be looked at later.
const maxDeadFrame = 256 << 10

// handleFrame decodes one camera frame and scores it; a frame that does
// not decode becomes a dead record with the reason.
func (p *Pipeline) handleFrame(f *ingest.Frame) {
	key := f.Key
	if key == "" {
		key = p.cfg.Name
	}
	img, _, err := features.DecodeFrame(f.Data)
	if err != nil {
		p.Stats.Rejected.Add(1)
		p.rejLog.Do(func() { p.log.Warn("frame rejected", "key", key, "frame", f.Name, "err", err) })
		rec := map[string]any{"pipeline": p.cfg.Name, "key": key, "frame": f.Name, "reason": err.Error(), "bytes": len(f.Data)}
		if len(f.Data) <= maxDeadFrame {
			rec["data"] = f.Data
		}
		p.add("dead", f.Time, rec)
		return
	}
	p.Stats.Events.Add(1)
	res := []window.Result{{Key: key, Start: f.Time.UTC(), End: f.Time.UTC(), Firing: Frame}}
	p.infer(res, []frame{{img: img, name: f.Name}})
}

// Frame is the firing of an image pipeline's inference records: one per
// frame, its window_start and window_end the frame's time.
const Frame window.Firing = "frame"

// WindowRecord is the data of a `windows` record.
type WindowRecord struct {
	Pipeline string                        `json:"pipeline"`
	Key      string                        `json:"key"`
	Start    time.Time                     `json:"start"`
	End      time.Time                     `json:"end"`
	Firing   window.Firing                 `json:"firing"`
	Revision int                           `json:"revision"`
	Count    int64                         `json:"count"`
	Fields   map[string]map[string]float64 `json:"fields"`
}

func (p *Pipeline) addResults(results []window.Result) {
	p.Stats.RawDropped.Store(p.op.Stats.RawDropped)
	var scores map[int]float64
	if p.model != nil {
		scores = p.infer(results, nil)
	}
	if p.drift != nil {
		p.observeDrift(results, scores)
	}
	for i := range results {
		r := &results[i]
		p.Stats.Windows.Add(1)
		rec := WindowRecord{Pipeline: p.cfg.Name, Key: r.Key, Start: r.Start, End: r.End, Firing: r.Firing,
			Revision: r.Revision, Count: r.Count, Fields: map[string]map[string]float64{}}
		for fi, f := range p.cfg.Decode.Fields {
			m := map[string]float64{}
			for _, a := range p.aggs {
				if v := r.Value(fi, a); !math.IsNaN(v) && !math.IsInf(v, 0) {
					m[string(a)] = v
				}
			}
			rec.Fields[f] = m
		}
		p.add("windows", r.End, rec)
	}
}

func (p *Pipeline) add(stream string, at time.Time, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		p.log.Error("encode record", "stream", stream, "err", err)
		return
	}
	p.items = append(p.items, outbox.Item{Stream: stream, EventTime: at, Data: data})
}

// flush commits pending records together with the checkpoint that
// produced them.
func (p *Pipeline) flush(ctx context.Context) error {
	if len(p.items) == 0 && p.offset == p.saved && len(p.acks) == 0 {
		return nil
	}
	if ds, ok := p.ob.(DeltaStore); ok {
		// Only the keys changed since the last commit are written; they
		// stay marked until this commit succeeds.
		d := p.op.Delta()
		state, _ := json.Marshal(checkpoint{Offset: p.offset, Window: d.Global, Format: formatDelta})
		keys := p.keyRows[:0]
		for _, k := range d.Keys {
			keys = append(keys, outbox.KeyState{Key: k.Key, State: k.State})
		}
		p.keyRows = keys
		if _, err := ds.AppendCheckpointDelta(ctx, p.items, outbox.CheckpointDelta{Name: p.checkpointName(), State: state, Full: d.Full, Keys: keys}); err != nil {
			return fmt.Errorf("pipeline %s: %w", p.cfg.Name, err)
		}
		p.op.Committed()
	} else {
		snap, err := p.op.Snapshot()
		if err != nil {
			return err
		}
		state, _ := json.Marshal(checkpoint{Offset: p.offset, Window: snap}) // bytes and an int
		if _, err := p.ob.AppendCheckpoint(ctx, p.items, p.checkpointName(), state); err != nil {
			return fmt.Errorf("pipeline %s: %w", p.cfg.Name, err)
		}
	}
	p.items, p.saved = p.items[:0], p.offset
	// The window state holding these lines is durable now.
	for _, ack := range p.acks {
		ack()
	}
	p.acks = p.acks[:0]
	return nil
}
