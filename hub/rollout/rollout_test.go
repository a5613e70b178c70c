package rollout

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-edge/outpost/sync/state"
	"github.com/outpost-edge/outpost/test/natstest"
)

// fakeFleet plays devices: each takes its desired version and reports the
// phase outcome decides (committed unless told otherwise).
type fakeFleet struct {
	mu      sync.Mutex
	devs    map[string]*state.Device
	desired map[string]state.Desired
	outcome func(device string, version int64) string
	// measure, when set, is what each device measures of a candidate at
	// self-test; like an agent, the fake refuses one over the desired
	// state's gates (unless lax: an agent that only reports).
	measure func(device string) state.SelfTest
	lax     bool
	sent    []state.Desired // every desired state published, in order
}

func newFleet(n int, labels func(i int) map[string]string) *fakeFleet {
	f := &fakeFleet{devs: map[string]*state.Device{}, desired: map[string]state.Desired{}}
	for i := range n {
		id := fmt.Sprintf("d%02d", i)
		f.devs[id] = &state.Device{ID: id, Labels: labels(i), Reported: &state.Reported{Device: id,
			Models: []state.ModelStatus{{Pipeline: "p", Model: "m", Version: 1}}, Updates: map[string]state.Update{}}}
	}
	return f
}

func (f *fakeFleet) Devices() []state.Device {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []state.Device
	for _, d := range f.devs {
		c := *d
		r := *d.Reported
		r.Models = append([]state.ModelStatus(nil), d.Reported.Models...)
		r.Updates = map[string]state.Update{}
		for k, v := range d.Reported.Updates {
			r.Updates[k] = v
		}
		c.Reported = &r
		out = append(out, c)
	}
	return out
}

func (f *fakeFleet) PublishDesired(d state.Desired) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.desired[d.Device] = d
	f.sent = append(f.sent, d)
	dev := f.devs[d.Device]
	want := d.Models["m"]
	from := dev.Reported.Models[0].Version
	if from == want.Version {
		return nil
	}
	phase := state.PhaseCommitted
	if f.outcome != nil {
		phase = f.outcome(d.Device, want.Version)
	}
	u := state.Update{Model: "m", From: from, To: want.Version, Rollout: want.Rollout, Phase: phase,
		Health: state.Health{Inferences: 100}}
	if f.measure != nil {
		st := f.measure(d.Device)
		u.SelfTest = &st
		if why := st.Check(want.PerfGates); why != "" && !f.lax {
			u.Phase, u.Reason, u.Health = state.PhaseFailed, "self-test: "+why, state.Health{}
			phase = u.Phase
		}
	}
	dev.Reported.Updates["m"] = u
	if phase == state.PhaseCommitted {
		dev.Reported.Models[0].Version = want.Version
	}
	return nil
}

func (f *fakeFleet) version(id string) int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.devs[id].Reported.Models[0].Version
}

func newController(t *testing.T, f *fakeFleet) (*Controller, context.Context) {
	t.Helper()
	c, _ := openController(t, f, natstest.JetStream(t))
	return c, context.Background()
}

