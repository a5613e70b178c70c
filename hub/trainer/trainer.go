// Package trainer is the hub's retraining loop: it reads the fleet's
// window records and labels from the ingest stream, pairs them (a label
// field of the window, or `labels` records joined by window), keeps a
// learner warm-started from each production model training on them, and
// when ADWIN sees production's error rate change (a concept drift), on a
// schedule, or when an operator asks, judges the learner against
// production on a holdout. A learner that wins is exported to ONNX,
// optionally quantized, given golden vectors, registered as the next
// version, and rolled out to one canary device.
package trainer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-edge/outpost/hub/api"
	"github.com/outpost-edge/outpost/hub/trainer/join"
	"github.com/outpost-edge/outpost/hub/trainer/learn"
	"github.com/outpost-edge/outpost/models/goengine"
	"github.com/outpost-edge/outpost/models/manifest"
	"github.com/outpost-edge/outpost/quant"
	"github.com/outpost-edge/outpost/sync/envelope"
)

// Registry is where champions come from and candidates go.
type Registry interface {
	// Production returns the production version's package; ok is false
	// when the model has none yet.
	Production(ctx context.Context, model string) (manifestJSON, onnx []byte, ok bool, err error)
	Latest(ctx context.Context, model string) (int64, error)
	Register(ctx context.Context, manifestJSON, onnx []byte) (int64, error)
}

// Releaser starts a release's canary rollout.
type Releaser interface {
	Canary(ctx context.Context, model string, version int64, selector map[string]string) (string, error)
}

// Sink receives every history event as it happens: the hub writes them
// to the events topic for cloud teams.
type Sink interface {
	Emit(ctx context.Context, model string, e Event)
}

// HistoryStore keeps every model's history durably (the hub: a journal
// in JetStream, replicated), so that it outlives a restart and answers on
// every hub of a cluster, not only on the lease holder that trains.
type HistoryStore interface {
	AppendHistory(ctx context.Context, model string, e Event) error
	ReadHistory(ctx context.Context, model string) ([]Event, error)
}

// historyInMemory bounds the events a trainer keeps in memory, for a
// hub without a store and for events the store has not taken yet.
const historyInMemory = 10000

// The trainer's API types live in hub/api (shared with the CLI).
type (
	Event        = api.TrainingEvent
	Status       = api.TrainingStatus
	FleetDrift   = api.FleetDrift
	CohortStatus = api.CohortStatus
)

// Subjects the trainer reads from the ingest stream.
var Subjects = []string{"outpost.v1.*.up.windows", "outpost.v1.*.up.labels", "outpost.v1.*.up.drift"}

// Consumer is the trainer's durable consumer on the ingest stream.
const Consumer = "trainer"

type model struct {
	cfg     ModelConfig
	man     *manifest.Manifest
	r       *learn.Retrain
	join    *join.Join
	status  Status
	history []Event
	// recent labelled rows, for calibration, golden vectors and the
	// quantization check
	recentX [][]float64
	recentY []int
	reports map[string]driftReport // by device
	cohorts map[string]*cohort     // by cohort label value
	nextRun time.Time              // the next scheduled check
}

// Trainer runs the loop for every configured model.
type Trainer struct {
	cfg Config
	reg Registry
	rel Releaser
	log *slog.Logger
	// Sink, when set, gets every event too.
	Sink Sink
	// Store, when set, keeps the history; History reads it.
	Store HistoryStore
	// OnDrift, when set, gets every device drift record the trainer reads
	// (the hub's device timeline keeps their changes).
	OnDrift func(device, pipeline string, drifted []string)
	// Decoder bounds what a payload may inflate to (nil: the package
	// default).
	Decoder *envelope.Decoder
	// labels gives a device's labels, for cohorts.
	labels func(device string) map[string]string

	mu        sync.Mutex
	models    map[string]*model
	badLabels int64
	// unstored are events the store refused (JetStream electing leaders,
	// or down), in order: retried before the next ones, so none is lost
	// and the history keeps its order.
	unstored      []storedEvent
	storeFailures int64
	flushMu       sync.Mutex
}

type storedEvent struct {
	model string
	e     Event
}

