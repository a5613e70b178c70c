package rollout

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock is the controller's clock, moved by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// On 5 devices, waves 1,10%,50%,100% are 1, 1, 3 and 5 devices: the
// second wave adds nobody, so it has nothing to bake, and one bake after
// the canary the third wave is already assigned.
func TestWaveThatAddsNobodySkipsItsBake(t *testing.T) {
	f := newFleet(5, func(int) map[string]string { return nil })
	c, ctx := newController(t, f)
	clock := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	c.now = clock.now
	s := spec("1,10%,50%,100%")
	s.Bake = Duration(time.Hour)
	r, err := c.Start(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	tick := func() *Rollout {
		t.Helper()
		if err := c.Tick(ctx); err != nil {
			t.Fatal(err)
		}
		r, err := c.Get(ctx, r.ID)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	tick() // the canary is sent v2 (the fake commits it at once)
	if r = tick(); r.State != Baking || r.Wave != 0 || len(r.Devices) != 1 {
		t.Fatalf("after the canary: %s wave %d, %d devices; want baking wave 1 with 1 device", r.State, r.Wave+1, len(r.Devices))
	}
	clock.add(time.Hour + time.Second)
	r = tick()
	if r.Wave != 2 || len(r.Devices) != 3 {
		t.Fatalf("one bake after the canary: %s wave %d, %d devices; want wave 3 (50%%) with 3 devices: wave 2 (10%%) added nobody and must not bake", r.State, r.Wave+1, len(r.Devices))
	}
	r = tick()
	clock.add(time.Hour + time.Second)
	r = tick()
	r = tick()
	if r.State != Completed || len(r.Devices) != 5 {
		t.Fatalf("two bakes after the canary: %s wave %d, %d devices; want completed with 5", r.State, r.Wave+1, len(r.Devices))
	}
}

// Rollback sends every device the rollout moved back in one step, with no
// wave and no bake, whether the rollout is still going (here baking for an
// hour after its first waves) or completed; it ends rolled_back, told to
// OnState, with a reason that does not repeat itself.
func TestRollbackSendsEveryMovedDeviceBackAtOnce(t *testing.T) {
	for _, completed := range []bool{false, true} {
		f := newFleet(10, func(int) map[string]string { return map[string]string{"site": "a"} })
		c, ctx := newController(t, f)
		var states []string
		c.OnState = func(_ context.Context, r *Rollout) { states = append(states, r.State) }
		s := spec("2,50%,100%")
		s.Selector = map[string]string{"site": "a"}
		if !completed {
			s.Bake = Duration(time.Hour)
		}
		r, err := c.Start(ctx, s)
		if err != nil {
			t.Fatal(err)
		}
		r = tickUntil(t, c, ctx, r.ID, 20, nil)
		if completed && r.State != Completed {
			t.Fatalf("rollout %s (%s), want completed", r.State, r.Reason)
		}
		if !completed && (r.State != Baking || len(r.Devices) != 2) {
			t.Fatalf("rollout %s with %d devices, want baking after the first wave of 2", r.State, len(r.Devices))
		}
		moved := map[string]bool{}
		for id := range r.Devices {
			if f.version(id) != 2 {
				t.Fatalf("%s runs v%d before the rollback, want v2", id, f.version(id))
			}
			moved[id] = true
		}
		sent := len(f.sent)
		r, err = c.Rollback(ctx, r.ID, "by alice")
		if err != nil {
			t.Fatal(err)
		}
		// No tick: the rollback itself sent every desired state.
		for id := range f.devs {
			if v := f.version(id); v != 1 {
				t.Errorf("completed=%v: %s runs v%d right after the rollback, want v1", completed, id, v)
			}
		}
		if got := len(f.sent) - sent; got != len(moved) {
			t.Errorf("completed=%v: %d desired states sent, want %d (one per moved device)", completed, got, len(moved))
		}
		if r.State != RolledBack || r.Reason != "rolled back by alice" {
			t.Errorf("completed=%v: state %s, reason %q; want rolled_back, \"rolled back by alice\"", completed, r.State, r.Reason)
		}
		for id, d := range r.Devices {
			if !d.Reverted {
				t.Errorf("completed=%v: %s not marked reverted", completed, id)
			}
		}
		if got := strings.Join(states, ","); !strings.HasPrefix(got, "running,") || !strings.HasSuffix(got, ","+RolledBack) {
			t.Errorf("completed=%v: OnState saw %s, want running first and rolled_back last", completed, got)
		}
		// Further ticks change nothing, and it cannot be rolled back twice.
		tickUntil(t, c, ctx, r.ID, 2, nil)
		if len(f.sent)-sent != len(moved) {
			t.Errorf("completed=%v: ticks after the rollback sent more desired states", completed)
		}
		if _, err := c.Rollback(ctx, r.ID, "by alice"); !errors.Is(err, ErrInvalid) {
			t.Errorf("completed=%v: second rollback: %v, want ErrInvalid", completed, err)
		}
	}
}

// A conflict names the selector as labels, not as a Go map.
func TestConflictMessageNamesTheSelector(t *testing.T) {
	f := newFleet(2, func(int) map[string]string { return map[string]string{"site": "a", "hw": "pi"} })
	c, ctx := newController(t, f)
	s := spec("1,100%")
	s.Selector = map[string]string{"site": "a", "hw": "pi"}
	if _, err := c.Start(ctx, s); err != nil {
		t.Fatal(err)
	}
	_, err := c.Start(ctx, s)
	if !errors.Is(err, ErrConflict) || strings.Contains(err.Error(), "map[") || !strings.Contains(err.Error(), "hw=pi,site=a") {
		t.Fatalf("conflict: %v; want ErrConflict naming hw=pi,site=a", err)
	}
}
