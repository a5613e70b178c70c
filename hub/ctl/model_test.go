package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/outpost-edge/outpost/models/goengine"
	"github.com/outpost-edge/outpost/models/manifest"
	"github.com/outpost-edge/outpost/models/onnx"
	"github.com/outpost-edge/outpost/quant"
	"github.com/outpost-edge/outpost/test/testenv"
)

func run(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = Main(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

// writePackage writes a softmax-regression package with golden vectors.
func writePackage(t *testing.T) string {
	t.Helper()
	model, err := onnx.MLP([]onnx.Dense{{W: [][]float32{{1, -1}, {0.5, 0.5}, {-1, 2}}, B: []float32{0, 0.1, -0.1}}}, onnx.MLPOptions{Output: onnx.Softmax})
	if err != nil {
		t.Fatal(err)
	}
	eng, err := goengine.Load(model)
	if err != nil {
		t.Fatal(err)
	}
	in := []float32{0.3, -0.7}
	out, _ := eng.Run(in, 2)
	dir := t.TempDir()
	m := &manifest.Manifest{Name: "valve", Version: 1, Task: "classification",
		Features: []manifest.Feature{{Field: "p", Agg: "mean", Std: 1}, {Field: "p", Agg: "max", Std: 1}},
		Outputs:  manifest.Outputs{Labels: []string{"closed", "open", "stuck"}},
		Golden:   []manifest.Golden{{Input: in, Output: out, Tolerance: 1e-5}}}
	if err := manifest.Write(dir, m, model); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestModelInspect(t *testing.T) {
	dir := writePackage(t)
	code, out, errOut := run("model", "inspect", dir)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{"input       features FLOAT [N, 2]", "output      scores FLOAT [N, 3]", "Gemm×1", "Softmax×1", "parameters  9 (36 bytes)"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if code, out, _ := run("model", "inspect", "--json", filepath.Join(dir, manifest.ModelFile)); code != 0 || !strings.Contains(out, `"parameters": 9`) {
		t.Errorf("--json: exit %d\n%s", code, out)
	}
	bad := filepath.Join(t.TempDir(), "bad.onnx")
	os.WriteFile(bad, []byte("not onnx"), 0o644)
	if code, _, errOut := run("model", "inspect", bad); code != 1 || !strings.Contains(errOut, "invalid model") {
		t.Errorf("corrupt file: exit %d, stderr %q", code, errOut)
	}
	if code, _, _ := run("model", "inspect"); code != 2 {
		t.Errorf("no path: exit %d, want 2", code)
	}
}

func TestModelValidate(t *testing.T) {
	dir := writePackage(t)
	for _, args := range [][]string{
		{"model", "validate", dir, "--engine", "go"},
		{"model", "validate", "--onnxruntime", testenv.ORTLibrary(t), dir},
	} {
		code, out, errOut := run(args...)
		if code != 0 || !strings.HasPrefix(out, "valid: valve v1 (classification), 2 features, 1 golden vectors reproduced") {
			t.Errorf("%v: exit %d\n%s%s", args, code, out, errOut)
		}
	}
	// A manifest naming two labels for three output columns is refused.
	raw, _ := os.ReadFile(filepath.Join(dir, manifest.ManifestFile))
	raw = bytes.Replace(raw, []byte(`"stuck"`), []byte(``), 1)
	raw = bytes.Replace(raw, []byte(`"open",`), []byte(`"open"`), 1)
	os.WriteFile(filepath.Join(dir, manifest.ManifestFile), raw, 0o644)
	if code, _, errOut := run("model", "validate", dir, "--engine", "go"); code != 1 || !strings.Contains(errOut, "names 2 labels") {
		t.Errorf("mismatch: exit %d, stderr %q", code, errOut)
	}
}

// TestQuantCommand quantizes a 16→256→256→4 package with labelled data,
// checks the report and the written package, and checks that a bound the
// result misses refuses it and writes nothing.
func TestQuantCommand(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	layer := func(in, out int) onnx.Dense {
		d := onnx.Dense{B: make([]float32, out)}
		for range out {
			row := make([]float32, in)
			for i := range row {
				row[i] = float32(rng.NormFloat64() * math.Sqrt(2/float64(in)))
			}
			d.W = append(d.W, row)
		}
		return d
	}
	model, err := onnx.MLP([]onnx.Dense{layer(16, 256), layer(256, 256), layer(256, 4)}, onnx.MLPOptions{Hidden: onnx.Relu, Output: onnx.Softmax})
	if err != nil {
		t.Fatal(err)
	}
	eng, _ := goengine.Load(model)
	m := &manifest.Manifest{Name: "gearbox", Version: 1, Task: "classification"}
	for i := 0; i < 16; i++ {
		m.Features = append(m.Features, manifest.Feature{Field: "f", Agg: "p" + strconv.Itoa(i), Std: 1})
	}
	var data bytes.Buffer
	for i := 0; i < 1000; i++ {
		x := make([]float32, 16)
		for j := range x {
			x[j] = float32(rng.NormFloat64())
		}
		y, _ := eng.Run(x, 16)
		if i < 3 {
			m.Golden = append(m.Golden, manifest.Golden{Input: x, Output: y, Tolerance: 1e-5})
		}
		line, _ := json.Marshal(map[string]any{"features": x, "label": quant.Decide(y, 0)})
		data.Write(append(line, '\n'))
	}
	in, out := t.TempDir(), filepath.Join(t.TempDir(), "q")
	if err := manifest.Write(in, m, model); err != nil {
		t.Fatal(err)
	}
	dataFile := filepath.Join(t.TempDir(), "eval.jsonl")
	os.WriteFile(dataFile, data.Bytes(), 0o644)
	lib := testenv.ORTLibrary(t)

	code, stdout, stderr := run("quant", in, out, "--data", dataFile, "--onnxruntime", lib, "--max-drop", "0.05")
	if code != 0 {
		t.Fatalf("exit %d: %s%s", code, stdout, stderr)
	}
	t.Log("\n" + stdout)
	for _, want := range []string{"mode          int8-static minmax", "against labels", "latency onnxruntime  batch 1", "latency onnxruntime  batch 32", "latency go           batch 32",
		"held out: the last 20% of the data (200 of 1000 rows), calibrated on the first 800", "on 200 rows", "agreement", "wrote " + out} {
		if !strings.Contains(stdout, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	qm, qmodel, err := manifest.Load(out)
	if err != nil {
		t.Fatal(err)
	}
	if qm.Quantization != quant.Static || qm.Version != 2 || qm.Parent != 1 || qm.Metrics["quant_size_ratio"] > 0.3 {
		t.Errorf("quantized manifest: quantization %q v%d parent %d metrics %v", qm.Quantization, qm.Version, qm.Parent, qm.Metrics)
	}
	if float64(len(qmodel)) > 0.3*float64(len(model)) {
		t.Errorf("size %d of %d", len(qmodel), len(model))
	}
	// The new package passes the validator on both engines.
	for _, engine := range []string{"go", "onnxruntime"} {
		if code, stdout, stderr := run("model", "validate", out, "--engine", engine, "--onnxruntime", lib); code != 0 {
			t.Errorf("validate on %s: exit %d: %s%s", engine, code, stdout, stderr)
		}
	}
	if regexp.MustCompile(`0\.\d\d× (faster|slower)`).MatchString(stdout) {
		t.Errorf("a slowdown reads as a speedup below one:\n%s", stdout)
	}
	// -o json: the report alone, parseable, naming what it wrote; separate
	// evaluation data; the bound in points.
	jsonOut := filepath.Join(t.TempDir(), "qj")
	code, stdout, stderr = run("quant", in, jsonOut, "--data", dataFile, "--eval-data", dataFile, "--onnxruntime", lib, "--max-accuracy-drop", "5", "-o", "json")
	if code != 0 {
		t.Fatalf("-o json: exit %d: %s%s", code, stdout, stderr)
	}
	var rep quant.Report
	dec := json.NewDecoder(strings.NewReader(stdout))
	if err := dec.Decode(&rep); err != nil || dec.More() {
		t.Fatalf("-o json is not one JSON object (%v):\n%s", err, stdout)
	}
	if rep.Written != jsonOut || rep.Rows != 1000 || rep.CalibrationRows != 1000 || len(rep.Latency["onnxruntime"]) != 2 || rep.Agreement < 0.9 {
		t.Errorf("JSON report: %+v", rep)
	}
	// A bound the result misses: refused, nothing written.
	refused := filepath.Join(t.TempDir(), "refused")
	code, _, stderr = run("quant", in, refused, "--data", dataFile, "--onnxruntime", lib, "--max-accuracy-drop", "0.1")
	if code != 1 || !strings.Contains(stderr, "accuracy drop beyond the bound") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	if _, err := os.Stat(refused); !os.IsNotExist(err) {
		t.Errorf("refused quantization wrote %s", refused)
	}
}

// TestQuantCNNPackage: a 1-D CNN with a sequence input (rank 3, a v2
// manifest) quantizes with calibration on ONNX Runtime; the report covers
// each engine that loads it and the package validates on both.
func TestQuantCNNPackage(t *testing.T) {
	model, err := onnx.CNN1D("wave", 2, 50, 4, 3, 1)
	if err != nil {
		t.Fatal(err)
	}
	eng, err := goengine.Load(model)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	m := &manifest.Manifest{Name: "pump-cnn", Version: 1, Task: "anomaly",
		Inputs: []manifest.Input{{Name: "wave", Kind: manifest.Sequence, Sequence: &manifest.SequenceSpec{Fields: []string{"ax", "ay"}, Steps: 50, Layout: "NCT"}}}}
	var data bytes.Buffer
	for i := 0; i < 300; i++ {
		x := make([]float32, 100)
		for j := range x {
			x[j] = float32(rng.NormFloat64())
		}
		y, err := eng.RunFeeds([]onnx.Feed{{Name: "wave", Shape: []int64{1, 2, 50}, Data: x}})
		if err != nil {
			t.Fatal(err)
		}
		if i < 3 {
			m.Golden = append(m.Golden, manifest.Golden{Input: x, Output: y, Tolerance: 1e-5})
		}
		line, _ := json.Marshal(x)
		data.Write(append(line, '\n'))
	}
	in, out := t.TempDir(), filepath.Join(t.TempDir(), "q")
	if err := manifest.Write(in, m, model); err != nil {
		t.Fatal(err)
	}
	dataFile := filepath.Join(t.TempDir(), "rows.jsonl")
	os.WriteFile(dataFile, data.Bytes(), 0o644)
	lib := testenv.ORTLibrary(t)
	code, stdout, stderr := run("quant", in, out, "--data", dataFile, "--onnxruntime", lib, "--max-drop", "0.05")
	if code != 0 {
		t.Fatalf("exit %d: %s%s", code, stdout, stderr)
	}
	t.Log("\n" + stdout)
	for _, want := range []string{"latency onnxruntime", "latency go"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	small := strings.Contains(stdout, "warning       the quantized model is larger")
	qm, qmodel, err := manifest.Load(out)
	if err != nil {
		t.Fatal(err)
	}
	if larger := len(qmodel) > len(model); larger != small {
		t.Errorf("%d → %d bytes; warned of a larger model: %v", len(model), len(qmodel), small)
	}
	if qm.Quantization != quant.Static {
		t.Errorf("quantization %q", qm.Quantization)
	}
	// A size bound it misses: refused, nothing written.
	refused := filepath.Join(t.TempDir(), "refused")
	ratio := fmt.Sprint(float64(len(qmodel)) / float64(len(model)) * 0.9)
	if code, _, stderr := run("quant", in, refused, "--data", dataFile, "--onnxruntime", lib, "--max-size-ratio", ratio); code != 1 || !strings.Contains(stderr, "too large") {
		t.Errorf("--max-size-ratio %s: exit %d, stderr %q", ratio, code, stderr)
	}
	if _, err := os.Stat(refused); !os.IsNotExist(err) {
		t.Errorf("refused quantization wrote %s", refused)
	}
	for _, engine := range []string{"go", "onnxruntime"} {
		if code, stdout, stderr := run("model", "validate", out, "--engine", engine, "--onnxruntime", lib); code != 0 {
			t.Errorf("validate on %s: exit %d: %s%s", engine, code, stdout, stderr)
		}
	}
}
