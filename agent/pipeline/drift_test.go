package pipeline

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDriftRecordsFlagAShift: 600 one-second windows of readings around 10
// (200 for the reference, 400 compared: steady), then 200 around 11.5. The
// steady runs report no drift; the shifted one reports v.mean and v.max
// drifted, as a `drift` record and in the counters.
func TestDriftRecordsFlagAShift(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 2))
	base := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	var lines []string
	for w := range 801 {
		level := 10.0
		if w >= 600 {
			level = 11.5
		}
		for k := range 5 {
			ts := base.Add(time.Duration(w)*time.Second + time.Duration(k)*150*time.Millisecond)
			lines = append(lines, fmt.Sprintf(`{"sensor":"s1","ts":"%s","v":%.3f}`, ts.Format(time.RFC3339Nano), level+rng.NormFloat64()))
		}
	}
	path := filepath.Join(t.TempDir(), "in.jsonl")
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := fileConfig(path)
	cfg.Window = WindowConfig{Kind: "tumbling", Size: time.Second}
	cfg.Aggregations = []string{"mean", "max"}
	cfg.Drift = &DriftConfig{Windows: 200}
	ob := &memOutbox{}
	p := runUntil(t, cfg, ob, func() bool { return len(ob.byStream("drift")) >= 3 }, 0)
	recs := ob.byStream("drift")
	if len(recs) != 3 {
		t.Fatalf("%d drift records, want 3 (two steady runs, one shifted): %v", len(recs), recs)
	}
	for i, r := range recs {
		drifted, _ := r["drifted"].([]any)
		feats := r["features"].(map[string]any)
		mean := feats["v.mean"].(map[string]any)
		if i < 2 && len(drifted) != 0 {
			t.Fatalf("steady run %d flagged %v: %v", i, drifted, feats)
		}
		if i == 2 && (len(drifted) != 2 || mean["psi"].(float64) < 0.5 || mean["ks_p"].(float64) > 1e-3) {
			t.Fatalf("shifted run: drifted %v, v.mean %v", drifted, mean)
		}
	}
	if p.Stats.DriftChecks.Load() != 3 || p.Stats.DriftDetected.Load() != 1 {
		t.Fatalf("checks %d, detected %d", p.Stats.DriftChecks.Load(), p.Stats.DriftDetected.Load())
	}
}
