package rollout

import (
	"errors"
	"strings"
	"testing"

	"github.com/outpost-edge/outpost/sync/state"
)

// A selector that matches no device is refused at start, with the option
// that allows it; allowed, the rollout waits for a device that matches
// and then rolls out to it.
func TestEmptySelectionIsRefusedUnlessAllowed(t *testing.T) {
	f := newFleet(3, func(int) map[string]string { return map[string]string{"site": "a"} })
	c, ctx := newController(t, f)
	s := spec("1,100%")
	s.Selector = map[string]string{"site": "b"}
	if _, err := c.Start(ctx, s); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "site=b") || !strings.Contains(err.Error(), "allow_empty") {
		t.Fatalf("start over nobody: %v, want a refusal naming the selector and allow_empty", err)
	}
	s.AllowEmpty = true
	r, err := c.Start(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := c.Tick(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if r, _ = c.Get(ctx, r.ID); r.State != Running || len(r.Devices) != 0 {
		t.Fatalf("allowed over nobody: %s with %d devices (%s), want running and waiting", r.State, len(r.Devices), r.Reason)
	}
	f.mu.Lock()
	f.devs["late"] = &state.Device{ID: "late", Labels: map[string]string{"site": "b"}, Reported: &state.Reported{Device: "late",
		Models: []state.ModelStatus{{Pipeline: "p", Model: "m", Version: 1}}, Updates: map[string]state.Update{}}}
	f.mu.Unlock()
	if r = tickUntil(t, c, ctx, r.ID, 100, nil); r.State != Completed || f.version("late") != 2 || f.version("d00") != 1 {
		t.Fatalf("after a device matched: %s (%s), late on v%d, d00 on v%d; want completed, late on v2 only", r.State, r.Reason, f.version("late"), f.version("d00"))
	}
}
