package update

import (
	"context"
	"crypto/ed25519"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/agent/infer"
	"github.com/outpost-edge/outpost/agent/outbox"
	"github.com/outpost-edge/outpost/agent/pipeline"
	"github.com/outpost-edge/outpost/agent/store"
	"github.com/outpost-edge/outpost/models/manifest"
	"github.com/outpost-edge/outpost/models/onnx"
	"github.com/outpost-edge/outpost/sync/state"
	"github.com/outpost-edge/outpost/sync/tuf"
)

// pkg builds version v of model "m": score = sigmoid(w·x - 1) over two
// features, with golden vectors. badGolden makes the golden output wrong.
func pkg(t *testing.T, v int64, w float32, badGolden bool) (manifestJSON, model []byte) {
	t.Helper()
	return pkgOf(t, "m", v, w, badGolden)
}

// pkgOf is pkg for a model of another name.
func pkgOf(t *testing.T, name string, v int64, w float32, badGolden bool) (manifestJSON, model []byte) {
	t.Helper()
	model, err := onnx.Logistic([][]float32{{w, w}}, []float32{-1})
	if err != nil {
		t.Fatal(err)
	}
	out := float32(0.26894143) // sigmoid(-1)
	if badGolden {
		out = 0.9
	}
	m := &manifest.Manifest{
		Name: name, Version: v, Task: "anomaly",
		Features: []manifest.Feature{{Field: "x", Agg: "mean", Std: 1}, {Field: "x", Agg: "max", Std: 1}},
		Outputs:  manifest.Outputs{Threshold: 0.5},
		Golden:   []manifest.Golden{{Input: []float32{0, 0}, Output: []float32{out}, Tolerance: 1e-5}},
	}
	dir := t.TempDir()
	if err := manifest.Write(dir, m, model); err != nil {
		t.Fatal(err)
	}
	mj, err := os.ReadFile(filepath.Join(dir, manifest.ManifestFile))
	if err != nil {
		t.Fatal(err)
	}
	return mj, model
}

// runner is a pipeline as the manager sees it; its health counters are
// set by the test.
type runner struct {
	name    string // "p" when empty
	dir     string
	mu      sync.Mutex
	model   *infer.Model
	swaps   atomic.Int64
	nan     atomic.Int64
	served  atomic.Int64
	initial *manifest.Manifest

	shadowModel             *infer.Model
	split                   float64
	shadowed                atomic.Int64
	shadowRows, shadowAgree atomic.Int64
	recent                  [][]float32 // what RecentRows returns
}

func (r *runner) Name() string {
	if r.name == "" {
		return "p"
	}
	return r.name
}
func (r *runner) ModelConfig() (infer.Config, bool) {
	return infer.Config{Dir: r.dir, Engine: "go"}, true
}
func (r *runner) Manifest() *manifest.Manifest        { return r.initial }
func (r *runner) CheckModel(*manifest.Manifest) error { return nil }
func (r *runner) SwapModel(_ context.Context, m *infer.Model) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.model != nil {
		r.model.Close()
	}
	r.model = m
	r.swaps.Add(1)
	return nil
}
func (r *runner) Health() (int64, int64, int64, int64, int64) {
	n := r.served.Load()
	return n, r.nan.Load(), r.nan.Load(), n, n * 1000
}
func (r *runner) SetShadow(_ context.Context, m *infer.Model, split float64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.shadowModel, r.split = m, split
	if m != nil {
		r.shadowed.Add(1)
	}
	return nil
}
func (r *runner) ShadowHealth() pipeline.ShadowStats {
	return pipeline.ShadowStats{Rows: r.shadowRows.Load(), Agree: r.shadowAgree.Load()}
}
func (r *runner) RecentRows() [][]float32 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.recent
}
func (r *runner) version() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.model.Manifest.Version
}

// world is a hub's repository on loopback and a device with one model dir.
type world struct {
	repo     *tuf.Repo
	repoDir  string
	srv      *httptest.Server
	root     []byte
	dataDir  string
	modelDir string
	db       *store.Store
	ob       *outbox.Outbox
	boot     int64
	// slow, when set, is a part of the paths whose downloads trickle: a byte every
	// 100 ms, never long enough without one to count as stalled.
	slow atomic.Value
	// log, when set, is the manager's logger.
	log *slog.Logger
}

