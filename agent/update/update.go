// Package update applies model updates on the device through one explicit
// state machine (DESIGN §3): download (resumable, into staging), verify
// (TUF), install into the inactive slot, self-test with the golden
// vectors, switch atomically, probation, then commit or roll back. Every
// transition is stored in the agent database, together with an event
// record for the hub, before the next step begins; so after a power loss
// at any point the agent comes back on a complete model, old or new, and
// finishes the update or rolls it back.
package update

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
	"golang.org/x/sync/errgroup"

	"github.com/outpost-edge/outpost/agent/infer"
	"github.com/outpost-edge/outpost/agent/outbox"
	"github.com/outpost-edge/outpost/agent/pipeline"
	"github.com/outpost-edge/outpost/deploy/config"
	"github.com/outpost-edge/outpost/firmware/selfupdate"
	"github.com/outpost-edge/outpost/models/manifest"
	"github.com/outpost-edge/outpost/sync/state"
	"github.com/outpost-edge/outpost/sync/transfer"
	"github.com/outpost-edge/outpost/sync/tuf"
)

// Config is the agent's `updates` section.
type Config struct {
	URL         string        `yaml:"url" usage:"the hub's TUF repository, e.g. http://hub:8080/tuf (empty: updates off)"`
	TrustedRoot string        `yaml:"trusted_root" usage:"root metadata installed at provisioning (the hub's 1.root.json, or outpostctl keys init's root.json)"`
	Probation   time.Duration `yaml:"probation" usage:"how long a new model is watched before it is committed"`
	// Health limits during probation; crossing one rolls the model back.
	MaxErrorRate     float64 `yaml:"max_error_rate" usage:"failed or non-finite rows per row served during probation before a rollback"`
	MaxLatencyFactor float64 `yaml:"max_latency_factor" usage:"mean inference latency allowed during probation, as a multiple of the previous model's"`
	MaxBoots         int64   `yaml:"max_boots" usage:"agent restarts during probation (a crash loop) before a rollback"`
	MaxAttempts      int     `yaml:"max_attempts" usage:"tries of a download that fails verification before the update is refused"`
	// SelfUpdate lets rollouts of model outpost-agent replace the binary.
	SelfUpdate bool `yaml:"self_update" usage:"take agent builds too (rollouts of model outpost-agent): two binary slots under data_dir/agent, started through the installed binary, which rolls back a build that keeps crashing"`
	// TLS for an https:// url with a private CA (or client certificates).
	TLS config.ClientTLS `yaml:"tls"`
}

// Validate names wrong fields under path.
func (c Config) Validate(path string, errs *config.Errors) {
	if c.URL != "" {
		if u, err := url.Parse(c.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs.Add(path+".url", fmt.Sprintf("must be an http(s) URL like http://hub:8080/tuf, got %q", c.URL))
		}
		if c.TrustedRoot == "" {
			errs.Add(path+".trusted_root", "required with updates.url: the root metadata installed at provisioning")
		} else if _, err := os.Stat(c.TrustedRoot); err != nil {
			errs.Add(path+".trusted_root", err.Error())
		}
	}
	c.TLS.Validate(path+".tls", errs)
	if c.Probation < 0 {
		errs.Add(path+".probation", "must not be negative")
	}
	if c.MaxErrorRate < 0 || c.MaxErrorRate > 1 {
		errs.Add(path+".max_error_rate", fmt.Sprintf("must be 0 to 1, got %g", c.MaxErrorRate))
	}
	if c.MaxLatencyFactor < 1 {
		errs.Add(path+".max_latency_factor", fmt.Sprintf("must be at least 1, got %g", c.MaxLatencyFactor))
	}
	if c.MaxBoots < 1 {
		errs.Add(path+".max_boots", fmt.Sprintf("must be at least 1, got %d", c.MaxBoots))
	}
	if c.MaxAttempts < 1 {
		errs.Add(path+".max_attempts", fmt.Sprintf("must be at least 1, got %d", c.MaxAttempts))
	}
}

// Enabled reports whether updates are configured.
func (c Config) Enabled() bool { return c.URL != "" }

// Defaults are a minute of probation, 1% errors, 3× latency, 2 restarts.
func Defaults() Config {
	return Config{Probation: time.Minute, MaxErrorRate: 0.01, MaxLatencyFactor: 3, MaxBoots: 2, MaxAttempts: 3}
}

// Store keeps the update state; the outbox is one, so each transition and
// its event record commit together.
type Store interface {
	Checkpoint(ctx context.Context, name string) ([]byte, error)
	AppendCheckpoint(ctx context.Context, items []outbox.Item, name string, state []byte) ([]uint64, error)
}

// Fetcher is the TUF client.
type Fetcher interface {
	Refresh() error
	Target(name string) (*metadata.TargetFiles, error)
	Download(ctx context.Context, tf *metadata.TargetFiles, dst string) error
}

