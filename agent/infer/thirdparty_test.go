package infer_test

import (
	"encoding/json"
	"errors"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/outpost-edge/outpost/agent/infer"
	"github.com/outpost-edge/outpost/models/goengine"
	"github.com/outpost-edge/outpost/models/manifest"
	"github.com/outpost-edge/outpost/models/onnx"
	"github.com/outpost-edge/outpost/models/ort"
	"github.com/outpost-edge/outpost/quant"
	"github.com/outpost-edge/outpost/test/testenv"
)

// thirdParty is a model from models/testdata/thirdparty, built with the
// onnx Python helpers, with outputs computed by a numpy reference.
type thirdParty struct {
	model    []byte
	inputs   [][]float32
	outputs  [][]float32
	features int
}

func loadThirdParty(t *testing.T, name string) thirdParty {
	t.Helper()
	root, err := testenv.Root()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "models", "testdata", "thirdparty")
	model, err := os.ReadFile(filepath.Join(dir, name+".onnx"))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, name+".expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	var tp thirdParty
	var exp struct{ Inputs, Outputs [][]float32 }
	if err := json.Unmarshal(raw, &exp); err != nil {
		t.Fatal(err)
	}
	tp.model, tp.inputs, tp.outputs, tp.features = model, exp.Inputs, exp.Outputs, len(exp.Inputs[0])
	return tp
}

// packageOf wraps a third-party model into an Outpost package whose golden
// vectors are the numpy reference's outputs.
func packageOf(t *testing.T, tp thirdParty, task string) string {
	t.Helper()
	m := &manifest.Manifest{Name: "thirdparty", Version: 1, Task: task}
	for i := 0; i < tp.features; i++ {
		m.Features = append(m.Features, manifest.Feature{Field: "x", Agg: "p" + string(rune('a'+i)), Std: 1})
	}
	for i := range tp.inputs {
		m.Golden = append(m.Golden, manifest.Golden{Input: tp.inputs[i], Output: tp.outputs[i], Tolerance: 1e-4})
	}
	dir := t.TempDir()
	if err := manifest.Write(dir, m, tp.model); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestThirdPartyModelsRunOnTheAgentsORTPath loads models the agent did not
// build (Conv and Reshape; an exporter-style MatMul MLP with Flatten)
// through the agent's own loader: manifest, graph fit, ONNX Runtime and the
// golden vectors from an independent numpy reference.
func TestThirdPartyModelsRunOnTheAgentsORTPath(t *testing.T) {
	if err := ort.Init(testenv.ORTLibrary(t)); err != nil {
		t.Fatal(err)
	}
	for name, task := range map[string]string{"cnn1d": "anomaly", "mlp_matmul": "classification"} {
		t.Run(name, func(t *testing.T) {
			tp := loadThirdParty(t, name)
			info, err := onnx.Inspect(tp.model)
			if err != nil {
				t.Fatal(err)
			}
			if name == "cnn1d" && (info.Ops["Conv"] != 1 || info.Ops["Reshape"] != 2) {
				t.Errorf("ops %v: want Conv and Reshape", info.Ops)
			}
			m, err := infer.LoadSlot(infer.Config{Dir: packageOf(t, tp, task)}, infer.Active, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			var batch []float32
			for _, in := range tp.inputs {
				batch = append(batch, in...)
			}
			out, _, err := m.Infer(batch)
			if err != nil {
				t.Fatal(err)
			}
			width := len(tp.outputs[0])
			for i, want := range tp.outputs {
				for j := range want {
					if d := math.Abs(float64(out[i*width+j] - want[j])); d > 1e-4 {
						t.Errorf("row %d output %d = %v, numpy says %v", i, j, out[i*width+j], want[j])
					}
				}
			}
		})
	}
}

// The pure-Go engine runs the exporter-style MLP and the 1-D CNN (Reshape,
// Conv, Relu, Gemm) as the numpy reference does, and names the ops a graph
// needs that it lacks.
func TestGoEngineOnThirdPartyModels(t *testing.T) {
	for _, name := range []string{"mlp_matmul", "cnn1d"} {
		tp := loadThirdParty(t, name)
		eng, err := goengine.Load(tp.model)
		if err != nil {
			t.Fatal(err)
		}
		for i, in := range tp.inputs {
			out, err := eng.Run(in, tp.features)
			if err != nil {
				t.Fatal(err)
			}
			for j := range out {
				if d := math.Abs(float64(out[j] - tp.outputs[i][j])); d > 1e-4 {
					t.Errorf("%s row %d output %d = %v, numpy says %v", name, i, j, out[j], tp.outputs[i][j])
				}
			}
		}
	}
	lstm, _ := onnx.NewGraph("r").Input("x", "N", 4).Node("LSTM", []string{"x", "w", "r"}, []string{"y"}).Output("y", "N", 4).Model("t")
	if _, err := goengine.Load(lstm); !errors.Is(err, goengine.ErrUnsupported) {
		t.Fatalf("err = %v, want ErrUnsupported for the LSTM", err)
	} else {
		t.Log(err)
	}
}

// TestQuantizingThirdPartyModels: the exporter-style MLP and the CNN
// quantize statically with ONNX Runtime as the calibration tracer (QDQ
// on the weights, and on each quantized op's input and output), the CNN
// dynamically too (DynamicQuantizeLinear before its Gemm's MatMulInteger;
// its Conv reads 1 channel, too few for int8 to pay, and stays float
// unless AllConvs); on ONNX Runtime all stay within 0.05 of the numpy
// reference.
func TestQuantizingThirdPartyModels(t *testing.T) {
	if err := ort.Init(testenv.ORTLibrary(t)); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		o     quant.Options
		op    string // counted: weights and activations behind DequantizeLinear, or dynamic's integer products
		count int
	}{
		{"mlp_matmul", quant.Options{Mode: quant.Static, Calibration: quant.MinMax, Tracer: ort.Trace}, "DequantizeLinear", 6},
		// Its Conv reads 1 channel: float unless AllConvs.
		{"cnn1d", quant.Options{Mode: quant.Static, Calibration: quant.MinMax, Tracer: ort.Trace}, "DequantizeLinear", 3},
		{"cnn1d", quant.Options{Mode: quant.Static, Calibration: quant.MinMax, Tracer: ort.Trace, AllConvs: true}, "DequantizeLinear", 6},
		{"cnn1d", quant.Options{Mode: quant.Dynamic}, "DynamicQuantizeLinear", 1},
	} {
		name, o := c.name, c.o
		tp := loadThirdParty(t, name)
		o.Samples = tp.inputs
		q, err := quant.Quantize(tp.model, o)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		info, _ := onnx.Inspect(q)
		if info.Ops[c.op] != c.count {
			t.Errorf("%s %s: %d %s, want %d: %v", name, o.Mode, info.Ops[c.op], c.op, c.count, info.Ops)
		}
		s, err := ort.NewSession(q)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		width := len(tp.outputs[0])
		for i, in := range tp.inputs {
			out, err := s.Run(in, tp.features)
			if err != nil {
				t.Fatal(err)
			}
			for j := 0; j < width; j++ {
				if d := math.Abs(float64(out[j] - tp.outputs[i][j])); d > 0.05 {
					t.Errorf("%s row %d output %d = %v, numpy float says %v", name, i, j, out[j], tp.outputs[i][j])
				}
			}
		}
		s.Close()
		t.Logf("%s %s: %d → %d bytes, ops %v", name, o.Mode, len(tp.model), len(q), info.Ops)
	}
}