// New builds a trainer; Run starts it.
// labels gives a device's labels (for cohorts); nil turns cohorts off.
func New(cfg Config, reg Registry, rel Releaser, labels func(device string) map[string]string, log *slog.Logger) *Trainer {
	t := &Trainer{cfg: cfg, reg: reg, rel: rel, labels: labels, log: log.With("component", "trainer"), models: map[string]*model{}}
	for _, mc := range cfg.Models {
		t.models[mc.Model] = &model{cfg: mc, join: join.New(cfg.JoinWait), status: Status{Model: mc.Model, Pipeline: mc.Pipeline}}
	}
	return t
}

// Run consumes the ingest stream until ctx ends. The hub runs it on the
// lease holder only.
func (t *Trainer) Run(ctx context.Context, js jetstream.JetStream, stream string) error {
	if len(t.models) == 0 {
		<-ctx.Done()
		return nil
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, stream, jetstream.ConsumerConfig{
		Durable: Consumer, FilterSubjects: Subjects, DeliverPolicy: jetstream.DeliverNewPolicy,
		AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 4096,
	})
	if err != nil {
		return fmt.Errorf("trainer: consumer: %w", err)
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	defer func() { // what the last second made, before the lease goes
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Second)
		defer cancel()
		t.flushHistory(fctx)
	}()
	t.loadChampions(ctx)
	for ctx.Err() == nil {
		select {
		case <-tick.C:
			// Not per batch: a model without a production version would
			// list the registry on every fetch.
			t.loadChampions(ctx)
			t.expire()
			t.flushHistory(ctx)
		default:
		}
		batch, err := cons.Fetch(256, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			t.log.Warn("fetch failed; retrying", "err", err)
			time.Sleep(time.Second)
			continue
		}
		for msg := range batch.Messages() {
			t.handle(ctx, msg.Subject(), msg.Data())
			_ = msg.Ack()
		}
	}
	return nil
}

// loadChampions warm-starts a learner for every model that has a
// production version and no learner yet.
func (t *Trainer) loadChampions(ctx context.Context) {
	for _, m := range t.sorted() {
		t.mu.Lock()
		loaded := m.r != nil
		t.mu.Unlock()
		if loaded {
			continue
		}
		mj, data, ok, err := t.reg.Production(ctx, m.cfg.Model)
		if err != nil || !ok {
			t.setError(m, err, "no production version to start from")
			continue
		}
		man, err := manifest.Parse(mj)
		if err == nil && man.Task != "anomaly" && man.Task != "classification" {
			err = fmt.Errorf("task %s: the trainer learns classifiers", man.Task)
		}
		if err == nil && (len(man.Inputs) > 0 || !man.Aggregated()) {
			// Window records carry aggregates, not raw samples or frames.
			err = fmt.Errorf("model %s takes v2 inputs (%s); the trainer learns from window aggregates, a v1 features manifest", man.Name, inputKinds(man))
		}
		var prod learn.Model
		if err == nil {
			prod, err = learn.FromPackage(man.Outputs.Threshold, data, learn.Optimizer{Kind: m.cfg.Optimizer, LearningRate: m.cfg.LearningRate})
		}
		if err != nil {
			t.setError(m, err, "")
			continue
		}
		r := learn.NewRetrain(prod, learn.NewReplay(orDefault(m.cfg.Replay, 2000), uint64(man.Version)))
		r.Holdout, r.Every = orDefault(m.cfg.Holdout, 500), m.cfg.Every
		if m.cfg.Margin > 0 {
			r.Margin = m.cfg.Margin
		}
		t.mu.Lock()
		m.man, m.r, m.status.Production, m.status.Champion, m.status.LastError = man, r, man.Version, man.Version, ""
		t.mu.Unlock()
		t.log.Info("learner warm-started from production", "model", man.Name, "version", man.Version, "features", len(man.Features))
	}
}

func inputKinds(m *manifest.Manifest) string {
	var k []string
	for _, in := range m.InputList() {
		k = append(k, in.Kind)
	}
	return strings.Join(k, ", ")
}

func orDefault(v, d int) int {
	if v > 0 {
		return v
	}
	return d
}

func (t *Trainer) setError(m *model, err error, fallback string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case err != nil:
		m.status.LastError = err.Error()
	case fallback != "":
		m.status.LastError = fallback
	}
}

func (t *Trainer) sorted() []*model {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]*model, 0, len(t.models))
	for _, mc := range t.cfg.Models {
		out = append(out, t.models[mc.Model])
	}
	return out
}