// Runner is a pipeline that runs a model.
type Runner interface {
	Name() string
	ModelConfig() (infer.Config, bool)
	Manifest() *manifest.Manifest
	CheckModel(*manifest.Manifest) error
	SwapModel(ctx context.Context, m *infer.Model) error
	Health() (inferences, errors, nan, calls, nanos int64)
	SetShadow(ctx context.Context, m *infer.Model, split float64) error
	ShadowHealth() pipeline.ShadowStats
	// RecentRows are the last feature rows the running model was fed.
	RecentRows() [][]float32
}

// Options are the manager's collaborators.
type Options struct {
	Store   Store
	Fetcher Fetcher
	Staging string // directory for downloads
	Boot    int64  // this start's boot counter
	Log     *slog.Logger
	// OnChange runs after every transition, so the agent can report it.
	OnChange func()
	// Crash, when set, is called at named points of the machine; the
	// power-loss tests kill the agent there.
	Crash func(point string)

	// Self is the agent's own binary slots; nil turns self-update off.
	Self *selfupdate.Slots
	// SelfBuild is the build this process runs.
	SelfBuild int64
	// Args are the agent's arguments, for a new build's self-test.
	Args []string
	// Connected tells whether the hub is reachable; a new build that
	// cannot reach it by the end of probation is rolled back.
	Connected func() bool
	// Restart stops the agent and starts it again through the launcher.
	Restart func()
}

// job is one model's update, as stored.
type job struct {
	state.Update
	Target         string            `json:"target"`
	DesiredVersion int64             `json:"desired_version"`
	Attempts       int               `json:"attempts"`
	FromSlot       map[string]string `json:"from_slot,omitempty"` // by model dir
	ToSlot         map[string]string `json:"to_slot,omitempty"`
	SwitchBoot     int64             `json:"switch_boot,omitempty"`
	// The desired shadow or split phase, if any.
	ShadowSeconds float64 `json:"shadow_seconds,omitempty"`
	Split         float64 `json:"split,omitempty"`
	MinAgreement  float64 `json:"min_agreement,omitempty"`
	// Gates is the rollout's performance budget, checked at self-test.
	Gates state.PerfGates `json:"gates,omitzero"`
}

// doc is everything stored: the last desired state and each model's job.
type doc struct {
	Desired *state.Desired  `json:"desired,omitempty"`
	Jobs    map[string]*job `json:"jobs"`
}

const checkpointName = "update/state"

// Manager runs the state machine for every model the pipelines run.
type Manager struct {
	cfg     Config
	o       Options
	log     *slog.Logger
	runners []Runner

	mu      sync.Mutex // guards doc and current, read by Report
	doc     doc
	current map[string]state.ModelStatus // by runner

	desired   chan state.Desired
	loaded    map[string]*infer.Model // by runner: self-tested, waiting for the switch
	until     map[string]time.Time    // probation ends, by model
	shadowTo  map[string]time.Time    // shadow phase ends, by model
	notBefore map[string]time.Time    // retry backoff, by model
	failures  map[string]int          // failed tries in a row, by model: the backoff's exponent
	shadow0   map[string]pipeline.ShadowStats
	baseline  map[string][5]int64 // health counters at the switch (or restart), by runner
	fetching  map[string]*fetch   // downloads running in the background, by model
	bg        errgroup.Group      // the downloads' goroutines
}

// fetch is one job's download, running beside the machine: a large
// package on a slow link must not hold up a rollback order or another
// model's probation.
type fetch struct {
	job    *job
	cancel context.CancelFunc
	done   chan struct{}
	err    error // set before done closes
}

// Recover runs before the pipelines load their models: it finishes a
// switch or rollback that a power loss interrupted, and rolls back a model
// whose probation has seen too many restarts (it may be what crashes the
// agent). Every model directory gets the slot layout.
func Recover(ctx context.Context, cfg Config, st Store, dirs []string, boot int64, log *slog.Logger) error {
	for _, d := range dirs {
		if err := prepare(d); err != nil {
			return err
		}
	}
	dc, err := load(ctx, st)
	if err != nil {
		return err
	}
	for _, name := range sortedKeys(dc.Jobs) {
		j := dc.Jobs[name]
		switch j.Phase {
		case state.PhaseSwitching:
			for dir, slot := range j.ToSlot {
				if err := point(dir, slot); err != nil {
					return err
				}
			}
			j.Phase = state.PhaseProbation
		case state.PhaseProbation:
			if n := boot - j.SwitchBoot; n > cfg.MaxBoots {
				j.Phase, j.Reason = state.PhaseRollingBack, fmt.Sprintf("crash loop: %d restarts during probation (max_boots %d)", n, cfg.MaxBoots)
			}
		case state.PhaseRollingBack: // interrupted: finish it below
		default:
			continue
		}
		if j.Phase == state.PhaseRollingBack {
			for dir, slot := range j.FromSlot {
				if err := point(dir, slot); err != nil {
					return err
				}
			}
			j.Phase = state.PhaseRolledBack
		}
		j.Health.BootsSinceSwitch = boot - j.SwitchBoot
		j.At = time.Now().UTC()
		log.Warn("update recovered after a restart", "model", j.Model, "to", j.To, "phase", j.Phase, "reason", j.Reason)
		if err := save(ctx, st, dc, j); err != nil {
			return err
		}
	}
	return nil
}

