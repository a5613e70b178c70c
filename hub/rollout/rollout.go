// Package rollout runs staged model rollouts: it picks the devices a
// rollout targets by their labels, moves them wave by wave through their
// desired state, gates each wave on the devices' reports, bakes between
// waves, and when a gate fails halts and sends every updated device back
// to the version it had. Rollouts and desired states live in JetStream KV,
// so they survive restarts and a hub cluster shares them; one hub (the
// lease holder) runs the controller.
package rollout

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/outpost-edge/outpost/hub/api"
	"github.com/outpost-edge/outpost/sync/state"
	"github.com/outpost-edge/outpost/sync/tuf"
)

// Buckets.
const (
	RolloutBucket = "OUTPOST_ROLLOUTS"
	DesiredBucket = "OUTPOST_DESIRED"
)

// The rollout types live in hub/api, which the CLI and the console share
// without linking the controller; these names keep the package's own.
const (
	Running    = api.Running
	Baking     = api.Baking
	Paused     = api.Paused
	Halted     = api.Halted
	Aborted    = api.Aborted
	Completed  = api.Completed
	RolledBack = api.RolledBack
)

type (
	Wave     = api.Wave
	Gates    = api.Gates
	Spec     = api.Spec
	Duration = api.Duration
	Device   = api.Device
	Rollout  = api.Rollout
)

var (
	// ErrInvalid means a rollout request is wrong; the message says how.
	ErrInvalid = api.ErrRolloutInvalid
	// ErrConflict means another active rollout covers the same model and labels.
	ErrConflict = errors.New("rollout: conflict")
	// ErrNotFound means no such rollout.
	ErrNotFound = errors.New("rollout: not found")
)

// Active reports whether a rollout in this state still moves devices.
func Active(s string) bool { return api.Active(s) }

// ParseWaves reads "1,10%,50%,100%".
func ParseWaves(s string) ([]Wave, error) { return api.ParseWaves(s) }

// Fleet is what the controller reads of the devices.
type Fleet interface {
	Devices() []state.Device
}

// Publisher sends a desired document to its device.
type Publisher interface {
	PublishDesired(d state.Desired) error
}

// Controller owns the buckets and runs rollouts.
type Controller struct {
	rollouts jetstream.KeyValue
	desired  jetstream.KeyValue
	fleet    Fleet
	pub      Publisher
	log      *slog.Logger
	now      func() time.Time

	// OnState, when set, is told of each state a rollout enters
	// (running at start, completed, halted, aborted, rolled_back) once it
	// is stored and its devices were sent their versions: the hub's model
	// registry follows it. Set it before Run.
	OnState func(ctx context.Context, r *Rollout)

	mu     sync.Mutex
	latest map[string]int64 // newest desired version per device, as written here or read
	ended  map[string]bool  // rollouts seen in a final state
}

// Open creates or binds the buckets.
func Open(ctx context.Context, js jetstream.JetStream, replicas int, fleet Fleet, pub Publisher, log *slog.Logger) (*Controller, error) {
	c := &Controller{fleet: fleet, pub: pub, log: log.With("component", "rollout"), now: time.Now, latest: map[string]int64{}, ended: map[string]bool{}}
	var err error
	if c.rollouts, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: RolloutBucket, History: 5, Replicas: max(replicas, 1), Storage: jetstream.FileStorage}); err != nil {
		return nil, fmt.Errorf("rollout: bucket: %w", err)
	}
	if c.desired, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: DesiredBucket, History: 1, Replicas: max(replicas, 1), Storage: jetstream.FileStorage}); err != nil {
		return nil, fmt.Errorf("rollout: bucket: %w", err)
	}
	return c, nil
}