func (w *world) serve(rw http.ResponseWriter, r *http.Request) {
	if p, _ := w.slow.Load().(string); p == "" || !strings.Contains(r.URL.Path, p) {
		http.FileServer(http.Dir(w.repoDir)).ServeHTTP(rw, r)
		return
	}
	data, err := os.ReadFile(filepath.Join(w.repoDir, filepath.FromSlash(r.URL.Path)))
	if err != nil {
		http.NotFound(rw, r)
		return
	}
	rw.WriteHeader(http.StatusOK)
	for _, b := range data {
		select {
		case <-r.Context().Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
		rw.Write([]byte{b})
		rw.(http.Flusher).Flush()
	}
}

func newWorld(t *testing.T) *world {
	t.Helper()
	w := &world{repoDir: t.TempDir(), dataDir: t.TempDir(), modelDir: t.TempDir()}
	rk, err := tuf.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	online, err := tuf.GenerateOnlineKeys()
	if err != nil {
		t.Fatal(err)
	}
	if w.repo, err = tuf.Init(w.repoDir, []ed25519.PrivateKey{rk}, 1, online, nil); err != nil {
		t.Fatal(err)
	}
	w.srv = httptest.NewServer(http.HandlerFunc(w.serve))
	t.Cleanup(w.srv.Close)
	if w.root, err = w.repo.TrustedRoot(); err != nil {
		t.Fatal(err)
	}
	mj, model := pkg(t, 1, 0.5, false)
	if _, err := manifest.Unpack(mustPack(t, mj, model), filepath.Join(w.modelDir, infer.Active)); err != nil {
		t.Fatal(err)
	}
	w.open(t)
	return w
}

func mustPack(t *testing.T, mj, model []byte) *strings.Reader {
	t.Helper()
	data, err := manifest.Pack(mj, model)
	if err != nil {
		t.Fatal(err)
	}
	return strings.NewReader(string(data))
}

// open (re)opens the device database, as a start of the agent does.
func (w *world) open(t *testing.T) {
	t.Helper()
	if w.db != nil {
		w.db.Close()
	}
	ctx := context.Background()
	var err error
	if w.db, err = store.Open(ctx, filepath.Join(w.dataDir, "agent.db"), "full"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.db.Close() })
	if w.boot, err = w.db.NextBoot(ctx); err != nil {
		t.Fatal(err)
	}
	if w.ob, err = outbox.New(ctx, w.db.DB(), 0); err != nil {
		t.Fatal(err)
	}
}

func (w *world) publish(t *testing.T, v int64, weight float32, badGolden bool) string {
	t.Helper()
	return w.publishOf(t, "m", v, weight, badGolden)
}

func (w *world) publishOf(t *testing.T, model string, v int64, weight float32, badGolden bool) string {
	t.Helper()
	mj, onnxModel := pkgOf(t, model, v, weight, badGolden)
	data, _ := manifest.Pack(mj, onnxModel)
	name := tuf.ModelTargetName(model, v)
	if _, err := w.repo.AddTarget(name, data, tuf.ModelTarget{Model: model, Version: v, Arch: []string{runtime.GOARCH}, ManifestSHA256: manifest.Digest(mj)}); err != nil {
		t.Fatal(err)
	}
	return name
}

// start runs Recover, loads the active model like a pipeline does, and
// starts a manager; it returns the runner and a stop function.
func (w *world) start(t *testing.T, cfg Config, crash func(string)) (*runner, *Manager, func()) {
	t.Helper()
	rs, m, stop := w.startRunners(t, cfg, crash, map[string]string{"p": w.modelDir})
	return rs["p"], m, stop
}