// New builds the manager over the pipelines that run models.
func New(ctx context.Context, cfg Config, o Options, runners []Runner) (*Manager, error) {
	m := &Manager{cfg: cfg, o: o, log: o.Log, desired: make(chan state.Desired, 1), current: map[string]state.ModelStatus{},
		loaded: map[string]*infer.Model{}, until: map[string]time.Time{}, baseline: map[string][5]int64{},
		shadowTo: map[string]time.Time{}, shadow0: map[string]pipeline.ShadowStats{}, notBefore: map[string]time.Time{}, failures: map[string]int{}, fetching: map[string]*fetch{}}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	for _, r := range runners {
		mc, ok := r.ModelConfig()
		if !ok || r.Manifest() == nil {
			continue
		}
		slot, err := activeSlot(mc.Dir)
		if err != nil {
			return nil, err
		}
		mf := r.Manifest()
		m.runners = append(m.runners, r)
		m.current[r.Name()] = state.ModelStatus{Pipeline: r.Name(), Model: mf.Name, Version: mf.Version, Slot: slot}
	}
	var err error
	if m.doc, err = load(ctx, o.Store); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(o.Staging, 0o750); err != nil {
		return nil, fmt.Errorf("update: staging: %w", err)
	}
	return m, nil
}

func load(ctx context.Context, st Store) (doc, error) {
	d := doc{Jobs: map[string]*job{}}
	data, err := st.Checkpoint(ctx, checkpointName)
	if err != nil {
		return d, fmt.Errorf("update: load state: %w", err)
	}
	if data != nil {
		if err := json.Unmarshal(data, &d); err != nil {
			return d, fmt.Errorf("update: stored state: %w", err)
		}
		if d.Jobs == nil {
			d.Jobs = map[string]*job{}
		}
	}
	return d, nil
}

// save stores the whole document, with an event record for j's
// transition when j is set.
func save(ctx context.Context, st Store, d doc, j *job) error {
	data, err := json.Marshal(d)
	if err != nil {
		return fmt.Errorf("update: %w", err)
	}
	var items []outbox.Item
	if j != nil {
		ev, _ := json.Marshal(map[string]any{"kind": "model_update", "update": j.Update})
		items = append(items, outbox.Item{Stream: "events", EventTime: time.Now().UTC(), Data: ev})
	}
	if _, err := st.AppendCheckpoint(ctx, items, checkpointName, data); err != nil {
		return fmt.Errorf("update: save state: %w", err)
	}
	return nil
}

// Desire hands the manager a desired-state document; only the newest
// waiting one counts (the state is level-triggered).
func (m *Manager) Desire(d state.Desired) {
	for {
		select {
		case m.desired <- d:
			return
		default:
			select {
			case <-m.desired:
			default:
			}
		}
	}
}

// Report is what the agent publishes: each pipeline's model, the last
// update of each model, and the newest desired version seen.
func (m *Manager) Report() ([]state.ModelStatus, map[string]state.Update, int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var models []state.ModelStatus
	for _, r := range m.runners {
		models = append(models, m.current[r.Name()])
	}
	if a, ok := m.agentStatus(); ok {
		models = append(models, a)
	}
	ups := map[string]state.Update{}
	for name, j := range m.doc.Jobs {
		ups[name] = j.Update
	}
	var dv int64
	if m.doc.Desired != nil {
		dv = m.doc.Desired.Version
	}
	return models, ups, dv
}

// Run applies desired states until ctx ends.
func (m *Manager) Run(ctx context.Context) error {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	if m.doc.Desired != nil {
		m.plan(ctx, *m.doc.Desired)
	}
	for {
		select {
		case <-ctx.Done():
			m.bg.Wait() // ctx ends the downloads
			for _, l := range m.loaded {
				l.Close()
			}
			return nil
		case d := <-m.desired:
			if m.doc.Desired != nil && d.Version < m.doc.Desired.Version {
				continue // an older document arriving late
			}
			m.plan(ctx, d)
		case <-tick.C:
			m.advance(ctx)
		}
	}
}

