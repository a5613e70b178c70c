package infer

import (
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"
	"time"

	ortgo "github.com/yalue/onnxruntime_go"

	"github.com/outpost-edge/outpost/models/manifest"
	"github.com/outpost-edge/outpost/models/onnx"
	"github.com/outpost-edge/outpost/models/ort"
	"github.com/outpost-edge/outpost/test/testenv"
)

// BenchmarkInferenceOverhead: the agent's model call against bare
// onnxruntime_go sessions (preallocated tensors, run plainly or through an
// IoBinding, the same call the agent makes) on the same 16-feature model
// and a batch of 32 windows. It reports the agent's overhead in percent
// against the IoBinding session (and against the plain run), each the
// median over interleaved rounds; the target is ≤ 5%.
func BenchmarkInferenceOverhead(b *testing.B) {
	if err := ort.Init(testenv.ORTLibrary(b)); err != nil {
		b.Fatal(err)
	}
	const features, batch = 16, 32
	rng := rand.New(rand.NewPCG(1, 1))
	w := make([][]float32, 4)
	for i := range w {
		w[i] = make([]float32, features)
		for j := range w[i] {
			w[i][j] = rng.Float32() - 0.5
		}
	}
	model, err := onnx.Logistic(w, []float32{0, 0, 0, 0})
	if err != nil {
		b.Fatal(err)
	}
	feats := make([]manifest.Feature, features)
	for i := range feats {
		feats[i] = manifest.Feature{Field: "f", Agg: "mean", Std: 1}
	}
	x := make([]float32, features*batch)
	for i := range x {
		x[i] = rng.Float32()
	}

	bare, err := ortgo.NewTensor(ortgo.NewShape(batch, features), append([]float32(nil), x...))
	if err != nil {
		b.Fatal(err)
	}
	defer bare.Destroy()
	bareOut, _ := ortgo.NewEmptyTensor[float32](ortgo.NewShape(batch, 4))
	defer bareOut.Destroy()
	bs, err := ortgo.NewAdvancedSessionWithONNXData(model, []string{"features"}, []string{"scores"},
		[]ortgo.Value{bare}, []ortgo.Value{bareOut}, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer bs.Destroy()

	// The other bare use: an IoBinding over the same tensors, which the
	// agent's session uses; the overhead is reported against the faster.
	ds, err := ortgo.NewDynamicAdvancedSessionWithONNXData(model, []string{"features"}, []string{"scores"}, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer ds.Destroy()
	bind, err := ds.CreateIoBinding()
	if err != nil {
		b.Fatal(err)
	}
	defer bind.Destroy()
	if err := bind.BindInput("features", bare); err != nil {
		b.Fatal(err)
	}
	if err := bind.BindOutput("scores", bareOut); err != nil {
		b.Fatal(err)
	}

	dir := filepath.Join(b.TempDir(), "m")
	golden := make([]float32, features)
	s0, _ := ort.NewSession(model)
	gout, _ := s0.Run(golden, features)
	s0.Close()
	if err := manifest.Write(dir, &manifest.Manifest{Name: "bench", Version: 1, Task: "anomaly", Features: feats,
		Golden: []manifest.Golden{{Input: golden, Output: gout, Tolerance: 1e-6}}}, model); err != nil {
		b.Fatal(err)
	}
	m, err := LoadSlot(Config{Dir: dir}, Active, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()

	// Interleave the two in short rounds so drift on a shared machine
	// hits both, and report the median of the per-round ratios: one
	// round disturbed by a neighbour does not decide the result.
	const rounds = 40
	per := max(b.N/rounds, 1)
	var tBare, tBind, tAgent float64
	var ratios, ratiosRun []float64
	timed := func(f func() error) float64 {
		start := time.Now()
		for i := 0; i < per; i++ {
			if err := f(); err != nil {
				b.Fatal(err)
			}
		}
		return time.Since(start).Seconds()
	}
	b.ResetTimer()
	for r := 0; r < rounds; r++ {
		// Rotate the order: whoever runs first in a round is not favoured.
		var rb, ri, ra float64
		steps := []func(){
			func() { rb = timed(func() error { copy(bare.GetData(), x); return bs.Run() }) },
			func() { ri = timed(func() error { copy(bare.GetData(), x); return ds.RunWithBinding(bind) }) },
			func() { ra = timed(func() error { _, _, err := m.Infer(x); return err }) },
		}
		for k := range steps {
			steps[(r+k)%len(steps)]()
		}
		tBare, tBind, tAgent = tBare+rb, tBind+ri, tAgent+ra
		ratios, ratiosRun = append(ratios, ra/ri), append(ratiosRun, ra/rb)
	}
	slices.Sort(ratios)
	slices.Sort(ratiosRun)
	calls := float64(per * rounds)
	b.ReportMetric(100*(ratios[len(ratios)/2]-1), "overhead_%")
	b.ReportMetric(100*(ratiosRun[len(ratiosRun)/2]-1), "overhead_vs_run_%")
	b.ReportMetric(tBare/calls*1e9, "bare-run-ns/call")
	b.ReportMetric(tBind/calls*1e9, "bare-binding-ns/call")
	b.ReportMetric(tAgent/calls*1e9, "agent-ns/call")
}