// Start validates spec and stores a new running rollout.
func (c *Controller) Start(ctx context.Context, spec Spec) (*Rollout, error) {
	spec.Defaults()
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	all, err := c.List(ctx)
	if err != nil {
		return nil, err
	}
	for _, r := range all {
		if Active(r.State) && r.Spec.Model == spec.Model && maps.Equal(r.Spec.Selector, spec.Selector) {
			return nil, fmt.Errorf("%w: rollout %s (%s) already moves %s on %s; pause, abort or wait for it", ErrConflict, r.ID, r.State, spec.Model, Selector(spec.Selector))
		}
	}
	if !spec.AllowEmpty && len(eligible(&Rollout{Spec: spec}, c.fleet.Devices(), all)) == 0 {
		return nil, fmt.Errorf("%w: the selector (%s) matches no enrolled, reporting device that runs %s and is not in another active rollout of it; allow_empty (--allow-empty) starts it anyway, to wait for one",
			ErrInvalid, Selector(spec.Selector), spec.Model)
	}
	now := c.now().UTC()
	r := &Rollout{ID: fmt.Sprintf("%s-v%d-%s", spec.Model, spec.Version, now.Format("20060102T150405.000")), Spec: spec, State: Running,
		Devices: map[string]*Device{}, CreatedAt: now, UpdatedAt: now, WaveStarted: now}
	r.ID = strings.ReplaceAll(r.ID, ".", "")
	data, _ := json.Marshal(r)
	if _, err := c.rollouts.Create(ctx, r.ID, data); err != nil {
		return nil, fmt.Errorf("rollout: store: %w", err)
	}
	c.log.Info("rollout started", "rollout", r.ID, "model", spec.Model, "version", spec.Version, "selector", Selector(spec.Selector), "waves", spec.Waves)
	c.entered(ctx, r)
	return r, nil
}

// Selector writes a selector as "k=v,k2=v2" (sorted), or "every device".
func Selector(sel map[string]string) string {
	if len(sel) == 0 {
		return "every device"
	}
	parts := make([]string, 0, len(sel))
	for _, k := range slices.Sorted(maps.Keys(sel)) {
		parts = append(parts, k+"="+sel[k])
	}
	return strings.Join(parts, ",")
}

// entered tells OnState of the state r is now in.
func (c *Controller) entered(ctx context.Context, r *Rollout) {
	if c.OnState != nil {
		c.OnState(ctx, r)
	}
}

// Get reads one rollout.
func (c *Controller) Get(ctx context.Context, id string) (*Rollout, error) {
	r, _, err := c.get(ctx, id)
	return r, err
}

func (c *Controller) get(ctx context.Context, id string) (*Rollout, uint64, error) {
	e, err := c.rollouts.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("rollout: %w", err)
	}
	var r Rollout
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		return nil, 0, fmt.Errorf("rollout: stored %s: %w", id, err)
	}
	return &r, e.Revision(), nil
}

// List reads every rollout, newest first.
func (c *Controller) List(ctx context.Context) ([]*Rollout, error) {
	keys, err := c.rollouts.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("rollout: %w", err)
	}
	var out []*Rollout
	for k := range keys.Keys() {
		r, err := c.Get(ctx, k)
		if err != nil {
			if errors.Is(err, ErrNotFound) {
				continue
			}
			return nil, err
		}
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CreatedAt.After(out[j].CreatedAt) })
	return out, nil
}