// plan compares desired with what runs and starts (or supersedes) jobs.
func (m *Manager) plan(ctx context.Context, d state.Desired) {
	m.mu.Lock()
	m.doc.Desired = &d
	m.mu.Unlock()
	for _, name := range sortedKeys(d.Models) {
		want := d.Models[name]
		from, ok := m.running(name)
		if !ok {
			continue // no pipeline runs this model
		}
		j := m.doc.Jobs[name]
		if j != nil && j.To == want.Version && j.Rollout == want.Rollout {
			continue // in progress, or already ended for this rollout: never retried
		}
		if j != nil && !state.Terminal(j.Phase) {
			if j.Phase == state.PhaseProbation || j.Phase == state.PhaseSwitching || j.Phase == state.PhaseRollingBack {
				continue // finish first: the other slot holds the rollback
			}
			m.abandon(name)
			m.transition(ctx, j, state.PhaseFailed, "superseded by desired version "+fmt.Sprint(d.Version))
		}
		if from == want.Version {
			continue
		}
		nj := &job{Update: state.Update{Model: name, From: from, To: want.Version, Rollout: want.Rollout}, Target: want.Target, DesiredVersion: d.Version,
			ShadowSeconds: want.ShadowSeconds, Split: want.Split, MinAgreement: want.MinAgreement, Gates: want.PerfGates}
		if name == tuf.AgentModel { // one target per architecture
			nj.Target, nj.ShadowSeconds, nj.Split = tuf.AgentTargetName(runtime.GOARCH, want.Version), 0, 0
		}
		m.mu.Lock()
		m.doc.Jobs[name] = nj
		m.mu.Unlock()
		m.log.Info("update starting", "model", name, "from", from, "to", want.Version, "rollout", want.Rollout)
		m.transition(ctx, nj, state.PhaseDownloading, "")
	}
	if err := save(ctx, m.o.Store, m.snapshot(), nil); err != nil {
		m.log.Error("update: save desired state", "err", err)
	}
}

