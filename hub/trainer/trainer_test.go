package trainer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/models/goengine"
	"github.com/outpost-edge/outpost/models/manifest"
	"github.com/outpost-edge/outpost/models/onnx"
	"github.com/outpost-edge/outpost/sync/envelope"
)

// fakeRegistry is an in-memory registry: the hub's is tested end to end
// in test/pipeline (TestDriftIsDetectedAndRetrained).
type fakeRegistry struct {
	versions [][2][]byte // manifest, model
	canaries []int64
}

func (f *fakeRegistry) Production(context.Context, string) ([]byte, []byte, bool, error) {
	v := f.versions[0]
	return v[0], v[1], true, nil
}
func (f *fakeRegistry) Latest(context.Context, string) (int64, error) {
	return int64(len(f.versions)), nil
}
func (f *fakeRegistry) Register(_ context.Context, mj, model []byte) (int64, error) {
	m, err := manifest.Parse(mj)
	if err != nil {
		return 0, err
	}
	if _, err := m.CheckGolden(func(x []float32, n int) ([]float32, error) {
		e, err := goengine.Load(model)
		if err != nil {
			return nil, err
		}
		return e.Run(x, n)
	}); err != nil {
		return 0, err
	}
	f.versions = append(f.versions, [2][]byte{mj, model})
	return int64(len(f.versions)), nil
}
func (f *fakeRegistry) Canary(_ context.Context, _ string, v int64, _ map[string]string) (string, error) {
	f.canaries = append(f.canaries, v)
	return fmt.Sprintf("canary-%d", v), nil
}