// modify applies f to the stored rollout with compare-and-set, retrying
// when the API and the controller write at once.
func (c *Controller) modify(ctx context.Context, id string, f func(*Rollout) error) (*Rollout, error) {
	for {
		r, rev, err := c.get(ctx, id)
		if err != nil {
			return nil, err
		}
		if err := f(r); err != nil {
			return nil, err
		}
		r.UpdatedAt = c.now().UTC()
		data, _ := json.Marshal(r)
		if _, err := c.rollouts.Update(ctx, id, data, rev); err == nil {
			return r, nil
		} else if !errors.Is(err, jetstream.ErrKeyExists) {
			return nil, fmt.Errorf("rollout: store %s: %w", id, err)
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
}

// Pause stops a rollout from moving on; devices mid-update finish.
func (c *Controller) Pause(ctx context.Context, id string) (*Rollout, error) {
	return c.modify(ctx, id, func(r *Rollout) error {
		if r.State != Running && r.State != Baking {
			return fmt.Errorf("%w: rollout %s is %s", ErrInvalid, id, r.State)
		}
		r.PausedFrom, r.State = r.State, Paused
		return nil
	})
}

// Resume continues a paused rollout.
func (c *Controller) Resume(ctx context.Context, id string) (*Rollout, error) {
	return c.modify(ctx, id, func(r *Rollout) error {
		if r.State != Paused {
			return fmt.Errorf("%w: rollout %s is %s, not paused", ErrInvalid, id, r.State)
		}
		r.State, r.PausedFrom = r.PausedFrom, ""
		if r.State == "" {
			r.State = Running
		}
		return nil
	})
}

// Abort ends a rollout and sends every device it updated back.
func (c *Controller) Abort(ctx context.Context, id, why string) (*Rollout, error) {
	r, err := c.modify(ctx, id, func(r *Rollout) error {
		if !Active(r.State) {
			return fmt.Errorf("%w: rollout %s is already %s", ErrInvalid, id, r.State)
		}
		r.State, r.Reason = Aborted, "aborted: "+why
		return nil
	})
	if err != nil {
		return nil, err
	}
	if r, err = c.revert(ctx, r); err != nil {
		return nil, err
	}
	c.entered(ctx, r)
	return r, nil
}

// Rollback undoes a rollout, running, paused, baking or completed: in one
// step, with no waves and no bake, every device it moved is sent back to
// the version it ran before (a desired state naming that version's signed
// target, which the agent verifies through TUF like any update). The
// rollout ends rolled_back; why says who asked.
func (c *Controller) Rollback(ctx context.Context, id, why string) (*Rollout, error) {
	r, err := c.modify(ctx, id, func(r *Rollout) error {
		if !Active(r.State) && r.State != Completed {
			return fmt.Errorf("%w: rollout %s is %s: nothing to roll back", ErrInvalid, id, r.State)
		}
		r.State, r.Reason, r.PausedFrom, r.BakeUntil = RolledBack, "rolled back "+why, "", time.Time{}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if r, err = c.revert(ctx, r); err != nil {
		return nil, err
	}
	c.log.Info("rollout rolled back", "rollout", r.ID, "devices", countReverted(r), "reason", r.Reason)
	c.entered(ctx, r)
	return r, nil
}

func countReverted(r *Rollout) int {
	n := 0
	for _, d := range r.Devices {
		if d.Reverted {
			n++
		}
	}
	return n
}

// Run ticks the controller until ctx ends (on the lease holder).
func (c *Controller) Run(ctx context.Context, every time.Duration) {
	// Another hub may have written desired states while this one did not
	// hold the lease: forget what it remembered.
	c.mu.Lock()
	c.latest = map[string]int64{}
	c.mu.Unlock()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := c.Tick(ctx); err != nil && ctx.Err() == nil {
				c.log.Warn("rollout tick", "err", err)
			}
		}
	}
}

// Tick advances every active rollout once.
func (c *Controller) Tick(ctx context.Context) error {
	keys, err := c.rollouts.ListKeys(ctx)
	if err != nil {
		return fmt.Errorf("rollout: %w", err)
	}
	// Ended rollouts never move again: read each once, not every tick.
	var active []*Rollout
	for id := range keys.Keys() {
		c.mu.Lock()
		done := c.ended[id]
		c.mu.Unlock()
		if done {
			continue
		}
		r, err := c.Get(ctx, id)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		if !Active(r.State) {
			c.mu.Lock()
			c.ended[id] = true
			c.mu.Unlock()
			continue
		}
		active = append(active, r)
	}
	if len(active) == 0 {
		return nil
	}
	fleet := c.fleet.Devices()
	for _, r := range active {
		if err := c.advance(ctx, r.ID, fleet, active); err != nil {
			return err
		}
	}
	return nil
}

// eligible are the devices r targets: enrolled, not revoked, labels
// matching, running the model, and not claimed by another active rollout
// of the same model. Ordered by a hash of rollout and device, so waves
// are spread over the fleet but stable across ticks and hubs.
func eligible(r *Rollout, fleet []state.Device, all []*Rollout) []state.Device {
	var out []state.Device
	for _, d := range fleet {
		if d.RevokedAt != nil || d.Reported == nil || !matches(r.Spec.Selector, d.Labels) {
			continue
		}
		if _, ok := runs(d.Reported, r.Spec.Model); !ok {
			continue
		}
		claimed := false
		for _, o := range all {
			if o.ID != r.ID && Active(o.State) && o.Spec.Model == r.Spec.Model && o.Devices[d.ID] != nil {
				claimed = true
			}
		}
		if !claimed {
			out = append(out, d)
		}
	}
	sort.Slice(out, func(i, j int) bool { return rank(r.ID, out[i].ID) < rank(r.ID, out[j].ID) })
	return out
}

func rank(id, device string) uint64 {
	h := sha256.Sum256([]byte(id + "/" + device))
	return binary.BigEndian.Uint64(h[:8])
}

func matches(sel, labels map[string]string) bool {
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// runs is the version of model a device reports running.
func runs(rep *state.Reported, model string) (int64, bool) {
	for _, m := range rep.Models {
		if m.Model == model {
			return m.Version, true
		}
	}
	return 0, false
}

// waveSize is how many devices waves 0..w cover out of n.
func waveSize(waves []Wave, w, n int) int {
	size := 0
	for _, wv := range waves[:w+1] {
		s := wv.Devices
		if wv.Percent > 0 {
			s = int(math.Ceil(wv.Percent / 100 * float64(n)))
		}
		size = max(size, min(s, n))
	}
	return max(size, min(1, n))
}

// advance is one controller step of one rollout.
func (c *Controller) advance(ctx context.Context, id string, fleet []state.Device, all []*Rollout) error {
	var assign []string // devices to send the new version
	var halted bool
	var was string // the state before this step
	r, err := c.modify(ctx, id, func(r *Rollout) error {
		assign, halted, was = nil, false, r.State
		if !Active(r.State) {
			return nil
		}
		now := c.now().UTC()
		byID := map[string]state.Device{}
		for _, d := range fleet {
			byID[d.ID] = d
		}
		c.observe(r, byID)
		// Gates hold while paused too: a canary that fails is rolled back
		// whatever the operator is doing.
		if why := c.gate(r); why != "" {
			r.State, r.Reason, halted = Halted, why, true
			return nil
		}
		if r.State == Paused {
			return nil
		}
		if r.State == Baking {
			if now.Before(r.BakeUntil) {
				return nil
			}
			r.State, r.Wave, r.WaveStarted, r.BakeUntil = Running, r.Wave+1, now, time.Time{}
		}
		el := eligible(r, fleet, all)
		r.Targeted = len(el) + countNotIn(r.Devices, el)
		if r.Targeted == 0 {
			if r.Spec.AllowEmpty && now.Sub(r.WaveStarted) < time.Duration(r.Spec.WaveTimeout) {
				r.Reason = "waiting for a device that matches the selector and runs the model"
				return nil
			}
			r.State, r.Reason = Halted, "no device matches the selector and runs the model"
			return nil
		}
		if r.Reason == "waiting for a device that matches the selector and runs the model" {
			r.Reason = ""
		}
		// A wave that adds nobody (10% of a small fleet may be the
		// canary already) has nothing to bake: the next starts at once.
		for {
			want := waveSize(r.Spec.Waves, r.Wave, r.Targeted)
			for _, d := range el {
				if len(r.Devices) >= want {
					break
				}
				if r.Devices[d.ID] != nil {
					continue
				}
				from, _ := runs(d.Reported, r.Spec.Model)
				r.Devices[d.ID] = &Device{Wave: r.Wave, From: from, Phase: "pending"}
				if from == r.Spec.Version {
					r.Devices[d.ID].Phase = state.PhaseCommitted
				}
				assign = append(assign, d.ID)
			}
			done := 0
			for _, d := range r.Devices {
				if d.Phase == state.PhaseCommitted {
					done++
				}
			}
			switch {
			case done == len(r.Devices) && len(r.Devices) >= want:
				if r.Wave == len(r.Spec.Waves)-1 || len(r.Devices) == r.Targeted {
					r.State = Completed
					return nil
				}
				if r.Wave > 0 && !waveHas(r.Devices, r.Wave) {
					r.Wave, r.WaveStarted = r.Wave+1, now
					continue
				}
				r.State, r.BakeUntil = Baking, now.Add(time.Duration(r.Spec.Bake))
			case now.Sub(r.WaveStarted) > time.Duration(r.Spec.WaveTimeout):
				r.State, r.Reason, halted = Halted, fmt.Sprintf("wave %d (%s) timed out: %d of %d devices committed", r.Wave+1, r.Spec.Waves[r.Wave], done, len(r.Devices)), true
			}
			return nil
		}
	})
	if err != nil {
		return err
	}
	target := tuf.ModelTargetName(r.Spec.Model, r.Spec.Version)
	for _, d := range assign {
		want := state.DesiredModel{Version: r.Spec.Version, Target: target, Rollout: r.ID,
			ShadowSeconds: time.Duration(r.Spec.Shadow).Seconds(), Split: r.Spec.Split, MinAgreement: r.Spec.Gates.MinAgreement,
			PerfGates: r.Spec.Gates.Perf()}
		if err := c.setDesired(ctx, d, r.Spec.Model, want); err != nil {
			return err
		}
	}
	if len(assign) > 0 {
		c.log.Info("rollout wave assigned", "rollout", r.ID, "wave", r.Wave+1, "devices", len(assign), "total", len(r.Devices), "targeted", r.Targeted)
	}
	if r.State == Halted && was != Halted {
		if halted {
			c.log.Warn("rollout halted; rolling back updated devices", "rollout", r.ID, "reason", r.Reason)
			if r, err = c.revert(ctx, r); err != nil {
				return err
			}
		}
		c.entered(ctx, r)
		return nil
	}
	if r.State == Completed && was != Completed {
		c.log.Info("rollout completed", "rollout", r.ID, "devices", len(r.Devices))
		c.entered(ctx, r)
	}
	return nil
}

// waveHas reports whether any device was assigned in wave w.
func waveHas(devs map[string]*Device, w int) bool {
	for _, d := range devs {
		if d.Wave == w {
			return true
		}
	}
	return false
}

func countNotIn(devs map[string]*Device, el []state.Device) int {
	in := make(map[string]bool, len(el))
	for _, d := range el {
		in[d.ID] = true
	}
	n := 0
	for id := range devs {
		if !in[id] {
			n++
		}
	}
	return n
}

// observe copies each assigned device's update report into r.
func (c *Controller) observe(r *Rollout, fleet map[string]state.Device) {
	for id, d := range r.Devices {
		dev, ok := fleet[id]
		if !ok || dev.Reported == nil {
			continue
		}
		if u, ok := dev.Reported.Updates[r.Spec.Model]; ok && u.Rollout == r.ID && u.To == r.Spec.Version {
			d.Phase, d.Reason, d.Health, d.Shadow, d.SelfTest = u.Phase, u.Reason, u.Health, u.Shadow, u.SelfTest
		} else if v, ok := runs(dev.Reported, r.Spec.Model); ok && v == r.Spec.Version && d.Phase == "pending" {
			d.Phase = state.PhaseCommitted // already there
		}
	}
}

// gate returns why r must halt, or "".
func (c *Controller) gate(r *Rollout) string {
	g := r.Spec.Gates
	var bad []string
	for _, id := range sortedIDs(r.Devices) {
		d := r.Devices[id]
		why := ""
		rows := d.Health.Inferences + d.Health.Errors
		switch {
		case d.Phase == state.PhaseFailed || d.Phase == state.PhaseRolledBack || d.Phase == state.PhaseRollingBack:
			why = d.Phase + ": " + d.Reason
		case d.SelfTest != nil && d.SelfTest.Check(g.Perf()) != "":
			// The device refuses these itself; an agent that only
			// reports them is held to them here.
			why = "self-test: " + d.SelfTest.Check(g.Perf())
		case rows > 0 && float64(d.Health.Errors)/float64(rows) > g.MaxErrorRate:
			why = fmt.Sprintf("error rate %.3f over gates.max_error_rate %g", float64(d.Health.Errors)/float64(rows), g.MaxErrorRate)
		case d.Health.SlowerThan(g.MaxLatencyFactor):
			why = fmt.Sprintf("latency %.1f× the previous model's, over gates.max_latency_factor %g", d.Health.MeanLatencyUS/d.Health.BaselineLatencyUS, g.MaxLatencyFactor)
		case d.Shadow != nil && d.Shadow.Rows >= state.LatencyMinRows && d.Shadow.Agreement < g.MinAgreement:
			why = fmt.Sprintf("shadow agreement %.3f over %d windows, below gates.min_agreement %g", d.Shadow.Agreement, d.Shadow.Rows, g.MinAgreement)
		case d.Phase == state.PhaseCommitted && d.Health.Inferences < g.MinInferences && d.From != r.Spec.Version:
			why = fmt.Sprintf("committed after only %d inferences (gates.min_inferences %d)", d.Health.Inferences, g.MinInferences)
		}
		if why != "" {
			bad = append(bad, id+": "+why)
		}
	}
	allowed := int(math.Floor((1 - g.MinHealthy) * float64(len(r.Devices))))
	if len(bad) > allowed {
		return fmt.Sprintf("gate failed in wave %d: %s", r.Wave+1, strings.Join(bad, "; "))
	}
	return ""
}

func sortedIDs(m map[string]*Device) []string {
	ids := slices.Collect(maps.Keys(m))
	sort.Strings(ids)
	return ids
}

// revert sends every device r moved back to the version it had.
func (c *Controller) revert(ctx context.Context, r *Rollout) (*Rollout, error) {
	var back []string
	r, err := c.modify(ctx, r.ID, func(r *Rollout) error {
		back = back[:0]
		for _, id := range sortedIDs(r.Devices) {
			d := r.Devices[id]
			if d.From != r.Spec.Version && !d.Reverted {
				d.Reverted = true
				back = append(back, id)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	// All at once: each desired state is its own key, and a store that
	// syncs every write would otherwise take a fleet's worth of fsyncs in
	// turn before the last device hears of it.
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(revertParallel)
	for _, id := range back {
		d := r.Devices[id]
		g.Go(func() error {
			return c.setDesired(gctx, id, r.Spec.Model, state.DesiredModel{Version: d.From, Target: tuf.ModelTargetName(r.Spec.Model, d.From), Rollout: r.ID + "/revert"})
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return r, nil
}

// revertParallel bounds the desired-state writes a revert has in flight.
const revertParallel = 32

// setDesired changes one model of a device's desired state, bumping its
// version, and publishes it.
func (c *Controller) setDesired(ctx context.Context, device, model string, want state.DesiredModel) error {
	for {
		d := state.Desired{Device: device, Models: map[string]state.DesiredModel{}}
		var rev uint64
		e, err := c.desired.Get(ctx, device)
		switch {
		case err == nil:
			if err := json.Unmarshal(e.Value(), &d); err != nil {
				return fmt.Errorf("rollout: stored desired state of %s: %w", device, err)
			}
			rev = e.Revision()
		case !errors.Is(err, jetstream.ErrKeyNotFound):
			return fmt.Errorf("rollout: desired state of %s: %w", device, err)
		}
		if d.Models == nil {
			d.Models = map[string]state.DesiredModel{}
		}
		d.Models[model] = want
		d.Version++
		d.IssuedAt = c.now().UTC()
		data, _ := json.Marshal(d)
		if rev == 0 {
			_, err = c.desired.Create(ctx, device, data)
		} else {
			_, err = c.desired.Update(ctx, device, data, rev)
		}
		if errors.Is(err, jetstream.ErrKeyExists) {
			continue
		}
		if err != nil {
			return fmt.Errorf("rollout: store desired state of %s: %w", device, err)
		}
		c.remember(device, d.Version)
		if err := c.pub.PublishDesired(d); err != nil {
			c.log.Warn("publish desired state (the device fetches it when it next reports)", "device", device, "err", err)
		}
		return nil
	}
}

func (c *Controller) remember(device string, version int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if version > c.latest[device] {
		c.latest[device] = version
	}
}

// Behind returns the device's desired state when a report shows the
// device has seen an older version than the newest one. Reports arrive
// every few seconds from every device, so the usual answer (not behind)
// comes from memory; the bucket is read only when the device may be
// behind, and the bucket's word is final.
func (c *Controller) Behind(ctx context.Context, device string, seen int64) (state.Desired, bool, error) {
	c.mu.Lock()
	v, known := c.latest[device]
	c.mu.Unlock()
	if known && seen >= v {
		return state.Desired{}, false, nil
	}
	d, ok, err := c.Desired(ctx, device)
	if err != nil || !ok {
		if err == nil {
			c.remember(device, 0)
		}
		return state.Desired{}, false, err
	}
	c.remember(device, d.Version)
	return d, seen < d.Version, nil
}

// Desired reads a device's desired state; ok is false when it has none.
func (c *Controller) Desired(ctx context.Context, device string) (state.Desired, bool, error) {
	e, err := c.desired.Get(ctx, device)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return state.Desired{}, false, nil
	}
	if err != nil {
		return state.Desired{}, false, fmt.Errorf("rollout: desired state of %s: %w", device, err)
	}
	var d state.Desired
	if err := json.Unmarshal(e.Value(), &d); err != nil {
		return state.Desired{}, false, fmt.Errorf("rollout: stored desired state of %s: %w", device, err)
	}
	return d, true, nil
}
