package update

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/models/goengine"
	"github.com/outpost-edge/outpost/models/manifest"
	"github.com/outpost-edge/outpost/models/onnx"
	"github.com/outpost-edge/outpost/sync/state"
	"github.com/outpost-edge/outpost/sync/tuf"
)

func TestPercentileIsNearestRank(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- { // 1..100 µs, shuffled by the reverse order
		ds = append(ds, time.Duration(i)*time.Microsecond)
	}
	for q, want := range map[float64]float64{50: 50, 99: 99, 100: 100, 1: 1} {
		if got := percentile(ds, q); got != want {
			t.Errorf("p%g = %g µs, want %g", q, got, want)
		}
	}
	if got := percentile([]time.Duration{7 * time.Microsecond}, 99); got != 7 {
		t.Errorf("p99 of one = %g", got)
	}
	if got := percentile(nil, 50); got != 0 {
		t.Errorf("p50 of none = %g", got)
	}
	// One slow call in 50 is the p99, not the p50.
	ds = ds[:0]
	for range 49 {
		ds = append(ds, 10*time.Microsecond)
	}
	ds = append(ds, 10*time.Millisecond)
	if p50, p99 := percentile(ds, 50), percentile(ds, 99); p50 != 10 || p99 != 10000 {
		t.Errorf("p50 %g p99 %g", p50, p99)
	}
}

func TestTimeCallsTimesAtLeastFiftyAndStopsOnSlowModels(t *testing.T) {
	n := 0
	ds, err := timeCalls(func() (time.Duration, error) { n++; return time.Microsecond, nil })
	if err != nil || len(ds) < minCalls || len(ds) > maxCalls || n != len(ds)+1 {
		t.Fatalf("%d timed of %d calls, err %v", len(ds), n, err)
	}
}

func TestResidentMemoryGrowth(t *testing.T) {
	if _, err := os.Stat("/proc/self/statm"); err != nil {
		t.Fatalf("the agent reads its RSS from /proc/self/statm: %v", err)
	}
	before := residentBytes()
	if before <= 0 {
		t.Fatal("no resident size read")
	}
	buf := make([]byte, 64<<20)
	for i := 0; i < len(buf); i += 4096 {
		buf[i] = 1
	}
	g := growthMB(before, residentBytes())
	runtime.KeepAlive(buf)
	// At least what was touched; at most a few times it (the race
	// detector's shadow memory doubles it), so a unit slip (pages for
	// bytes) still fails.
	if g < 56 || g > 256 {
		t.Fatalf("64 MB touched: growth %.1f MB", g)
	}
	if growthMB(100<<20, 90<<20) != 0 || growthMB(0, 90<<20) != 0 {
		t.Fatal("shrinking or unread memory must count as no growth")
	}
}

func TestSelfTestCheck(t *testing.T) {
	st := state.SelfTest{LatencyP50US: 900, LatencyP99US: 1500, BatchRows: 4, BatchP50US: 3000, BatchP99US: 5000, RSSGrowthMB: 40,
		ActiveLatencyP50US: 100, ActiveBatchP50US: 2000}
	for g, want := range map[state.PerfGates]string{
		{}:                     "",
		{MaxLatencyMS: 5}:      "",
		{MaxLatencyMS: 4}:      "max_latency_ms",     // the batch's p99 counts
		{MaxLatencyFactor: 8}:  "max_latency_factor", // 9× at batch 1
		{MaxLatencyFactor: 10}: "",                   // 1.5× at batch 4
		{MaxRSSMB: 50}:         "",                   //
		{MaxRSSMB: 30}:         "max_rss_mb",         //
		{MaxLatencyMS: 10, MaxLatencyFactor: 10, MaxRSSMB: 64}: "", // all fit
	} {
		if got := st.Check(g); (want == "") != (got == "") || !strings.Contains(got, want) {
			t.Errorf("%+v: %q, want %q", g, got, want)
		}
	}
	// A microsecond model three times slower is within the slack.
	tiny := state.SelfTest{LatencyP50US: 9, ActiveLatencyP50US: 2, BatchP50US: 9, ActiveBatchP50US: 2}
	if why := tiny.Check(state.PerfGates{MaxLatencyFactor: 2}); why != "" {
		t.Fatal(why)
	}
	// Without the running model's figures there is no factor to judge.
	if why := (state.SelfTest{LatencyP50US: 1e6}).Check(state.PerfGates{MaxLatencyFactor: 2}); why != "" {
		t.Fatal(why)
	}
}

