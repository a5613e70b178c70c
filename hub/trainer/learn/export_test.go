package learn

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/outpost-edge/outpost/models/goengine"
)

// TestExportMatchesTheLearner: the exported ONNX graph, run by the
// pure-Go engine the agent uses, gives what the learner predicts.
func TestExportMatchesTheLearner(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 5))
	for _, c := range []struct {
		name    string
		classes int
		m       func() Model
	}{
		{"logistic", 2, func() Model { m, _ := NewLinear(4, 2, nil, nil, Optimizer{}); return m }},
		{"softmax", 3, func() Model { m, _ := NewLinear(4, 3, nil, nil, Optimizer{}); return m }},
		{"mlp", 2, func() Model { m, _ := NewMLP(4, 8, 2, nil, nil, nil, nil, Optimizer{}, 3); return m }},
		{"mlp-softmax", 3, func() Model { m, _ := NewMLP(4, 8, 3, nil, nil, nil, nil, Optimizer{}, 3); return m }},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := c.m()
			xs, ys := separable(rng, 640, 4, c.classes)
			train(t, m, xs, ys, 2)
			data, err := Export(m)
			if err != nil {
				t.Fatal(err)
			}
			eng, err := goengine.Load(data)
			if err != nil {
				t.Fatal(err)
			}
			// Warm start: the model read back predicts what the learner did.
			back, err := FromONNX(data, Optimizer{})
			if err != nil {
				t.Fatal(err)
			}
			for _, x := range xs[:50] {
				in := []float32{float32(x[0]), float32(x[1]), float32(x[2]), float32(x[3])}
				out, err := eng.Run(in, 4)
				if err != nil {
					t.Fatal(err)
				}
				p := m.Predict(x)
				want := p
				if c.classes == 2 {
					want = p[1:] // one score: the positive class
				}
				for j := range out {
					if math.Abs(float64(out[j])-want[j]) > 1e-5 {
						t.Fatalf("exported %v, learner %v", out, want)
					}
				}
				for j, v := range back.Predict(x) {
					if math.Abs(v-p[j]) > 1e-5 {
						t.Fatalf("warm-started %v, learner %v", back.Predict(x), p)
					}
				}
			}
		})
	}
}

// TestWarmStartFromExporter: the trainer warm-starts from scikit-learn's
// MLPClassifier as skl2onnx exports it (Cast, MatMul + Add, Identity, a
// label branch) and predicts what scikit-learn predicted.
func TestWarmStartFromExporter(t *testing.T) {
	dir := filepath.Join("..", "..", "..", "models", "testdata", "skl2onnx")
	model, err := os.ReadFile(filepath.Join(dir, "mlp.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	var want struct {
		Features int       `json:"features"`
		Width    int       `json:"width"`
		Input    []float32 `json:"input"`
		Expected []float64 `json:"expected"`
	}
	raw, err := os.ReadFile(filepath.Join(dir, "mlp.json"))
	if err != nil || json.Unmarshal(raw, &want) != nil {
		t.Fatalf("mlp.json: %v", err)
	}
	m, err := FromONNX(model, Optimizer{})
	if err != nil {
		t.Fatal(err)
	}
	if m.Classes() != want.Width {
		t.Fatalf("%d classes, want %d", m.Classes(), want.Width)
	}
	for r := 0; r < len(want.Input)/want.Features; r++ {
		x := make([]float64, want.Features)
		for i := range x {
			x[i] = float64(want.Input[r*want.Features+i])
		}
		for j, p := range m.Predict(x) {
			if d := math.Abs(p - want.Expected[r*want.Width+j]); d > 1e-5 {
				t.Fatalf("row %d: %v, scikit-learn %v", r, m.Predict(x), want.Expected[r*want.Width:(r+1)*want.Width])
			}
		}
	}
}