// startRunners is start with a pipeline per entry of dirs (name to model
// directory).
func (w *world) startRunners(t *testing.T, cfg Config, crash func(string), dirs map[string]string) (map[string]*runner, *Manager, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	log := slog.New(slog.DiscardHandler)
	if w.log != nil {
		log = w.log
	}
	var all []string
	for _, name := range sortedKeys(dirs) {
		all = append(all, dirs[name])
	}
	if err := Recover(ctx, cfg, w.ob, all, w.boot, log); err != nil {
		t.Fatal(err)
	}
	rs := map[string]*runner{}
	var runners []Runner
	for _, name := range sortedKeys(dirs) {
		r := &runner{name: name, dir: dirs[name]}
		mod, err := infer.LoadSlot(infer.Config{Dir: r.dir, Engine: "go"}, infer.Active, log)
		if err != nil {
			t.Fatalf("after recovery the active slot of %s does not load: %v", name, err)
		}
		r.model, r.initial = mod, mod.Manifest
		rs[name] = r
		runners = append(runners, r)
	}
	c, err := tuf.NewClient(w.root, w.srv.URL, filepath.Join(w.dataDir, "tuf"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := New(ctx, cfg, Options{Store: w.ob, Fetcher: c, Staging: filepath.Join(w.dataDir, "staging"), Boot: w.boot, Log: log, Crash: crash}, runners)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); m.Run(ctx) }()
	stop := func() { cancel(); <-done }
	t.Cleanup(stop)
	return rs, m, stop
}

func desired(version int64, modelVersion int64, target, rollout string) state.Desired {
	return state.Desired{Device: "d1", Version: version, Models: map[string]state.DesiredModel{"m": {Version: modelVersion, Target: target, Rollout: rollout}}}
}

// waitPhase waits until model m's update reaches a terminal phase.
func waitPhase(t *testing.T, m *Manager) state.Update {
	t.Helper()
	return waitPhaseOf(t, m, "m")
}

// waitPhaseOf waits until model's update reaches a terminal phase.
func waitPhaseOf(t *testing.T, m *Manager, model string) state.Update {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		_, ups, _ := m.Report()
		if u, ok := ups[model]; ok && state.Terminal(u.Phase) {
			return u
		}
		time.Sleep(20 * time.Millisecond)
	}
	_, ups, _ := m.Report()
	t.Fatalf("%s: no terminal phase within 20s: %+v", model, ups[model])
	return state.Update{}
}

func testConfig() Config {
	c := Defaults()
	c.Probation = 300 * time.Millisecond
	return c
}

func activeVersion(t *testing.T, dir string) int64 {
	t.Helper()
	m, _, err := manifest.Load(filepath.Join(dir, infer.Active))
	if err != nil {
		t.Fatalf("active slot: %v", err)
	}
	return m.Version
}