// envelopeOf wraps records as a device's batch.
func envelopeOf(t *testing.T, device, stream string, seq *uint64, recs ...any) []byte {
	e := &envelope.Envelope{V: 1, Device: device, Stream: stream}
	for _, r := range recs {
		*seq++
		data, _ := json.Marshal(r)
		e.Records = append(e.Records, envelope.Record{Seq: *seq, EventTime: time.Now(), Data: data})
	}
	b, err := envelope.Encode(e, false)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestLabelsJoinedFromTheLabelsStream: windows and labels records for the
// same windows, arriving in either order, train the model; a concept
// change (the label flips sides of the threshold) is detected and the
// retrained model released, quantized and canaried; labels for unknown
// windows are counted unmatched.
func TestLabelsJoinedFromTheLabelsStream(t *testing.T) {
	model, _ := onnx.Logistic([][]float32{{4}}, []float32{0})
	eng, _ := goengine.Load(model)
	out, _ := eng.Run([]float32{0.5}, 1)
	mj, _ := json.Marshal(&manifest.Manifest{Name: "m", Version: 1, Task: "anomaly", Features: []manifest.Feature{{Field: "v", Agg: "max", Std: 1}},
		Outputs: manifest.Outputs{Threshold: 0.5}, SHA256: manifest.Digest(model), Golden: []manifest.Golden{{Input: []float32{0.5}, Output: out, Tolerance: 1e-5}}})
	reg := &fakeRegistry{versions: [][2][]byte{{mj, model}}}
	cfg := Defaults()
	cfg.Models = []ModelConfig{{Model: "m", Pipeline: "p", Holdout: 200, Margin: 0.05, LearningRate: 0.1, Quantize: "int8-static", Canary: true, CohortLabel: "site"}}
	sites := map[string]map[string]string{"d1": {"site": "north"}, "d2": {"site": "south"}, "d3": {"site": "south"}}
	tr := New(cfg, reg, reg, func(d string) map[string]string { return sites[d] }, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx := context.Background()
	tr.loadChampions(ctx)

	rng := rand.New(rand.NewPCG(1, 1))
	var seq uint64
	start := time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)
	for i := 0; i < 6000; i++ {
		v := rng.Float64()*2 - 1
		class := 0
		// The concept: positive above 0 at first, above 0.5 after row 2000.
		if (i < 2000 && v > 0) || (i >= 2000 && v > 0.5) {
			class = 1
		}
		ws := start.Add(time.Duration(i) * time.Second)
		w := map[string]any{"pipeline": "p", "key": "s", "start": ws, "end": ws.Add(time.Second), "firing": "final",
			"fields": map[string]map[string]float64{"v": {"max": v}}}
		l := LabelRecord{Pipeline: "p", Key: "s", WindowStart: ws, Label: class}
		if i%2 == 0 { // labels before their window half the time
			tr.handle(ctx, "outpost.v1.d1.up.labels", envelopeOf(t, "d1", "labels", &seq, l))
			tr.handle(ctx, "outpost.v1.d1.up.windows", envelopeOf(t, "d1", "windows", &seq, w))
		} else {
			tr.handle(ctx, "outpost.v1.d1.up.windows", envelopeOf(t, "d1", "windows", &seq, w))
			tr.handle(ctx, "outpost.v1.d1.up.labels", envelopeOf(t, "d1", "labels", &seq, l))
		}
	}
	// A label for a window that never comes.
	tr.handle(ctx, "outpost.v1.d2.up.labels", envelopeOf(t, "d2", "labels", &seq, LabelRecord{Pipeline: "p", Key: "x", WindowStart: start, Label: 1}))
	tr.mu.Lock()
	tr.models["m"].join.Now = func() time.Time { return time.Now().Add(time.Hour) }
	tr.mu.Unlock()
	tr.expire()

	st := tr.Status()[0]
	if st.Labelled != 6000 || st.Join.Matched != 6000 || st.Join.UnmatchedLabels != 1 {
		t.Fatalf("status %+v: want 6000 labelled and matched, 1 unmatched label", st)
	}
	evs, _, _ := tr.History(ctx, "m")
	// The one cohort sees every row, so its detectors may fire first.
	if st.Drifts+st.Cohorts["north"].Drifts < 1 || st.Releases < 1 || len(reg.versions) < 2 || len(reg.canaries) < 1 {
		t.Fatalf("status %+v, %d versions, canaries %v, history %+v: want a drift, a release and its canary", st, len(reg.versions), reg.canaries, evs)
	}
	if c := st.Cohorts["north"]; c.Rows != 6000 || c.Drifts < 1 {
		t.Fatalf("cohort north %+v: want 6000 rows and a drift", c)
	}
	m2, _ := manifest.Parse(reg.versions[1][0])
	if m2.Version != 2 || m2.Parent != 1 || m2.Quantization != "int8-static" || m2.Metrics["holdout_accuracy"] <= m2.Metrics["champion_holdout_accuracy"] {
		t.Fatalf("released manifest %+v", m2)
	}
	t.Logf("labels joined: %+v; history %+v", st.Join, evs)
}

// TestFleetDataDrift: the agents' own drift records are aggregated per
// pipeline; when half of the reporting devices (two or more) see drift, a
// fleet-wide drift event is recorded once, and it ends when they stop.
func TestFleetDataDrift(t *testing.T) {
	cfg := Defaults()
	cfg.Models = []ModelConfig{{Model: "m", Pipeline: "p"}}
	tr := New(cfg, &fakeRegistry{}, nil, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx := context.Background()
	var seq uint64
	report := func(dev string, drifted ...string) {
		rec := map[string]any{"pipeline": "p", "windows": 200, "to": time.Now(), "drifted": drifted}
		tr.handle(ctx, "outpost.v1."+dev+".up.drift", envelopeOf(t, dev, "drift", &seq, rec))
	}
	report("d1")
	report("d2")
	report("d3", "vibration.max")
	if st := tr.Status()[0].Fleet; st.Devices != 3 || st.Drifting != 1 || st.Active {
		t.Fatalf("one of three drifting: %+v", st)
	}
	report("d2", "vibration.max", "current.mean")
	report("d2", "vibration.max") // again: one event only
	st := tr.Status()[0].Fleet
	if !st.Active || st.Drifting != 2 || st.Features["vibration.max"] != 2 {
		t.Fatalf("two of three drifting: %+v", st)
	}
	evs, _, _ := tr.History(ctx, "m")
	if len(evs) != 1 || evs[0].Kind != "fleet_data_drift" {
		t.Fatalf("history %+v: want one fleet_data_drift", evs)
	}
	report("d2")
	report("d3")
	if st := tr.Status()[0].Fleet; st.Active {
		t.Fatalf("drift over, still active: %+v", st)
	}
}

// TestV2ModelIsNotRetrained: a production model with v2 inputs (here a
// sequence) is not warm-started from window aggregates, which would feed
// it the wrong row; its status names why.
func TestV2ModelIsNotRetrained(t *testing.T) {
	model, _ := onnx.Logistic([][]float32{{1, 1, 1, 1}}, []float32{0})
	mj, _ := json.Marshal(&manifest.Manifest{Name: "m", Version: 1, Task: "anomaly",
		Inputs:  []manifest.Input{{Kind: manifest.Sequence, Sequence: &manifest.SequenceSpec{Fields: []string{"v"}, Steps: 4}}},
		Outputs: manifest.Outputs{Threshold: 0.5}, SHA256: manifest.Digest(model),
		Golden: []manifest.Golden{{Input: []float32{0, 0, 0, 0}, Output: []float32{0.5}, Tolerance: 1e-5}}})
	cfg := Defaults()
	cfg.Models = []ModelConfig{{Model: "m", Pipeline: "p"}}
	tr := New(cfg, &fakeRegistry{versions: [][2][]byte{{mj, model}}}, nil, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	tr.loadChampions(context.Background())
	st := tr.Status()[0]
	if st.Production != 0 || !strings.Contains(st.LastError, "v2 inputs (sequence)") {
		t.Fatalf("status %+v: want no production learner and the reason", st)
	}
}

// memStore is a history store that refuses while down.
type memStore struct {
	mu   sync.Mutex
	down bool
	evs  map[string][]Event
}

func (s *memStore) AppendHistory(_ context.Context, model string, e Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down {
		return errors.New("jetstream: no responders")
	}
	s.evs[model] = append(s.evs[model], e)
	return nil
}

func (s *memStore) ReadHistory(_ context.Context, model string) ([]Event, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Event(nil), s.evs[model]...), nil
}

// Events the store refuses are kept and written, in order, once it takes
// them again; meanwhile History answers them after the stored ones.
func TestHistoryStoreRefusalsAreRetriedInOrder(t *testing.T) {
	ctx := context.Background()
	cfg := Defaults()
	cfg.Models = []ModelConfig{{Model: "m", Pipeline: "p"}}
	store := &memStore{evs: map[string][]Event{}}
	tr := New(cfg, nil, nil, nil, slog.New(slog.DiscardHandler))
	tr.Store = store
	at := time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)
	ev := func(i int) Event {
		return Event{At: at.Add(time.Duration(i) * time.Second), Kind: "check", Detail: fmt.Sprint(i)}
	}
	tr.emit(ctx, "m", ev(0))
	tr.flushHistory(ctx) // Run's tick
	store.mu.Lock()
	store.down = true
	store.mu.Unlock()
	tr.emit(ctx, "m", ev(1), ev(2))
	tr.flushHistory(ctx)
	details := func() string {
		evs, ok, err := tr.History(ctx, "m")
		if !ok || err != nil {
			t.Fatalf("history: %v %v", ok, err)
		}
		var d []string
		for _, e := range evs {
			d = append(d, e.Detail)
		}
		return strings.Join(d, ",")
	}
	if got := details(); got != "0,1,2" || tr.HistoryStoreFailures() == 0 {
		t.Fatalf("while the store refuses: history %q, %d failures", got, tr.HistoryStoreFailures())
	}
	store.mu.Lock()
	store.down = false
	store.mu.Unlock()
	tr.emit(ctx, "m", ev(3))
	if got := details(); got != "0,1,2,3" {
		t.Fatalf("before the tick: history %q", got)
	}
	tr.flushHistory(ctx)
	if got, stored := details(), len(store.evs["m"]); got != "0,1,2,3" || stored != 4 {
		t.Fatalf("after the store came back: history %q, %d stored", got, stored)
	}
	if _, ok, _ := tr.History(ctx, "other"); ok {
		t.Fatal("a model the trainer does not train has a history")
	}
}