func openController(t *testing.T, f *fakeFleet, js jetstream.JetStream) (*Controller, jetstream.JetStream) {
	t.Helper()
	c, err := Open(context.Background(), js, 1, f, f, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return c, js
}

func spec(waves string) Spec {
	ws, _ := ParseWaves(waves)
	return Spec{Model: "m", Version: 2, Waves: ws, Bake: Duration(time.Millisecond)}
}

// tickUntil ticks until the rollout leaves the active states (or n ticks).
func tickUntil(t *testing.T, c *Controller, ctx context.Context, id string, n int, each func(*Rollout)) *Rollout {
	t.Helper()
	for range n {
		if err := c.Tick(ctx); err != nil {
			t.Fatal(err)
		}
		r, err := c.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if each != nil {
			each(r)
		}
		if !Active(r.State) {
			return r
		}
		time.Sleep(2 * time.Millisecond) // past the bake
	}
	r, _ := c.Get(ctx, id)
	return r
}

func TestWavesGrowToTheWholeSelectionAndComplete(t *testing.T) {
	f := newFleet(20, func(i int) map[string]string {
		if i%2 == 0 {
			return map[string]string{"site": "north"}
		}
		return map[string]string{"site": "south"}
	})
	c, ctx := newController(t, f)
	s := spec("1,20%,50%,100%")
	s.Selector = map[string]string{"site": "north"}
	r, err := c.Start(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	var sizes []int
	r = tickUntil(t, c, ctx, r.ID, 100, func(r *Rollout) {
		if len(sizes) == 0 || sizes[len(sizes)-1] != len(r.Devices) {
			sizes = append(sizes, len(r.Devices))
		}
	})
	if r.State != Completed {
		t.Fatalf("state %s (%s)", r.State, r.Reason)
	}
	if fmt.Sprint(sizes) != "[1 2 5 10]" {
		t.Fatalf("wave sizes %v, want [1 2 5 10] (10 north devices)", sizes)
	}
	for id, d := range f.devs {
		want := int64(1)
		if d.Labels["site"] == "north" {
			want = 2
		}
		if v := f.version(id); v != want {
			t.Fatalf("%s (%s) runs v%d, want v%d", id, d.Labels["site"], v, want)
		}
	}
}

func TestFailedCanaryHaltsAndRollsBack(t *testing.T) {
	f := newFleet(10, func(int) map[string]string { return nil })
	c, ctx := newController(t, f)
	// The canary commits but then reports an error rate over the gate.
	f.outcome = func(string, int64) string { return state.PhaseCommitted }
	r, err := c.Start(ctx, spec("1,100%"))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	var canary string
	for id, d := range f.devs {
		if u, ok := d.Reported.Updates["m"]; ok && u.To == 2 {
			canary = id
			u.Health.Errors = 10 // 10 of 110 rows
			d.Reported.Updates["m"] = u
		}
	}
	f.mu.Unlock()
	r = tickUntil(t, c, ctx, r.ID, 20, nil)
	if r.State != Halted || !strings.Contains(r.Reason, canary+": error rate") {
		t.Fatalf("state %s (%s), want halted on %s's error rate", r.State, r.Reason, canary)
	}
	if len(r.Devices) != 1 || !r.Devices[canary].Reverted {
		t.Fatalf("devices %+v, want only the canary, reverted", r.Devices)
	}
	if v := f.version(canary); v != 1 {
		t.Fatalf("canary runs v%d after the halt, want v1", v)
	}
	d, ok, err := c.Desired(ctx, canary)
	if err != nil || !ok || d.Models["m"].Version != 1 || d.Version != 2 {
		t.Fatalf("canary desired %+v (ok %v, err %v): want v1 at desired version 2", d, ok, err)
	}
}

func TestPauseResumeAbortAndOneRolloutPerModelAndLabels(t *testing.T) {
	f := newFleet(10, func(int) map[string]string { return map[string]string{"site": "a"} })
	c, js := openController(t, f, natstest.JetStream(t))
	ctx := context.Background()
	s := spec("1,100%")
	s.Selector = map[string]string{"site": "a"}
	s.Bake = Duration(time.Hour)
	r, err := c.Start(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Start(ctx, s); !errors.Is(err, ErrConflict) {
		t.Fatalf("second rollout of m on site=a: err = %v, want ErrConflict", err)
	}
	tickUntil(t, c, ctx, r.ID, 3, nil) // canary done, baking for an hour
	if r, _ = c.Get(ctx, r.ID); r.State != Baking {
		t.Fatalf("state %s, want baking", r.State)
	}
	if r, err = c.Pause(ctx, r.ID); err != nil || r.State != Paused {
		t.Fatalf("pause: %v %s", err, r.State)
	}
	if _, err := c.Pause(ctx, r.ID); !errors.Is(err, ErrInvalid) {
		t.Fatalf("pausing twice: %v", err)
	}
	if r, err = c.Resume(ctx, r.ID); err != nil || r.State != Baking {
		t.Fatalf("resume: %v, state %v", err, r)
	}
	if r, err = c.Abort(ctx, r.ID, "test"); err != nil || r.State != Aborted {
		t.Fatalf("abort: %v, state %v", err, r)
	}
	for id, d := range r.Devices {
		if !d.Reverted || f.version(id) != 1 {
			t.Fatalf("%s after abort: %+v, runs v%d", id, d, f.version(id))
		}
	}
	// With the first one over, a new rollout of the same model may start,
	// and it is still there for a controller opened anew (a hub restart).
	r2, err := c.Start(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	c2, _ := openController(t, f, js)
	list, err := c2.List(ctx)
	if err != nil || len(list) != 2 || list[0].ID != r2.ID || list[1].State != Aborted {
		t.Fatalf("after reopening: %v %+v", err, list)
	}
}

func TestParseWaves(t *testing.T) {
	ws, err := ParseWaves("1, 10%,50%,100%")
	if err != nil || fmt.Sprint(ws) != "[1 10% 50% 100%]" {
		t.Fatalf("%v %v", ws, err)
	}
	for _, bad := range []string{"0", "x", "150%", "1,,2"} {
		if _, err := ParseWaves(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("%q: err = %v", bad, err)
		}
	}
	if got := waveSize([]Wave{{Devices: 1}, {Percent: 10}}, 1, 5); got != 1 {
		t.Errorf("10%% of 5 after a canary of 1: %d devices, want 1", got)
	}
}

func TestShadowAgreementGate(t *testing.T) {
	f := newFleet(4, func(int) map[string]string { return nil })
	c, ctx := newController(t, f)
	// Devices stay in shadow, agreeing on 80% of 50 windows.
	f.outcome = func(string, int64) string { return state.PhaseShadow }
	s := spec("1,100%")
	s.Shadow, s.Split, s.Gates.MinAgreement = Duration(time.Minute), 0.1, 0.9
	r, err := c.Start(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	for id, d := range f.desired {
		if m := d.Models["m"]; m.ShadowSeconds != 60 || m.Split != 0.1 || m.MinAgreement != 0.9 {
			t.Fatalf("%s desired %+v: the shadow settings did not travel", id, m)
		}
		u := f.devs[id].Reported.Updates["m"]
		u.Shadow = &state.Shadow{Rows: 50, Agreement: 0.8}
		f.devs[id].Reported.Updates["m"] = u
	}
	f.mu.Unlock()
	r = tickUntil(t, c, ctx, r.ID, 10, nil)
	if r.State != Halted || !strings.Contains(r.Reason, "shadow agreement 0.800") {
		t.Fatalf("state %s (%s), want halted on shadow agreement", r.State, r.Reason)
	}
	if _, err := c.Start(ctx, Spec{Model: "m", Version: 3, Split: 0.5}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("a split without a shadow phase: err = %v", err)
	}
}