func (t *Trainer) expire() {
	t.mu.Lock()
	now := time.Now()
	var evs []struct {
		model string
		e     Event
	}
	for _, m := range t.models {
		m.join.Expire()
		m.status.Join = m.join.Stats
		if m.cfg.Schedule <= 0 || m.r == nil {
			continue
		}
		if m.nextRun.IsZero() {
			m.nextRun = now.Add(m.cfg.Schedule)
		}
		if now.After(m.nextRun) {
			m.nextRun = now.Add(m.cfg.Schedule)
			m.r.Check("schedule")
			e := Event{At: now.UTC(), Kind: "check", Detail: "scheduled (trainer.models[].schedule)"}
			m.history = appendHistory(m.history, e)
			evs = append(evs, struct {
				model string
				e     Event
			}{m.cfg.Model, e})
		}
	}
	t.mu.Unlock()
	for _, x := range evs {
		t.emit(context.Background(), x.model, x.e)
	}
}

// windowRecord is the part of the agent's `windows` record the trainer reads.
type windowRecord struct {
	Pipeline string                        `json:"pipeline"`
	Key      string                        `json:"key"`
	Start    time.Time                     `json:"start"`
	End      time.Time                     `json:"end"`
	Firing   string                        `json:"firing"`
	Revision int                           `json:"revision"`
	Fields   map[string]map[string]float64 `json:"fields"`
}

// LabelRecord is a `labels` record: from a device, or (with Device set)
// from a cloud team. WindowStart names the window; without it the
// record's event time must fall inside the window.
type LabelRecord struct {
	Device      string    `json:"device,omitempty"`
	Pipeline    string    `json:"pipeline"`
	Key         string    `json:"key"`
	WindowStart time.Time `json:"window_start,omitzero"`
	EventTime   time.Time `json:"event_time,omitzero"`
	Label       int       `json:"label"`
}

func (t *Trainer) handle(ctx context.Context, subject string, data []byte) {
	decode := envelope.Decode
	if t.Decoder != nil {
		decode = t.Decoder.Decode
	}
	env, err := decode(data)
	if err != nil {
		return // the bridge dead-letters malformed payloads; nothing to learn from
	}
	labels := strings.HasSuffix(subject, ".labels")
	if strings.HasSuffix(subject, ".drift") {
		for _, rec := range env.Records {
			var d driftRecord
			if json.Unmarshal(rec.Data, &d) == nil && d.Pipeline != "" {
				if t.OnDrift != nil {
					t.OnDrift(env.Device, d.Pipeline, d.Drifted)
				}
				t.observeDrift(ctx, env.Device, d)
			}
		}
		return
	}
	for _, rec := range env.Records {
		if labels {
			var l LabelRecord
			if json.Unmarshal(rec.Data, &l) != nil {
				continue
			}
			if l.EventTime.IsZero() {
				l.EventTime = rec.EventTime
			}
			t.addLabel(ctx, join.Label{Device: env.Device, Pipeline: l.Pipeline, Key: l.Key, WindowStart: l.WindowStart, EventTime: l.EventTime, Class: l.Label})
			continue
		}
		var w windowRecord
		if json.Unmarshal(rec.Data, &w) != nil || w.Firing == "early" {
			continue
		}
		t.addWindow(ctx, join.Window{Device: env.Device, Pipeline: w.Pipeline, Key: w.Key, Start: w.Start, End: w.End, Fields: w.Fields, Revision: w.Revision})
	}
}

// AddLabel takes a label from outside the ingest stream (a cloud team's
// Kafka topic): it joins like a device's.
func (t *Trainer) AddLabel(ctx context.Context, l join.Label) { t.addLabel(ctx, l) }

func (t *Trainer) addLabel(ctx context.Context, l join.Label) {
	for _, m := range t.sorted() {
		if m.cfg.Pipeline != l.Pipeline || m.cfg.LabelField != "" {
			continue
		}
		t.mu.Lock()
		pairs := m.join.AddLabel(l)
		m.status.Join = m.join.Stats
		t.mu.Unlock()
		for _, p := range pairs {
			t.learn(ctx, m, p.Window, p.Class)
		}
	}
}

