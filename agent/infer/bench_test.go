package infer

import (
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	ortgo "github.com/yalue/onnxruntime_go"

	"github.com/outpost-edge/outpost/models/manifest"
	"github.com/outpost-edge/outpost/models/onnx"
	"github.com/outpost-edge/outpost/models/ort"
	"github.com/outpost-edge/outpost/test/testenv"
)

// BenchmarkInferenceOverhead: the agent's model call against a bare
// onnxruntime_go session (preallocated tensors, the leanest use of the
// library) on the same 16-feature model and a batch of 32 windows. It
// reports the agent's overhead in percent; the target is ≤ 5%.
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

	// Interleave the two in rounds so drift on a shared machine hits both.
	const rounds = 10
	per := max(b.N/rounds, 1)
	var tBare, tAgent float64
	b.ResetTimer()
	for r := 0; r < rounds; r++ {
		start := time.Now()
		for i := 0; i < per; i++ {
			copy(bare.GetData(), x)
			if err := bs.Run(); err != nil {
				b.Fatal(err)
			}
		}
		tBare += time.Since(start).Seconds()
		start = time.Now()
		for i := 0; i < per; i++ {
			if _, _, err := m.Infer(x); err != nil {
				b.Fatal(err)
			}
		}
		tAgent += time.Since(start).Seconds()
	}
	b.ReportMetric(100*(tAgent-tBare)/tBare, "overhead_%")
	b.ReportMetric(tBare/float64(per*rounds)*1e9, "bare-ns/call")
	b.ReportMetric(tAgent/float64(per*rounds)*1e9, "agent-ns/call")
}