// publishWide adds version v of model "m" as a wide MLP
// (2-1024-1024-1024-1): about two million multiply-adds a row, far slower
// than the logistic one.
// Hidden biases of 1 keep most activations above zero, so the engines'
// sparse paths (which skip a Relu's zeros) cannot make it cheap: with zero
// biases the golden input [0, 0] left every activation at zero, and a fast
// machine scored the candidate within the factor's 200 µs allowance.
func (w *world) publishWide(t *testing.T, v int64) string {
	t.Helper()
	rng := rand.New(rand.NewPCG(uint64(v), 2))
	layer := func(in, out int) onnx.Dense {
		d := onnx.Dense{W: make([][]float32, out), B: make([]float32, out)}
		if out > 1 {
			for i := range d.B {
				d.B[i] = 1
			}
		}
		for i := range d.W {
			d.W[i] = make([]float32, in)
			for j := range d.W[i] {
				d.W[i][j] = float32(rng.NormFloat64() / 30)
			}
		}
		return d
	}
	model, err := onnx.MLP([]onnx.Dense{layer(2, 1024), layer(1024, 1024), layer(1024, 1024), layer(1024, 1)}, onnx.MLPOptions{Hidden: "Relu", Output: "Sigmoid"})
	if err != nil {
		t.Fatal(err)
	}
	eng, err := goengine.Load(model)
	if err != nil {
		t.Fatal(err)
	}
	out, err := eng.Run([]float32{0, 0, 1, 1}, 2)
	if err != nil {
		t.Fatal(err)
	}
	m := &manifest.Manifest{Name: "m", Version: v, Task: "anomaly",
		Features: []manifest.Feature{{Field: "x", Agg: "mean", Std: 1}, {Field: "x", Agg: "max", Std: 1}},
		Outputs:  manifest.Outputs{Threshold: 0.5},
		Golden: []manifest.Golden{{Input: []float32{0, 0}, Output: out[:1], Tolerance: 1e-4},
			{Input: []float32{1, 1}, Output: out[1:], Tolerance: 1e-4}}}
	dir := t.TempDir()
	if err := manifest.Write(dir, m, model); err != nil {
		t.Fatal(err)
	}
	mj, _ := os.ReadFile(filepath.Join(dir, manifest.ManifestFile))
	data, _ := manifest.Pack(mj, model)
	name := tuf.ModelTargetName("m", v)
	if _, err := w.repo.AddTarget(name, data, tuf.ModelTarget{Model: "m", Version: v, Arch: []string{runtime.GOARCH}, ManifestSHA256: manifest.Digest(mj)}); err != nil {
		t.Fatal(err)
	}
	return name
}

func gated(version, modelVersion int64, target string, g state.PerfGates) state.Desired {
	d := desired(version, modelVersion, target, "r1")
	dm := d.Models["m"]
	dm.PerfGates = g
	d.Models["m"] = dm
	return d
}