func (t *Trainer) addWindow(ctx context.Context, w join.Window) {
	for _, m := range t.sorted() {
		if m.cfg.Pipeline != w.Pipeline {
			continue
		}
		if m.cfg.LabelField == "" {
			t.mu.Lock()
			pairs := m.join.AddWindow(w)
			m.status.Join = m.join.Stats
			t.mu.Unlock()
			for _, p := range pairs {
				t.learn(ctx, m, p.Window, p.Class)
			}
			continue
		}
		field, agg, _ := strings.Cut(m.cfg.LabelField, ".")
		v, ok := w.Fields[field][agg]
		if !ok {
			t.mu.Lock()
			m.status.Skipped++
			t.mu.Unlock()
			continue
		}
		class := 0
		if v >= 0.5 {
			class = 1
		}
		t.learn(ctx, m, w, class)
	}
}

// learn feeds one labelled window to the model's loop and releases the
// learner if it has just beaten production.
func (t *Trainer) learn(ctx context.Context, m *model, w join.Window, class int) {
	t.mu.Lock()
	if m.r == nil {
		m.status.Skipped++
		t.mu.Unlock()
		return
	}
	x32, err := m.man.Vector(func(field, agg string) (float64, bool) {
		v, ok := w.Fields[field][agg]
		return v, ok
	}, nil)
	if err != nil || class >= max(len(m.man.Outputs.Labels), 2) {
		m.status.Skipped++
		t.mu.Unlock()
		return
	}
	x := make([]float64, len(x32))
	for i, v := range x32 {
		x[i] = float64(v)
	}
	r := m.r
	drifts, checks, decisions, releases := r.Drifts, r.Checks, r.Decisions, r.Releases
	prodRight, err := r.Observe(x, class)
	if err != nil {
		m.status.LastError = err.Error()
		t.mu.Unlock()
		return
	}
	cohortEv := t.observeCohort(m, w.Device, prodRight)
	m.recentX, m.recentY = appendRing(m.recentX, x, 1000), appendRingInt(m.recentY, class, 1000)
	m.status.Labelled++
	m.status.Drifts, m.status.Checks, m.status.Releases = r.Drifts, r.Checks, r.Releases
	m.status.ProductionAccuracy, m.status.LearnerAccuracy = r.ProductionAccuracy.Accuracy(), r.LearnerAccuracy.Accuracy()
	m.status.RecentProduction, m.status.RecentLearner = r.ProductionAccuracy.Recent(), r.LearnerAccuracy.Recent()
	now := time.Now().UTC()
	var fresh []Event
	if cohortEv != nil {
		fresh = append(fresh, *cohortEv)
		t.log.Warn("concept drift in a device cohort", "model", m.cfg.Model, "detail", cohortEv.Detail)
	}
	if r.Drifts > drifts {
		fresh = append(fresh, Event{At: now, Kind: "drift", Detail: r.LastDetector + ": production's error rate changed", ProductionAccuracy: r.ProductionAccuracy.Recent()})
		t.log.Warn("concept drift detected", "model", m.cfg.Model, "version", m.status.Production, "detector", r.LastDetector, "recent_accuracy", r.ProductionAccuracy.Recent())
	}
	if r.Checks > checks && r.Drifts == drifts {
		fresh = append(fresh, Event{At: now, Kind: "check", Detail: "new labels (trainer.models[].every)"})
	}
	released := r.Releases > releases
	if !released && r.Decisions > decisions {
		fresh = append(fresh, Event{At: now, Kind: "kept", Detail: "the candidate did not win by the margin",
			ProductionAccuracy: r.LastProduction, CandidateAccuracy: r.LastCandidate})
	}
	m.history = appendHistory(m.history, fresh...)
	t.mu.Unlock()
	t.emit(ctx, m.cfg.Model, fresh...)
	if released {
		t.release(ctx, m)
	}
}

func (t *Trainer) emit(ctx context.Context, model string, evs ...Event) {
	for _, e := range evs {
		if t.Sink != nil {
			t.Sink.Emit(ctx, model, e)
		}
	}
	if t.Store == nil {
		return
	}
	t.mu.Lock()
	for _, e := range evs {
		t.unstored = append(t.unstored, storedEvent{model, e})
	}
	if over := len(t.unstored) - historyInMemory; over > 0 {
		t.log.Error("training history: the store refused too long; dropping the oldest unstored events", "dropped", over)
		t.unstored = t.unstored[over:]
	}
	t.mu.Unlock()
	// Written by Run's loop within a second (flushHistory), never on the
	// path that learns or answers an operator: a store electing leaders
	// must not stall either.
}

