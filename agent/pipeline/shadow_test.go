package pipeline

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/agent/infer"
	"github.com/outpost-edge/outpost/models/goengine"
	"github.com/outpost-edge/outpost/models/manifest"
	"github.com/outpost-edge/outpost/models/onnx"
)

// writeThreshold writes version v of a model flagging windows whose mean v
// is over cut: score = sigmoid(10·(mean − cut)).
func writeThreshold(t *testing.T, dir string, v int64, cut float32) {
	t.Helper()
	model, err := onnx.Logistic([][]float32{{10, 0}}, []float32{-10 * cut})
	if err != nil {
		t.Fatal(err)
	}
	eng, _ := goengine.Load(model)
	out, _ := eng.Run([]float32{0, 0}, 2)
	m := &manifest.Manifest{Name: "overheat", Version: v, Task: "anomaly",
		Features: []manifest.Feature{{Field: "v", Agg: "mean", Std: 1}, {Field: "v", Agg: "max", Std: 1}},
		Outputs:  manifest.Outputs{Threshold: 0.5},
		Golden:   []manifest.Golden{{Input: []float32{0, 0}, Output: out, Tolerance: 1e-6}}}
	if err := manifest.Write(dir, m, model); err != nil {
		t.Fatal(err)
	}
}

// TestShadowComparesAndSplitServes: a candidate in shadow sees every
// window and is compared, not recorded; with a split it serves its share
// of the windows, recorded under its own version.
func TestShadowComparesAndSplitServes(t *testing.T) {
	dir := t.TempDir()
	writeThreshold(t, filepath.Join(dir, "active"), 1, 50)
	writeThreshold(t, filepath.Join(dir, "cand"), 2, 80) // disagrees for means in (50, 80]
	cand, err := infer.LoadSlot(infer.Config{Dir: dir, Engine: "go"}, "cand", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer cand.Close()
	input := filepath.Join(t.TempDir(), "in.jsonl")
	os.WriteFile(input, nil, 0o644)
	cfg := fileConfig(input)
	cfg.Model = &infer.Config{Dir: dir, Engine: "go"}
	ob := &memOutbox{}
	p, err := New(context.Background(), cfg, ob, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go p.Run(ctx)
	base := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	// write appends one reading per key (v = key number) in window w, and
	// one reading in window w+1 that closes it.
	write := func(w int) {
		f, _ := os.OpenFile(input, os.O_APPEND|os.O_WRONLY, 0)
		defer f.Close()
		for k := range 100 {
			fmt.Fprintf(f, `{"sensor":"s%d","ts":"%s","v":%d}`+"\n", k, base.Add(time.Duration(w)*10*time.Second).Format(time.RFC3339), k)
		}
		fmt.Fprintf(f, `{"sensor":"s0","ts":"%s","v":0}`+"\n", base.Add(time.Duration(w+1)*10*time.Second+time.Second).Format(time.RFC3339))
	}
	waitInferences := func(n int) []map[string]any {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if inf := ob.byStream("inferences"); len(inf) >= n {
				return inf
			}
		}
		t.Fatalf("fewer than %d inferences", n)
		return nil
	}

	if err := p.SetShadow(ctx, cand, 0); err != nil {
		t.Fatal(err)
	}
	write(0)
	inf := waitInferences(100)
	for _, r := range inf {
		if r["version"] != 1.0 {
			t.Fatalf("a shadow output was recorded: %v", r)
		}
	}
	st := p.ShadowHealth()
	// Means 0..99: the two agree below 50 and above 80 (51..80 differ).
	if st.Rows != 100 || st.Agree != 70 || st.ActiveRows != 100 {
		t.Fatalf("shadow stats %+v, want 100 rows, 70 agreeing", st)
	}

	if err := p.SetShadow(ctx, cand, 0.5); err != nil {
		t.Fatal(err)
	}
	write(1)
	inf = waitInferences(200)
	byVersion := map[float64]int{}
	for _, r := range inf[100:] {
		byVersion[r["version"].(float64)]++
	}
	if byVersion[1]+byVersion[2] != 100 || byVersion[2] < 30 || byVersion[2] > 70 {
		t.Fatalf("split 0.5 served %v windows by version", byVersion)
	}
	if st2 := p.ShadowHealth(); st2.Rows-st.Rows != int64(byVersion[2]) {
		t.Fatalf("the candidate ran %d rows, served %d", st2.Rows-st.Rows, byVersion[2])
	}
	if err := p.SetShadow(ctx, nil, 0); err != nil {
		t.Fatal(err)
	}
}