// running is the version of model the pipelines run; ok is false when
// none does.
func (m *Manager) running(model string) (int64, bool) {
	if model == tuf.AgentModel && m.o.Self != nil {
		return m.o.SelfBuild, true
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, c := range m.current {
		if c.Model == model {
			return c.Version, true
		}
	}
	return 0, false
}

func (m *Manager) snapshot() doc {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.doc // jobs are shared pointers; marshalled under the single writer
}

// transition stores j's new phase (with its event) and reports it.
func (m *Manager) transition(ctx context.Context, j *job, phase, reason string) {
	m.transitionMeasured(ctx, j, phase, reason, nil)
}

// transitionMeasured is transition that also records the self-test's
// measurement, when st is set, in the same step: a report never carries
// a measurement without the outcome it led to, so the hub cannot act on
// it (halt, revert) while the agent is still deciding.
func (m *Manager) transitionMeasured(ctx context.Context, j *job, phase, reason string, st *state.SelfTest) {
	m.mu.Lock()
	j.Phase, j.Reason, j.At = phase, reason, time.Now().UTC()
	if st != nil {
		j.SelfTest = st
	}
	m.mu.Unlock()
	for {
		err := save(ctx, m.o.Store, m.snapshot(), j)
		if err == nil {
			break
		}
		// Without the stored state the next step must not run.
		m.log.Error("update: cannot store a transition; retrying", "model", j.Model, "phase", phase, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
	lvl := slog.LevelInfo
	if phase == state.PhaseFailed || phase == state.PhaseRolledBack || phase == state.PhaseRollingBack {
		lvl = slog.LevelWarn
	}
	m.log.Log(ctx, lvl, "update", "model", j.Model, "from", j.From, "to", j.To, "phase", phase, "reason", reason)
	if m.o.Crash != nil {
		m.o.Crash(phase)
	}
	if m.o.OnChange != nil {
		m.o.OnChange()
	}
}

// advance moves every unfinished job one step.
func (m *Manager) advance(ctx context.Context) {
	ended := false
	for _, name := range sortedKeys(m.doc.Jobs) {
		j := m.doc.Jobs[name]
		// Step on while steps succeed; probation and retries wait for
		// the next tick.
		if time.Now().Before(m.notBefore[name]) {
			continue
		}
		for !state.Terminal(j.Phase) && ctx.Err() == nil {
			before := j.Phase
			m.step(ctx, j)
			ended = ended || state.Terminal(j.Phase)
			if j.Phase == before || j.Phase == state.PhaseProbation {
				break
			}
		}
	}
	// What was asked while an update could not be interrupted (a
	// rollback order, say) is due once it has ended.
	if ended && m.doc.Desired != nil {
		m.plan(ctx, *m.doc.Desired)
	}
}

func (m *Manager) staged(j *job) string {
	return filepath.Join(m.o.Staging, fmt.Sprintf("%s-%d", j.Model, j.To))
}

// runnersOf are the pipelines that run model, with their model dirs.
func (m *Manager) runnersOf(model string) []Runner {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Runner
	for _, r := range m.runners {
		if m.current[r.Name()].Model == model {
			out = append(out, r)
		}
	}
	return out
}

func dirOf(r Runner) string {
	mc, _ := r.ModelConfig()
	return mc.Dir
}

// step runs the work of j's phase and moves it on.
func (m *Manager) step(ctx context.Context, j *job) {
	if isAgent(j) {
		m.stepAgent(ctx, j)
		return
	}
	switch j.Phase {
	case state.PhaseDownloading:
		done, err := m.download(ctx, j)
		if !done {
			return
		}
		if err != nil {
			m.retry(ctx, j, err)
			return
		}
		delete(m.failures, j.Model)
		m.transition(ctx, j, state.PhaseVerifying, "")
	case state.PhaseVerifying:
		if err := m.verify(j); err != nil {
			m.verifyFailed(ctx, j, err)
			return
		}
		m.transition(ctx, j, state.PhaseInstalling, "")
	case state.PhaseInstalling:
		if err := m.install(j); err != nil {
			m.transition(ctx, j, state.PhaseFailed, err.Error())
			return
		}
		m.transition(ctx, j, state.PhaseSelfTest, "")
	case state.PhaseSelfTest:
		st, err := m.selfTest(j)
		if err != nil {
			m.transitionMeasured(ctx, j, state.PhaseFailed, err.Error(), st)
			return
		}
		if j.ShadowSeconds > 0 {
			m.transitionMeasured(ctx, j, state.PhaseShadow, "", st)
			return
		}
		m.mu.Lock()
		j.SwitchBoot = m.o.Boot
		m.mu.Unlock()
		m.transitionMeasured(ctx, j, state.PhaseSwitching, "", st)
	case state.PhaseShadow:
		m.shadow(ctx, j)
	case state.PhaseSwitching:
		if err := m.switchTo(ctx, j, j.ToSlot, j.To); err != nil {
			// The links may be half switched: go back to what was.
			m.transition(ctx, j, state.PhaseRollingBack, "switch: "+err.Error())
			return
		}
		m.transition(ctx, j, state.PhaseProbation, "")
	case state.PhaseProbation:
		m.probation(ctx, j)
	case state.PhaseRollingBack:
		if err := m.switchTo(ctx, j, j.FromSlot, j.From); err != nil {
			m.log.Error("update: rollback failed; retrying", "model", j.Model, "err", err)
			return
		}
		m.transition(ctx, j, state.PhaseRolledBack, j.Reason)
	}
}

// retry counts a failed download or verification; refusals by TUF or by
// the hashes (metadata longer than TUF allows among them) end the update
// after MaxAttempts, network trouble is retried for as long as it lasts.
// Either backs off, doubling up to 30 s.
func (m *Manager) retry(ctx context.Context, j *job, err error) {
	refused := errors.Is(err, transfer.ErrVerify) || errors.Is(err, &metadata.ErrRepository{}) || errors.Is(err, errRefused) ||
		errors.Is(err, &metadata.ErrDownloadLengthMismatch{})
	m.mu.Lock()
	j.Reason = err.Error()
	if refused {
		j.Attempts++
	}
	attempts := j.Attempts
	m.mu.Unlock()
	m.log.Warn("update: download or verification failed", "model", j.Model, "to", j.To, "attempt", attempts, "err", err)
	if refused && attempts >= m.cfg.MaxAttempts {
		m.transition(ctx, j, state.PhaseFailed, err.Error())
		return
	}
	// Back off: a hub of a cluster may serve a copy a moment behind the
	// one the device saw last, and a network outage is not over in 250 ms.
	m.failures[j.Model]++
	m.notBefore[j.Model] = time.Now().Add(min(time.Second<<min(m.failures[j.Model], 5), 30*time.Second))
	if m.o.OnChange != nil {
		m.o.OnChange()
	}
}

var errRefused = errors.New("update: target refused")

// verifyFailed drops a download that did not verify and, unless the
// update is refused for good, goes back to downloading it.
func (m *Manager) verifyFailed(ctx context.Context, j *job, err error) {
	os.Remove(m.staged(j) + ".tar")
	m.retry(ctx, j, err)
	if j.Phase == state.PhaseVerifying {
		m.transition(ctx, j, state.PhaseDownloading, j.Reason)
	}
}

// download starts j's download in the background, or reports on the one
// running: done is false while it runs. Refreshing the metadata is part
// of it, since a mirror may stall there too.
func (m *Manager) download(ctx context.Context, j *job) (done bool, err error) {
	if f := m.fetching[j.Model]; f != nil {
		if f.job != j { // an earlier job's, superseded: it ends first
			f.cancel()
		}
		select {
		case <-f.done:
			delete(m.fetching, j.Model)
			if f.job == j {
				return true, f.err
			}
		default:
			return false, nil
		}
	}
	fctx, cancel := context.WithCancel(ctx)
	f := &fetch{job: j, cancel: cancel, done: make(chan struct{})}
	m.fetching[j.Model] = f
	dst := m.staged(j) + ".tar"
	m.bg.Go(func() error {
		defer close(f.done)
		defer cancel()
		if f.err = m.o.Fetcher.Refresh(); f.err != nil {
			return nil
		}
		var tf *metadata.TargetFiles
		if tf, _, f.err = m.signedTarget(j); f.err != nil {
			return nil
		}
		f.err = m.o.Fetcher.Download(fctx, tf, dst)
		return nil // the error is the job's, not the manager's
	})
	return false, nil
}

// abandon stops model's background download, if one runs; its partial
// file stays for a later job to resume, which starts once it has ended.
func (m *Manager) abandon(model string) {
	if f := m.fetching[model]; f != nil {
		f.cancel()
	}
}

// signedTarget is j's target as the signed metadata describes it, checked
// against what the desired state asked for and against this device.
func (m *Manager) signedTarget(j *job) (*metadata.TargetFiles, tuf.ModelTarget, error) {
	tf, err := m.o.Fetcher.Target(j.Target)
	if err != nil {
		return nil, tuf.ModelTarget{}, err
	}
	if isAgent(j) {
		a, err := tuf.Agent(tf)
		if err == nil {
			err = agentTargetOK(a, j)
		} else {
			err = fmt.Errorf("%w: %w", errRefused, err)
		}
		return tf, tuf.ModelTarget{}, err
	}
	mt, err := tuf.Model(tf)
	if err != nil {
		return nil, mt, fmt.Errorf("%w: %w", errRefused, err)
	}
	if mt.Model != j.Model || mt.Version != j.To {
		return nil, mt, fmt.Errorf("%w: target %s is %s version %d, desired state asks for %s version %d", errRefused, j.Target, mt.Model, mt.Version, j.Model, j.To)
	}
	if len(mt.Arch) > 0 && !slices.Contains(mt.Arch, runtime.GOARCH) {
		return nil, mt, fmt.Errorf("%w: %s version %d runs on %v, this device is %s", errRefused, j.Model, j.To, mt.Arch, runtime.GOARCH)
	}
	return tf, mt, nil
}

// verify unpacks the downloaded package and checks it is what TUF signed:
// the manifest's digest from the target metadata, its name and version,
// and the model file's sha256 from the manifest.
func (m *Manager) verify(j *job) error {
	// The signed description the download was checked against (after a
	// restart the client refreshes first).
	_, mt, err := m.signedTarget(j)
	if err != nil {
		return err
	}
	f, err := os.Open(m.staged(j) + ".tar")
	if err != nil {
		return err
	}
	defer f.Close()
	dir := m.staged(j)
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	mf, err := manifest.Unpack(f, dir)
	if err != nil {
		return fmt.Errorf("%w: %w", errRefused, err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, manifest.ManifestFile))
	if err != nil {
		return err
	}
	if got := manifest.Digest(raw); got != mt.ManifestSHA256 {
		return fmt.Errorf("%w: manifest sha256 %s, target metadata says %s", errRefused, got, mt.ManifestSHA256)
	}
	if mf.Name != j.Model || mf.Version != j.To {
		return fmt.Errorf("%w: package is %s version %d", errRefused, mf.Name, mf.Version)
	}
	return nil
}

// install copies the verified package into the inactive slot of every
// model directory that runs this model.
func (m *Manager) install(j *job) error {
	from, to := map[string]string{}, map[string]string{}
	for _, r := range m.runnersOf(j.Model) {
		dir := dirOf(r)
		if _, done := to[dir]; done {
			continue
		}
		active, err := activeSlot(dir)
		if err != nil {
			return err
		}
		from[dir], to[dir] = active, other(active)
		if err := copyPackage(m.staged(j), filepath.Join(dir, other(active))); err != nil {
			return err
		}
	}
	if len(to) == 0 {
		return fmt.Errorf("update: no pipeline runs %s any more", j.Model)
	}
	m.mu.Lock()
	j.FromSlot, j.ToSlot = from, to
	m.mu.Unlock()
	return nil
}

// selfTest loads the installed slot for each pipeline: onnx checks, the
// golden vectors, and the pipeline's features. Then it measures the
// candidate on this device (latency over the golden vectors, resident
// memory from loading it, and the running model's latency the same way)
// and refuses it when it does not fit the rollout's gates. The loaded
// models wait for the switch.
func (m *Manager) selfTest(j *job) (*state.SelfTest, error) {
	var st state.SelfTest
	var loaded []*infer.Model
	fail := func(err error) error {
		for _, mod := range loaded {
			mod.Close()
		}
		return err
	}
	for _, r := range m.runnersOf(j.Model) {
		mc, _ := r.ModelConfig()
		before := residentBytes()
		mod, err := infer.LoadSlot(mc, j.ToSlot[mc.Dir], m.log)
		if err != nil {
			return nil, fail(fmt.Errorf("self-test: %w", err))
		}
		loaded = append(loaded, mod)
		st.RSSGrowthMB += growthMB(before, residentBytes())
		if mod.Manifest.Name != j.Model || mod.Manifest.Version != j.To {
			return nil, fail(fmt.Errorf("self-test: slot holds %s version %d", mod.Manifest.Name, mod.Manifest.Version))
		}
		if err := r.CheckModel(mod.Manifest); err != nil {
			return nil, fail(fmt.Errorf("self-test: %w", err))
		}
		if err := m.measure(r, mc, mod, &st); err != nil {
			return nil, fail(fmt.Errorf("self-test: measure: %w", err))
		}
	}
	m.log.Info("update: candidate measured", "model", j.Model, "to", j.To, "p50_us", st.LatencyP50US, "p99_us", st.LatencyP99US,
		"batch", st.BatchRows, "batch_p99_us", st.BatchP99US, "rss_growth_mb", st.RSSGrowthMB, "active_p50_us", st.ActiveLatencyP50US)
	if why := st.Check(m.selfTestGates(j)); why != "" {
		return &st, fail(fmt.Errorf("self-test: does not fit this device: %s", why))
	}
	for i, r := range m.runnersOf(j.Model) {
		if old := m.loaded[r.Name()]; old != nil {
			old.Close()
		}
		m.loaded[r.Name()] = loaded[i]
	}
	return &st, nil
}

// measure adds r's candidate mod, and the model r runs now, to st: the
// worst latency over the pipelines.
func (m *Manager) measure(r Runner, mc infer.Config, mod *infer.Model, st *state.SelfTest) error {
	batch := usualBatch(r, len(mod.Manifest.Golden))
	// One snapshot for both models, and real rows only when both take
	// them: the factor compares like with like.
	recent := r.RecentRows()
	active, aerr := infer.LoadSlot(mc, infer.Active, m.log)
	if aerr == nil {
		defer active.Close()
		if !sameWidth(mod, active) {
			recent = nil
		}
	}
	in := inputsOf(mod, recent)
	p50, p99, bp50, bp99, calls, err := measure(mod, batch, in)
	if err != nil {
		return err
	}
	if p99 >= st.LatencyP99US && bp99 >= st.BatchP99US {
		st.Calls, st.BatchRows, st.RealRows = calls, batch, len(in.real)
	}
	st.LatencyP50US, st.LatencyP99US = max(st.LatencyP50US, p50), max(st.LatencyP99US, p99)
	st.BatchP50US, st.BatchP99US = max(st.BatchP50US, bp50), max(st.BatchP99US, bp99)
	// The running model, in a session of its own (the pipeline's is in
	// use), on its own golden vectors and the same real rows, at the same
	// batch.
	if aerr != nil {
		m.log.Warn("update: cannot load the running model to time it; no latency factor at self-test", "pipeline", r.Name(), "err", aerr)
		return nil
	}
	ain := inputsOf(active, recent)
	ap50, _, abp50, _, _, err := measure(active, batch, ain)
	if err != nil {
		m.log.Warn("update: cannot time the running model; no latency factor at self-test", "pipeline", r.Name(), "err", err)
		return nil
	}
	st.ActiveVersion = active.Manifest.Version
	st.ActiveLatencyP50US, st.ActiveBatchP50US = max(st.ActiveLatencyP50US, ap50), max(st.ActiveBatchP50US, abp50)
	return nil
}

// switchTo points every directory at its slot in slots, then hands the
// pipelines the model there (loaded by the self-test, or loaded now after
// a restart or for a rollback).
func (m *Manager) switchTo(ctx context.Context, j *job, slots map[string]string, version int64) error {
	rs := m.runnersOf(j.Model)
	var calls, nanos int64
	for _, r := range rs {
		_, _, _, c, n := r.Health()
		calls, nanos = calls+c, nanos+n
	}
	if version == j.To && calls > 0 {
		m.mu.Lock()
		j.Health.BaselineLatencyUS = float64(nanos) / float64(calls) / 1e3
		m.mu.Unlock()
	}
	for dir, slot := range slots {
		if err := point(dir, slot); err != nil {
			return err
		}
	}
	if m.o.Crash != nil {
		m.o.Crash("switched")
	}
	for _, r := range rs {
		mc, _ := r.ModelConfig()
		mod := m.loaded[r.Name()]
		delete(m.loaded, r.Name())
		if mod == nil || mod.Manifest.Version != version {
			if mod != nil {
				mod.Close()
			}
			var err error
			if mod, err = infer.LoadSlot(mc, infer.Active, m.log); err != nil {
				return err
			}
		}
		if err := r.SwapModel(ctx, mod); err != nil {
			mod.Close()
			return err
		}
		inf, e, nan, c, n := r.Health()
		m.mu.Lock()
		m.baseline[r.Name()] = [5]int64{inf, e, nan, c, n}
		m.current[r.Name()] = state.ModelStatus{Pipeline: r.Name(), Model: j.Model, Version: version, Slot: slots[mc.Dir]}
		m.mu.Unlock()
	}
	m.until[j.Model] = time.Now().Add(m.cfg.Probation)
	return nil
}

// shadow runs the candidate beside the running model for the desired
// time, then lets it switch in, or refuses it when the two disagree too
// often or the candidate fails.
func (m *Manager) shadow(ctx context.Context, j *job) {
	rs := m.runnersOf(j.Model)
	until, ok := m.shadowTo[j.Model]
	if !ok { // starting, or after a restart: (re)load and start the window
		for _, r := range rs {
			mc, _ := r.ModelConfig()
			mod := m.loaded[r.Name()]
			if mod == nil {
				var err error
				if mod, err = infer.LoadSlot(mc, j.ToSlot[mc.Dir], m.log); err != nil {
					m.stopShadow(ctx, j, state.PhaseFailed, "self-test: "+err.Error())
					return
				}
				m.loaded[r.Name()] = mod
			}
			m.shadow0[r.Name()] = r.ShadowHealth()
			if err := r.SetShadow(ctx, mod, j.Split); err != nil {
				return
			}
		}
		until = time.Now().Add(time.Duration(j.ShadowSeconds * float64(time.Second)))
		m.shadowTo[j.Model] = until
	}
	var sh state.Shadow
	var nanos, activeRows, activeNanos int64
	for _, r := range rs {
		now, b := r.ShadowHealth(), m.shadow0[r.Name()]
		sh.Rows += now.Rows - b.Rows
		sh.Errors += now.Errors - b.Errors
		sh.NaN += now.NaN - b.NaN
		agree := now.Agree - b.Agree
		sh.Agreement += float64(agree)
		nanos += now.Nanos - b.Nanos
		activeRows += now.ActiveRows - b.ActiveRows
		activeNanos += now.ActiveNanos - b.ActiveNanos
	}
	if sh.Rows > 0 {
		sh.Agreement /= float64(sh.Rows)
		sh.RowLatencyUS = float64(nanos) / float64(sh.Rows) / 1e3
	}
	if activeRows > 0 {
		sh.ActiveRowLatencyUS = float64(activeNanos) / float64(activeRows) / 1e3
	}
	sh.Split = j.Split
	m.mu.Lock()
	j.Shadow = &sh
	m.mu.Unlock()
	switch {
	case sh.Rows > 0 && float64(sh.Errors)/float64(sh.Rows) > m.cfg.MaxErrorRate:
		m.stopShadow(ctx, j, state.PhaseFailed, fmt.Sprintf("shadow: %d of %d rows failed or gave non-finite scores", sh.Errors, sh.Rows))
	case time.Now().Before(until):
		if m.o.OnChange != nil {
			m.o.OnChange()
		}
	case sh.Rows > 0 && sh.Agreement < j.MinAgreement:
		m.stopShadow(ctx, j, state.PhaseFailed, fmt.Sprintf("shadow: agreement %.3f with the running model over %d rows, below %g", sh.Agreement, sh.Rows, j.MinAgreement))
	default:
		m.stopShadow(ctx, j, state.PhaseSwitching, "")
	}
}

// stopShadow takes the candidate out of the pipelines and moves on: to
// the switch (keeping the loaded models for it), or to failed.
func (m *Manager) stopShadow(ctx context.Context, j *job, phase, reason string) {
	for _, r := range m.runnersOf(j.Model) {
		if err := r.SetShadow(ctx, nil, 0); err != nil {
			return
		}
		if phase == state.PhaseFailed {
			if mod := m.loaded[r.Name()]; mod != nil {
				mod.Close()
				delete(m.loaded, r.Name())
			}
		}
	}
	delete(m.shadowTo, j.Model)
	if phase == state.PhaseSwitching {
		m.mu.Lock()
		j.SwitchBoot = m.o.Boot
		m.mu.Unlock()
	}
	m.transition(ctx, j, phase, reason)
}

// probation watches the new model's health and commits it when the window
// passes clean, or rolls it back at the first limit it crosses.
func (m *Manager) probation(ctx context.Context, j *job) {
	until, ok := m.until[j.Model]
	if !ok { // a restart during probation: watch a whole window again
		until = time.Now().Add(m.cfg.Probation)
		m.until[j.Model] = until
		for _, r := range m.runnersOf(j.Model) {
			inf, e, nan, c, n := r.Health()
			m.baseline[r.Name()] = [5]int64{inf, e, nan, c, n}
		}
	}
	var h state.Health
	var calls, nanos int64
	for _, r := range m.runnersOf(j.Model) {
		inf, e, nan, c, n := r.Health()
		b := m.baseline[r.Name()]
		h.Inferences += inf - b[0]
		h.Errors += e - b[1]
		h.NaN += nan - b[2]
		calls, nanos = calls+c-b[3], nanos+n-b[4]
	}
	h.Calls = calls
	if calls > 0 {
		h.MeanLatencyUS = float64(nanos) / float64(calls) / 1e3
	}
	m.mu.Lock()
	h.BaselineLatencyUS, h.BootsSinceSwitch = j.Health.BaselineLatencyUS, j.Health.BootsSinceSwitch
	j.Health = h
	m.mu.Unlock()
	rows := h.Inferences + h.Errors
	var why string
	switch {
	case h.NaN > 0 && float64(h.NaN)/float64(rows) > m.cfg.MaxErrorRate:
		why = fmt.Sprintf("%d of %d rows gave non-finite scores", h.NaN, rows)
	case rows > 0 && float64(h.Errors)/float64(rows) > m.cfg.MaxErrorRate:
		why = fmt.Sprintf("%d of %d rows failed (max_error_rate %g)", h.Errors, rows, m.cfg.MaxErrorRate)
	case h.SlowerThan(m.cfg.MaxLatencyFactor):
		why = fmt.Sprintf("mean latency %.0f µs is %.1f× the previous model's %.0f µs (max_latency_factor %g)",
			h.MeanLatencyUS, h.MeanLatencyUS/h.BaselineLatencyUS, h.BaselineLatencyUS, m.cfg.MaxLatencyFactor)
	}
	if why != "" {
		m.transition(ctx, j, state.PhaseRollingBack, why)
		return
	}
	if time.Now().After(until) {
		delete(m.until, j.Model)
		m.transition(ctx, j, state.PhaseCommitted, "")
		os.RemoveAll(m.staged(j))
		os.Remove(m.staged(j) + ".tar")
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