// flushHistory writes the events the store has not taken yet, oldest
// first, and stops at the first refusal (Run's next tick tries again).
func (t *Trainer) flushHistory(ctx context.Context) {
	if t.Store == nil {
		return
	}
	t.flushMu.Lock() // one writer, so each event is written once and in order
	defer t.flushMu.Unlock()
	for {
		t.mu.Lock()
		if len(t.unstored) == 0 {
			t.mu.Unlock()
			return
		}
		next := t.unstored[0]
		t.mu.Unlock()
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := t.Store.AppendHistory(wctx, next.model, next.e)
		cancel()
		t.mu.Lock()
		if err != nil {
			t.storeFailures++
			n := len(t.unstored)
			t.mu.Unlock()
			t.log.Warn("training history: store refused; will retry", "model", next.model, "pending", n, "err", err)
			return
		}
		t.unstored = t.unstored[1:]
		t.mu.Unlock()
	}
}

func appendRing(s [][]float64, x []float64, n int) [][]float64 {
	if len(s) >= n {
		s = s[1:]
	}
	return append(s, x)
}

func appendRingInt(s []int, x int, n int) []int {
	if len(s) >= n {
		s = s[1:]
	}
	return append(s, x)
}

// release registers the learner that won as the next version and starts
// its canary.
func (t *Trainer) release(ctx context.Context, m *model) {
	t.mu.Lock()
	prod, cand := m.r.LastProduction, m.r.LastCandidate
	champion, base := m.r.Production, *m.man
	xs := append([][]float64(nil), m.recentX...)
	ys := append([]int(nil), m.recentY...)
	t.mu.Unlock()
	ev := Event{At: time.Now().UTC(), Kind: "release", ProductionAccuracy: prod, CandidateAccuracy: cand}
	version, man, err := t.register(ctx, m.cfg, base, champion, xs, ys, prod, cand)
	if err == nil && m.cfg.Canary && t.rel != nil {
		ev.Rollout, err = t.rel.Canary(ctx, m.cfg.Model, version, m.cfg.Select)
	}
	defer func() { t.emit(ctx, m.cfg.Model, ev) }()
	t.mu.Lock()
	defer t.mu.Unlock()
	ev.Version = version
	if err != nil {
		ev.Kind, ev.Detail = "failed", err.Error()
		m.status.LastError = err.Error()
		t.log.Error("release failed", "model", m.cfg.Model, "err", err)
	} else {
		m.man, m.status.Champion = man, version
		t.log.Info("released a retrained model", "model", m.cfg.Model, "version", version, "candidate_accuracy", cand, "production_accuracy", prod, "rollout", ev.Rollout)
	}
	m.history = appendHistory(m.history, ev)
}

// register exports the model, quantizes it if asked, adds golden vectors
// and registers it.
func (t *Trainer) register(ctx context.Context, mc ModelConfig, base manifest.Manifest, lm learn.Model, xs [][]float64, ys []int, prod, cand float64) (int64, *manifest.Manifest, error) {
	data, err := learn.Export(lm)
	if err != nil {
		return 0, nil, err
	}
	latest, err := t.reg.Latest(ctx, mc.Model)
	if err != nil {
		return 0, nil, err
	}
	rows := make([][]float32, len(xs))
	for i, x := range xs {
		rows[i] = make([]float32, len(x))
		for j, v := range x {
			rows[i][j] = float32(v)
		}
	}
	man := base
	man.Version, man.Parent, man.Quantization = latest+1, base.Version, ""
	man.Metrics = map[string]float64{"holdout_accuracy": cand, "champion_holdout_accuracy": prod, "recent_rows": float64(len(xs))}
	tolerance := 1e-5
	if mc.Quantize != "" && mc.Quantize != "none" {
		q, err := quant.Quantize(data, quant.Options{Mode: mc.Quantize, Calibration: quant.MinMax, Samples: rows, Tracer: goTrace})
		if err != nil {
			return 0, nil, fmt.Errorf("trainer: quantize: %w", err)
		}
		threshold := base.Outputs.Threshold
		if threshold == 0 {
			threshold = 0.5
		}
		rep, err := quant.Evaluate(data, q, rows, ys, threshold,
			map[string]func([]byte) (quant.Runner, error){"go": func(m []byte) (quant.Runner, error) { return goengine.Load(m) }}, []string{"go"})
		if err != nil {
			return 0, nil, fmt.Errorf("trainer: quantize: %w", err)
		}
		if rep.Drop() > 0.01 {
			return 0, nil, fmt.Errorf("trainer: %s costs %.3f accuracy on recent rows (%.3f → %.3f): not released", mc.Quantize, rep.Drop(), rep.AccuracyBefore, rep.AccuracyAfter)
		}
		data, man.Quantization, tolerance = q, mc.Quantize, 5e-3
		man.Metrics["float_recent_accuracy"], man.Metrics["quantized_recent_accuracy"] = rep.AccuracyBefore, rep.AccuracyAfter
	}
	eng, err := goengine.Load(data)
	if err != nil {
		return 0, nil, fmt.Errorf("trainer: exported model: %w", err)
	}
	man.Golden = nil
	for i := 0; i < len(rows) && i < 5; i++ {
		out, err := eng.Run(rows[len(rows)-1-i], len(rows[0]))
		if err != nil {
			return 0, nil, fmt.Errorf("trainer: golden vectors: %w", err)
		}
		man.Golden = append(man.Golden, manifest.Golden{Input: rows[len(rows)-1-i], Output: out, Tolerance: tolerance})
	}
	if len(man.Golden) == 0 {
		return 0, nil, errors.New("trainer: no recent rows for golden vectors")
	}
	man.SHA256 = manifest.Digest(data)
	mj, err := json.MarshalIndent(man, "", "  ")
	if err != nil {
		return 0, nil, err
	}
	v, err := t.reg.Register(ctx, mj, data)
	if err != nil {
		return 0, nil, err
	}
	man.Version = v
	return v, &man, nil
}