func TestUpdateInstallsSelfTestsSwitchesAndCommits(t *testing.T) {
	w := newWorld(t)
	target := w.publish(t, 2, 0.7, false)
	r, m, _ := w.start(t, testConfig(), nil)
	m.Desire(desired(1, 2, target, "r1"))
	u := waitPhase(t, m)
	if u.Phase != state.PhaseCommitted || u.From != 1 || u.To != 2 {
		t.Fatalf("update %+v, want committed 1→2", u)
	}
	if got := r.version(); got != 2 {
		t.Fatalf("pipeline runs version %d, want 2", got)
	}
	if v := activeVersion(t, w.modelDir); v != 2 {
		t.Fatalf("active slot holds version %d", v)
	}
	if slot, _ := activeSlot(w.modelDir); slot != slotB {
		t.Fatalf("active names %s, want b", slot)
	}
	models, _, dv := m.Report()
	if dv != 1 || len(models) != 1 || models[0].Version != 2 || models[0].Slot != slotB {
		t.Fatalf("report %+v (desired %d)", models, dv)
	}
	// Every transition left an event record for the hub.
	recs, err := w.ob.Pending(context.Background(), "events", 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	var phases []string
	for _, rec := range recs {
		for _, p := range []string{"downloading", "verifying", "installing", "selftest", "switching", "probation", "committed"} {
			if strings.Contains(string(rec.Data), `"phase":"`+p+`"`) {
				phases = append(phases, p)
			}
		}
	}
	if strings.Join(phases, ",") != "downloading,verifying,installing,selftest,switching,probation,committed" {
		t.Fatalf("event records for phases %v", phases)
	}
	// The same desired state again changes nothing.
	m.Desire(desired(2, 2, target, "r1"))
	time.Sleep(300 * time.Millisecond)
	if r.swaps.Load() != 1 {
		t.Fatalf("%d swaps, want 1", r.swaps.Load())
	}
}

// TestSelfTestTimesRealWindows: the self-test times the candidate on the
// pipeline's recent rows beside its golden vectors, and says how many it
// used; rows of another width (another model's input) are left out.
func TestSelfTestTimesRealWindows(t *testing.T) {
	w := newWorld(t)
	target := w.publish(t, 2, 0.7, false)
	r, m, _ := w.start(t, testConfig(), nil)
	width := len(r.initial.Golden[0].Input)
	r.mu.Lock()
	for i := range 7 {
		row := make([]float32, width)
		for k := range row {
			row[k] = float32(i+k) / 10
		}
		r.recent = append(r.recent, row, make([]float32, width+3))
	}
	r.mu.Unlock()
	m.Desire(desired(1, 2, target, "r1"))
	u := waitPhase(t, m)
	if u.Phase != state.PhaseCommitted || u.SelfTest == nil {
		t.Fatalf("update %+v, want committed with a self-test measurement", u)
	}
	if u.SelfTest.RealRows != 7 || u.SelfTest.Calls < 50 {
		t.Fatalf("self-test timed %d real rows in %d calls, want the 7 of the model's width in at least 50", u.SelfTest.RealRows, u.SelfTest.Calls)
	}
}

func TestUnhealthyModelRollsBackDuringProbation(t *testing.T) {
	w := newWorld(t)
	target := w.publish(t, 2, 0.7, false)
	cfg := testConfig()
	cfg.Probation = 5 * time.Second
	r, m, _ := w.start(t, cfg, nil)
	m.Desire(desired(1, 2, target, "r1"))
	for r.swaps.Load() == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	r.served.Add(100)
	r.nan.Add(7) // the new model gives NaN
	u := waitPhase(t, m)
	if u.Phase != state.PhaseRolledBack || !strings.Contains(u.Reason, "non-finite") {
		t.Fatalf("update %+v, want rolled back for non-finite scores", u)
	}
	if got := r.version(); got != 1 {
		t.Fatalf("pipeline runs version %d after rollback, want 1", got)
	}
	if v := activeVersion(t, w.modelDir); v != 1 {
		t.Fatalf("active slot holds version %d after rollback", v)
	}
	// The rolled-back target is not tried again for the same rollout.
	m.Desire(desired(2, 2, target, "r1"))
	time.Sleep(300 * time.Millisecond)
	if r.swaps.Load() != 2 {
		t.Fatalf("%d swaps, want 2 (switch and rollback)", r.swaps.Load())
	}
}

func TestSlowModelRollsBack(t *testing.T) {
	w := newWorld(t)
	target := w.publish(t, 2, 0.7, false)
	cfg := testConfig()
	cfg.Probation = 5 * time.Second
	r, m, _ := w.start(t, cfg, nil)
	r.served.Store(50) // the old model: 100 µs a call
	m.Desire(desired(1, 2, target, "r1"))
	for r.swaps.Load() == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	slow := &slowRunner{runner: r}
	m.runners[0] = slow
	slow.calls.Store(30) // 30 calls at 500 µs each
	u := waitPhase(t, m)
	if u.Phase != state.PhaseRolledBack || !strings.Contains(u.Reason, "latency") {
		t.Fatalf("update %+v, want rolled back for latency", u)
	}
}

// slowRunner reports calls after the switch at 5× the old model's latency.
// (The fake runner's own calls take 1 µs, below any gate's slack.)
type slowRunner struct {
	*runner
	calls atomic.Int64
}

func (s *slowRunner) Health() (int64, int64, int64, int64, int64) {
	n := s.served.Load()
	c := s.calls.Load()
	return n + c, 0, 0, n + c, n*100_000 + c*500_000
}

func TestModelFailingItsSelfTestIsNeverSwitchedTo(t *testing.T) {
	w := newWorld(t)
	target := w.publish(t, 2, 0.7, true)
	r, m, _ := w.start(t, testConfig(), nil)
	m.Desire(desired(1, 2, target, "r1"))
	u := waitPhase(t, m)
	if u.Phase != state.PhaseFailed || !strings.Contains(u.Reason, "self-test") {
		t.Fatalf("update %+v, want failed in self-test", u)
	}
	if r.swaps.Load() != 0 || activeVersion(t, w.modelDir) != 1 {
		t.Fatal("the running model was touched")
	}
}

func TestTamperedPackageIsRefused(t *testing.T) {
	w := newWorld(t)
	target := w.publish(t, 2, 0.7, false)
	// Overwrite the stored target (a compromised mirror).
	files, _ := filepath.Glob(filepath.Join(w.repoDir, "targets", "models", "m", "*.2.tar"))
	if len(files) != 1 {
		t.Fatalf("target files %v", files)
	}
	data, _ := os.ReadFile(files[0])
	data[len(data)/2] ^= 0xff
	os.WriteFile(files[0], data, 0o644)
	r, m, _ := w.start(t, testConfig(), nil)
	m.Desire(desired(1, 2, target, "r1"))
	u := waitPhase(t, m)
	if u.Phase != state.PhaseFailed || !strings.Contains(u.Reason, "does not verify") {
		t.Fatalf("update %+v, want failed verification", u)
	}
	if r.swaps.Load() != 0 || activeVersion(t, w.modelDir) != 1 {
		t.Fatal("the running model was touched")
	}
}

// TestPowerLossAtEveryStep stops the manager dead (its goroutine exits on
// the spot, nothing cleaned up) right after each transition is stored and
// right after the switch, then starts the device again: it must come back
// on a complete model and end the update committed.
func TestPowerLossAtEveryStep(t *testing.T) {
	points := []string{"downloading", "verifying", "installing", "selftest", "switching", "switched", "probation"}
	for _, point := range points {
		t.Run(point, func(t *testing.T) {
			w := newWorld(t)
			target := w.publish(t, 2, 0.7, false)
			crashed := make(chan struct{})
			var once sync.Once
			crash := func(p string) {
				if p == point {
					once.Do(func() { close(crashed) })
					runtime.Goexit() // the manager goroutine dies here
				}
			}
			_, m, _ := w.start(t, testConfig(), crash)
			m.Desire(desired(1, 2, target, "r1"))
			select {
			case <-crashed:
			case <-time.After(20 * time.Second):
				t.Fatalf("never reached %s", point)
			}
			w.open(t) // the next boot
			r2, m2, _ := w.start(t, testConfig(), nil)
			if v := r2.initial.Version; v != 1 && v != 2 {
				t.Fatalf("came back on version %d", v)
			}
			u := waitPhase(t, m2)
			if u.Phase != state.PhaseCommitted {
				t.Fatalf("after a crash at %s: %+v, want committed", point, u)
			}
			if activeVersion(t, w.modelDir) != 2 || r2.version() != 2 {
				t.Fatal("not on version 2 after the update")
			}
		})
	}
}

// TestCrashLoopDuringProbationRollsBack: a new model that makes the agent
// restart over and over (counted by the boot counter) is rolled back
// before the pipelines load it again.
func TestCrashLoopDuringProbationRollsBack(t *testing.T) {
	w := newWorld(t)
	target := w.publish(t, 2, 0.7, false)
	cfg := testConfig()
	cfg.Probation = time.Hour
	crashed := make(chan struct{})
	var once sync.Once
	_, m, _ := w.start(t, cfg, func(p string) {
		if p == "probation" {
			once.Do(func() { close(crashed) })
			runtime.Goexit()
		}
	})
	m.Desire(desired(1, 2, target, "r1"))
	<-crashed
	for i := int64(0); i <= cfg.MaxBoots; i++ {
		w.open(t) // restarts that crash again during probation
		if i < cfg.MaxBoots {
			if err := Recover(context.Background(), cfg, w.ob, []string{w.modelDir}, w.boot, slog.New(slog.DiscardHandler)); err != nil {
				t.Fatal(err)
			}
			if activeVersion(t, w.modelDir) != 2 {
				t.Fatalf("rolled back after only %d restarts", i+1)
			}
		}
	}
	r, m2, _ := w.start(t, cfg, nil)
	if r.initial.Version != 1 {
		t.Fatalf("after a crash loop the pipeline loads version %d, want 1", r.initial.Version)
	}
	u := waitPhase(t, m2)
	if u.Phase != state.PhaseRolledBack || !strings.Contains(u.Reason, "crash loop") {
		t.Fatalf("update %+v, want rolled back for a crash loop", u)
	}
}

// TestShadowPhaseGatesTheSwitch: with shadow asked for, the candidate runs
// beside the active model first; too little agreement refuses it without
// touching the running model, enough lets it switch in.
func TestShadowPhaseGatesTheSwitch(t *testing.T) {
	for _, tc := range []struct {
		agree int64
		want  string
	}{{70, state.PhaseFailed}, {99, state.PhaseCommitted}} {
		t.Run(tc.want, func(t *testing.T) {
			w := newWorld(t)
			target := w.publish(t, 2, 0.7, false)
			r, m, _ := w.start(t, testConfig(), nil)
			d := desired(1, 2, target, "r1")
			dm := d.Models["m"]
			dm.ShadowSeconds, dm.Split, dm.MinAgreement = 0.5, 0.25, 0.95
			d.Models["m"] = dm
			m.Desire(d)
			for r.shadowed.Load() == 0 {
				time.Sleep(10 * time.Millisecond)
			}
			r.mu.Lock()
			split := r.split
			r.mu.Unlock()
			if split != 0.25 {
				t.Fatalf("split %v, want 0.25", split)
			}
			if r.swaps.Load() != 0 {
				t.Fatal("switched before the shadow phase ended")
			}
			r.shadowRows.Store(100)
			r.shadowAgree.Store(tc.agree)
			u := waitPhase(t, m)
			if u.Phase != tc.want || u.Shadow == nil || u.Shadow.Rows != 100 {
				t.Fatalf("update %+v (shadow %+v), want %s after 100 shadow rows", u, u.Shadow, tc.want)
			}
			r.mu.Lock()
			still := r.shadowModel
			r.mu.Unlock()
			if still != nil {
				t.Fatal("the candidate still runs in shadow")
			}
			if tc.want == state.PhaseFailed && (r.swaps.Load() != 0 || !strings.Contains(u.Reason, "agreement 0.700")) {
				t.Fatalf("refused candidate: %d swaps, reason %q", r.swaps.Load(), u.Reason)
			}
			if tc.want == state.PhaseCommitted && r.version() != 2 {
				t.Fatalf("runs v%d after a good shadow phase", r.version())
			}
		})
	}
}

// TestPowerLossDuringRollback: a power loss right after a rollback began
// ends, at the next start, on the previous model with the update rolled
// back.
func TestPowerLossDuringRollback(t *testing.T) {
	w := newWorld(t)
	target := w.publish(t, 2, 0.7, false)
	cfg := testConfig()
	cfg.Probation = time.Hour
	crashed := make(chan struct{})
	var once sync.Once
	r, m, _ := w.start(t, cfg, func(p string) {
		if p == state.PhaseRollingBack {
			once.Do(func() { close(crashed) })
			runtime.Goexit()
		}
	})
	m.Desire(desired(1, 2, target, "r1"))
	for r.swaps.Load() == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	r.served.Add(100)
	r.nan.Add(50)
	<-crashed
	w.open(t)
	r2, m2, _ := w.start(t, cfg, nil)
	if r2.initial.Version != 1 || activeVersion(t, w.modelDir) != 1 {
		t.Fatalf("after a crash mid-rollback the pipeline loads v%d", r2.initial.Version)
	}
	if u := waitPhase(t, m2); u.Phase != state.PhaseRolledBack || !strings.Contains(u.Reason, "non-finite") {
		t.Fatalf("update %+v, want rolled back for non-finite scores", u)
	}
}
