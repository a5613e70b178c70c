package ctl

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/outpost-edge/outpost/models/goengine"
	"github.com/outpost-edge/outpost/models/manifest"
	"github.com/outpost-edge/outpost/models/onnx"
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