// Status reports every model.
func (t *Trainer) Status() []Status {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []Status
	for _, mc := range t.cfg.Models {
		out = append(out, t.models[mc.Model].status)
	}
	return out
}

// History is a model's events, oldest first: from the store when there
// is one (with the events it has not taken yet), else from memory; ok is
// false for a model the trainer does not train.
func (t *Trainer) History(ctx context.Context, name string) ([]Event, bool, error) {
	t.mu.Lock()
	m, ok := t.models[name]
	if !ok {
		t.mu.Unlock()
		return nil, false, nil
	}
	mem := append([]Event(nil), m.history...)
	t.mu.Unlock()
	if t.Store == nil {
		return mem, true, nil
	}
	// No flush between reading the store and the queue: an event would
	// be in both, or in neither.
	t.flushMu.Lock()
	defer t.flushMu.Unlock()
	evs, err := t.Store.ReadHistory(ctx, name)
	var pending []Event
	t.mu.Lock()
	for _, u := range t.unstored {
		if u.model == name {
			pending = append(pending, u.e)
		}
	}
	t.mu.Unlock()
	if err != nil {
		return nil, true, fmt.Errorf("trainer: history of %s: %w", name, err)
	}
	return append(evs, pending...), true, nil
}

// HistoryStoreFailures counts the store's refusals (each retried).
func (t *Trainer) HistoryStoreFailures() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.storeFailures
}

// RunNow starts a check of the learner against production on the next
// labelled rows, as a trigger would.
func (t *Trainer) RunNow(ctx context.Context, name string) error {
	t.mu.Lock()
	m, ok := t.models[name]
	switch {
	case !ok:
		t.mu.Unlock()
		return fmt.Errorf("trainer: %w: %s", ErrUnknownModel, name)
	case m.r == nil:
		t.mu.Unlock()
		return fmt.Errorf("trainer: %s has no production version to train from yet", name)
	}
	m.r.Check("operator")
	e := Event{At: time.Now().UTC(), Kind: "check", Detail: "asked by an operator"}
	m.history = appendHistory(m.history, e)
	t.mu.Unlock()
	t.emit(ctx, name, e)
	return nil
}

// appendHistory adds e to the in-memory history, keeping the newest
// historyInMemory events (the store, when there is one, keeps them all).
func appendHistory(h []Event, e ...Event) []Event {
	h = append(h, e...)
	if over := len(h) - historyInMemory; over > 0 {
		h = append(h[:0:0], h[over:]...)
	}
	return h
}

// ErrUnknownModel means the trainer is not configured for that model.
var ErrUnknownModel = errors.New("model not trained here")

// goTrace calibrates on the pure-Go engine: the trainer's exports are
// graphs it runs.
func goTrace(model []byte, _ []string, x []float32, features int) (map[string][]float32, error) {
	e, err := goengine.Load(model)
	if err != nil {
		return nil, err
	}
	return e.Trace(x, features)
}
