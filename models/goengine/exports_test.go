package goengine

import (
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/outpost-edge/outpost/models/onnx"
	"github.com/outpost-edge/outpost/models/onnx/onnxpb"
)

// golden is one export in models/testdata/skl2onnx (test/conformance's
// export.py writes them; the suite there reruns the exporter itself).
type golden struct {
	name     string
	model    []byte
	Features int       `json:"features"`
	Width    int       `json:"width"`
	Input    []float32 `json:"input"`
	Scores   string    `json:"scores"`
	Expected []float64 `json:"expected"`
	Labels   string    `json:"labels"`
	// ExpectedLabels are scikit-learn's predict, as strings.
	ExpectedLabels []string `json:"expected_labels"`
}

func goldens(t *testing.T) []golden {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("..", "testdata", "skl2onnx", "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden exports: %v", err)
	}
	var out []golden
	for _, f := range files {
		g := golden{name: strings.TrimSuffix(filepath.Base(f), ".json")}
		raw, err := os.ReadFile(f)
		if err != nil || json.Unmarshal(raw, &g) != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if g.model, err = os.ReadFile(strings.TrimSuffix(f, ".json") + ".onnx"); err != nil {
			t.Fatal(err)
		}
		out = append(out, g)
	}
	return out
}

// TestExportsMatchScikitLearn: each skl2onnx export, unmodified, as a
// batch, against scikit-learn's own predictions.
func TestExportsMatchScikitLearn(t *testing.T) {
	for _, g := range goldens(t) {
		t.Run(g.name, func(t *testing.T) {
			e, err := LoadWith(g.model, Options{Output: g.Scores})
			if err != nil {
				t.Fatal(err)
			}
			got, err := e.Run(g.Input, g.Features)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(g.Expected) || e.Outputs() != g.Width {
				t.Fatalf("%d values, width %d; want %d, %d", len(got), e.Outputs(), len(g.Expected), g.Width)
			}
			for i, want := range g.Expected {
				if d := math.Abs(float64(got[i]) - want); !(d <= 1e-4) {
					t.Fatalf("value %d = %v, scikit-learn %v", i, got[i], want)
				}
			}
		})
	}
}

// TestLabelsMatchScikitLearn: an exporter's label output (int64 or
// string; LinearClassifier's, the trees', the MLP's ArgMax →
// ArrayFeatureExtractor → Reshape → Cast branch) is scikit-learn's predict.
func TestLabelsMatchScikitLearn(t *testing.T) {
	for _, g := range goldens(t) {
		if g.Labels == "" {
			continue
		}
		t.Run(g.name, func(t *testing.T) {
			e, err := LoadWith(g.model, Options{Output: g.Scores, Label: g.Labels})
			if err != nil {
				t.Fatal(err)
			}
			got, err := e.RunLabels(g.Input, g.Features)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, g.ExpectedLabels) {
				t.Fatalf("labels %v, scikit-learn %v", got, g.ExpectedLabels)
			}
		})
	}
	if _, err := LoadWith(goldens(t)[0].model, Options{Label: "no-such-output"}); !errors.Is(err, ErrModel) {
		t.Fatalf("an unknown label output: %v", err)
	}
}

// TestRunAllocates: once its buffers have grown, a run of an exported
// pipeline allocates once: the copy of the result it returns.
func TestRunAllocates(t *testing.T) {
	for _, g := range goldens(t) {
		e, err := LoadWith(g.model, Options{Output: g.Scores})
		if err != nil {
			t.Fatal(err)
		}
		e.Run(g.Input, g.Features) // grow the buffers
		n := testing.AllocsPerRun(20, func() { e.Run(g.Input, g.Features) })
		if n > 1 {
			t.Errorf("%s: %v allocations per run", g.name, n)
		}
	}
	// The CNN (Reshape, Conv, Gemm) and the exporter-style MLP as well.
	for name, features := range map[string]int{"cnn1d": 16, "mlp_matmul": 6} {
		model, err := os.ReadFile(filepath.Join("..", "testdata", "thirdparty", name+".onnx"))
		if err != nil {
			t.Fatal(err)
		}
		e, err := Load(model)
		if err != nil {
			t.Fatal(err)
		}
		x := make([]float32, 8*features)
		e.Run(x, features)
		if n := testing.AllocsPerRun(20, func() { e.Run(x, features) }); n > 1 {
			t.Errorf("%s: %v allocations per run", name, n)
		}
	}
}

// TestUnsupportedOpsAreAllNamed: loading refuses a graph with every op it
// lacks named, with its domain, not just the first.
func TestUnsupportedOpsAreAllNamed(t *testing.T) {
	model, err := onnx.NewGraph("g").Input("x", "N", 4).
		Node("LSTM", []string{"x", "w", "r"}, []string{"a"}).
		Node("Relu", []string{"a"}, []string{"b"}).
		Node("LSTM", []string{"b", "w", "r"}, []string{"c"}).
		Node("Erf", []string{"c"}, []string{"d"}).
		Node("SVMClassifier", []string{"d"}, []string{"label", "y"}).
		Output("y", "N", 4).Model("t")
	if err != nil {
		t.Fatal(err)
	}
	var m onnxpb.ModelProto
	if err := proto.Unmarshal(model, &m); err != nil {
		t.Fatal(err)
	}
	m.Graph.Node[4].Domain = proto.String("ai.onnx.ml")
	model, _ = proto.Marshal(&m)
	_, err = Load(model)
	if !errors.Is(err, ErrUnsupported) {
		t.Fatalf("err = %v, want ErrUnsupported", err)
	}
	for _, want := range []string{"op LSTM (ai.onnx)", "op Erf (ai.onnx)", "op SVMClassifier (ai.onnx.ml)"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%v does not name %s", err, want)
		}
	}
	if strings.Count(err.Error(), "LSTM") != 1 {
		t.Errorf("%v names LSTM more than once", err)
	}
}
