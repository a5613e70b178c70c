package update

import (
	"path"
	"path/filepath"
	"strings"
	"testing"

	"github.com/outpost-edge/outpost/agent/infer"
	"github.com/outpost-edge/outpost/models/manifest"
	"github.com/outpost-edge/outpost/sync/state"
	"github.com/outpost-edge/outpost/sync/tuf"
)

// A download that trickles (a byte every 100 ms: never stalled, done in
// minutes) holds up only its own model. Another model's update goes on
// through probation to its commit meanwhile, and a rollback order for the
// slow one ends its download at once. On a machine that downloads in its
// own loop, both wait for the trickle.
func TestSlowDownloadHoldsUpNothingElse(t *testing.T) {
	w := newWorld(t)
	other := t.TempDir()
	mj, model := pkgOf(t, "n", 1, 0.5, false)
	if _, err := manifest.Unpack(mustPack(t, mj, model), filepath.Join(other, infer.Active)); err != nil {
		t.Fatal(err)
	}
	slow := w.publish(t, 2, 0.7, false)
	fast := w.publishOf(t, "n", 2, 0.7, false)
	w.slow.Store("/" + path.Dir(slow) + "/") // the target file is <sha256>.2.tar
	rs, m, _ := w.startRunners(t, testConfig(), nil, map[string]string{"p": w.modelDir, "q": other})

	m.Desire(state.Desired{Device: "d1", Version: 1, Models: map[string]state.DesiredModel{
		"m": {Version: 2, Target: slow, Rollout: "r1"},
		"n": {Version: 2, Target: fast, Rollout: "r2"},
	}})
	if u := waitPhaseOf(t, m, "n"); u.Phase != state.PhaseCommitted {
		t.Fatalf("the other model's update ended %s (%s), want committed", u.Phase, u.Reason)
	}
	if v := rs["q"].version(); v != 2 {
		t.Fatalf("the other pipeline runs version %d, want 2", v)
	}
	_, ups, _ := m.Report()
	if ups["m"].Phase != state.PhaseDownloading {
		t.Fatalf("the slow model is %s, want still downloading", ups["m"].Phase)
	}

	// The fleet manager rolls the slow model's rollout back: version 1,
	// which the device runs, so the download is no longer wanted.
	m.Desire(state.Desired{Device: "d1", Version: 2, Models: map[string]state.DesiredModel{
		"m": {Version: 1, Target: tuf.ModelTargetName("m", 1), Rollout: "r1-rollback"},
		"n": {Version: 2, Target: fast, Rollout: "r2"},
	}})
	u := waitPhase(t, m)
	if u.Phase != state.PhaseFailed || !strings.Contains(u.Reason, "superseded") {
		t.Fatalf("the slow download ended %s (%q), want failed: superseded", u.Phase, u.Reason)
	}
	if v := rs["p"].version(); v != 1 {
		t.Fatalf("the slow model's pipeline runs version %d, want 1", v)
	}
}