// A candidate over the rollout's budget is refused at self-test, with
// its measurement, and the running model never stops.
func TestSelfTestRefusesACandidateOverTheBudget(t *testing.T) {
	w := newWorld(t)
	target := w.publishWide(t, 2)
	r, m, _ := w.start(t, testConfig(), nil)
	m.Desire(gated(1, 2, target, state.PerfGates{MaxLatencyMS: 0.001, MaxLatencyFactor: 1000}))
	u := waitPhase(t, m)
	if u.Phase != state.PhaseFailed || !strings.Contains(u.Reason, "max_latency_ms 0.001") || !strings.Contains(u.Reason, "self-test") {
		t.Fatalf("update %+v, want failed on max_latency_ms", u)
	}
	st := u.SelfTest
	if st == nil || st.Calls < 3 || st.LatencyP50US <= 0 || st.LatencyP99US < st.LatencyP50US || st.BatchRows != 2 ||
		st.ActiveVersion != 1 || st.ActiveLatencyP50US <= 0 {
		t.Fatalf("measurement %+v", st)
	}
	if r.swaps.Load() != 0 || r.version() != 1 || activeVersion(t, w.modelDir) != 1 {
		t.Fatalf("the refused candidate was switched to: %d swaps", r.swaps.Load())
	}
	t.Logf("refused: %s", u.Reason)
}

// onMessage is a slog handler that calls f on each record with message msg.
type onMessage struct {
	slog.Handler
	msg string
	f   func()
}

func (h onMessage) Enabled(context.Context, slog.Level) bool { return true }

func (h onMessage) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == h.msg {
		h.f()
	}
	return nil
}

// A refused measurement is reported together with the refusal: a report
// of phase selftest carrying it let the hub halt and revert the rollout
// on it while the agent was still refusing, so the rollout's record kept
// the canary at selftest, and the revert could supersede the refusal.
// The handler reports at the instant between measuring and refusing.
func TestSelfTestMeasurementIsReportedWithItsOutcome(t *testing.T) {
	w := newWorld(t)
	target := w.publishWide(t, 2)
	var m *Manager
	var between []state.Update
	w.log = slog.New(onMessage{Handler: slog.DiscardHandler, msg: "update: candidate measured", f: func() {
		_, ups, _ := m.Report()
		between = append(between, ups["m"])
	}})
	_, m, _ = w.start(t, testConfig(), nil)
	m.Desire(gated(1, 2, target, state.PerfGates{MaxLatencyMS: 0.001, MaxLatencyFactor: 1000}))
	u := waitPhase(t, m)
	if u.Phase != state.PhaseFailed || u.SelfTest == nil {
		t.Fatalf("update %+v, want failed with its measurement", u)
	}
	if len(between) == 0 {
		t.Fatal("the manager never logged its measurement")
	}
	for _, b := range between {
		if b.Phase == state.PhaseSelfTest && b.SelfTest != nil {
			t.Fatalf("reported at phase %s with the measurement %+v before the outcome", b.Phase, *b.SelfTest)
		}
	}
}

func TestSelfTestRefusesACandidateFarSlowerThanTheRunningModel(t *testing.T) {
	w := newWorld(t)
	target := w.publishWide(t, 2)
	r, m, _ := w.start(t, testConfig(), nil)
	m.Desire(gated(1, 2, target, state.PerfGates{MaxLatencyFactor: 3}))
	u := waitPhase(t, m)
	if u.Phase != state.PhaseFailed || !strings.Contains(u.Reason, "max_latency_factor 3") {
		t.Fatalf("update %+v, want failed on max_latency_factor", u)
	}
	if r.swaps.Load() != 0 {
		t.Fatal("switched")
	}
	t.Logf("refused: %s (%+v)", u.Reason, *u.SelfTest)
}

func TestSelfTestWithinBudgetSwitchesAndReportsTheFigures(t *testing.T) {
	w := newWorld(t)
	target := w.publish(t, 2, 0.7, false)
	r, m, _ := w.start(t, testConfig(), nil)
	m.Desire(gated(1, 2, target, state.PerfGates{MaxLatencyMS: 1000, MaxLatencyFactor: 3, MaxRSSMB: 512}))
	u := waitPhase(t, m)
	if u.Phase != state.PhaseCommitted || r.version() != 2 {
		t.Fatalf("update %+v", u)
	}
	if st := u.SelfTest; st == nil || st.Calls < minCalls || st.LatencyP50US <= 0 || st.ActiveLatencyP50US <= 0 {
		t.Fatalf("measurement %+v", u.SelfTest)
	}
}
