package console

import (
	"testing"
	"time"

	"github.com/outpost-edge/outpost/hub/modelstore"
	"github.com/outpost-edge/outpost/hub/rollout"
	"github.com/outpost-edge/outpost/sync/state"
)

func TestRolloutFormSpec(t *testing.T) {
	f := DefaultRolloutForm()
	f.Model, f.Version, f.Selector, f.MinInferences = "bearing", "3", "site=lab, line=1", "20"
	s, err := f.Spec()
	if err != nil {
		t.Fatal(err)
	}
	if s.Model != "bearing" || s.Version != 3 || s.Selector["site"] != "lab" || s.Selector["line"] != "1" || len(s.Waves) != 4 ||
		s.Bake != rollout.Duration(time.Minute) || s.Gates.MaxLatencyFactor != 3 || s.Gates.MinInferences != 20 {
		t.Fatalf("spec %+v", s)
	}
	for _, bad := range []RolloutForm{{Model: "m", Version: "x"}, {Model: "m", Version: "1", Selector: "site"}, {Model: "m", Version: "1", Waves: "0"},
		{Model: "m", Version: "1", Bake: "soon"}, {Model: "m", Version: "1", MaxErrorRate: "-1"}, {Version: "1"}} {
		if _, err := bad.Spec(); err == nil {
			t.Errorf("%+v: no error", bad)
		}
	}
}

func TestPreviewRollout(t *testing.T) {
	rep := &state.Reported{Models: []state.ModelStatus{{Model: "bearing", Version: 1}}}
	revoked := time.Now()
	devs := []state.Device{
		{ID: "a", Labels: map[string]string{"site": "lab"}, Reported: rep},
		{ID: "b", Labels: map[string]string{"site": "lab"}, Reported: rep},
		{ID: "c", Labels: map[string]string{"site": "lab"}},
		{ID: "d", Labels: map[string]string{"site": "lab"}, Reported: rep, RevokedAt: &revoked},
		{ID: "e", Labels: map[string]string{"site": "lab"}, Reported: &state.Reported{}},
		{ID: "f", Labels: map[string]string{"site": "far"}, Reported: rep},
		{ID: "g", Labels: map[string]string{"site": "lab"}, Reported: rep},
	}
	held := &rollout.Rollout{ID: "r1", State: rollout.Running, Spec: rollout.Spec{Model: "bearing"}, Devices: map[string]*rollout.Device{"g": {}}}
	p := PreviewRollout(rollout.Spec{Model: "bearing", Selector: map[string]string{"site": "lab"}, Waves: []rollout.Wave{{Devices: 1}, {Percent: 100}}}, devs, []*rollout.Rollout{held})
	if p.Selected != 2 || p.First[0].ID != "a" || p.Silent != 1 || p.Revoked != 1 || p.NotRunning != 1 || p.Unmatched != 1 || p.Claimed["r1"] != 1 {
		t.Fatalf("preview %+v", p)
	}
	if len(p.Waves) != 2 || p.Waves[1] != "wave 2 (100%): 2 devices in all" {
		t.Fatalf("waves %q", p.Waves)
	}
}

func TestLineage(t *testing.T) {
	roots := Lineage([]modelstore.Version{{Version: 3, Parent: 1}, {Version: 1}, {Version: 2, Parent: 1}, {Version: 4, Parent: 2}, {Version: 9, Parent: 7}})
	if len(roots) != 2 || roots[0].Version.Version != 1 || len(roots[0].Children) != 2 || roots[0].Children[0].Version.Version != 2 ||
		roots[0].Children[0].Children[0].Version.Version != 4 || roots[1].Version.Version != 9 {
		t.Fatalf("lineage %+v", roots)
	}
}
