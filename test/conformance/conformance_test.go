// Package conformance checks models that data scientists export with
// third-party tools (scikit-learn through skl2onnx; CNNs built with the
// onnx helper API, scored by onnx.reference) against the framework's own
// predictions, on ONNX Runtime and on the pure-Go engine.
// export.py writes the models in the virtualenv `make deps` creates
// (deploy/scripts/deps.sh py); a missing virtualenv fails the suite.
package conformance

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/models/goengine"
	"github.com/outpost-edge/outpost/models/manifest"
	"github.com/outpost-edge/outpost/models/onnx"
	"github.com/outpost-edge/outpost/models/ort"
	"github.com/outpost-edge/outpost/models/validate"
	"github.com/outpost-edge/outpost/test/testenv"
)

// tolerance is the largest absolute difference from the framework's own
// predictions that passes, on every engine.
const tolerance = 1e-4

// export is one model export.py wrote, with the framework's predictions.
type export struct {
	Name           string    `json:"-"`
	Model          []byte    `json:"-"`
	Features       int       `json:"features"`
	Rows           int       `json:"rows"`
	Input          []float32 `json:"input"`
	Scores         string    `json:"scores"`
	Width          int       `json:"width"`
	Expected       []float64 `json:"expected"`
	Labels         string    `json:"labels"`
	ExpectedLabels []string  `json:"expected_labels"`
	Framework      string    `json:"framework"`
}

var (
	exportOnce sync.Once
	exportDir  string
	exportErr  error
)

// exports runs export.py once per test binary and reads what it wrote.
func exports(t *testing.T) (string, []export) {
	t.Helper()
	exportOnce.Do(func() { exportDir, exportErr = runExport() })
	if exportErr != nil {
		t.Fatal(exportErr)
	}
	names, err := filepath.Glob(filepath.Join(exportDir, "*.json"))
	if err != nil || len(names) == 0 {
		t.Fatalf("export.py wrote no models into %s (%v)", exportDir, err)
	}
	sort.Strings(names)
	var out []export
	for _, n := range names {
		raw, err := os.ReadFile(n)
		if err != nil {
			t.Fatal(err)
		}
		var e export
		if err := json.Unmarshal(raw, &e); err != nil {
			t.Fatalf("%s: %v", n, err)
		}
		e.Name = strings.TrimSuffix(filepath.Base(n), ".json")
		if e.Model, err = os.ReadFile(strings.TrimSuffix(n, ".json") + ".onnx"); err != nil {
			t.Fatal(err)
		}
		if len(e.Input) != e.Rows*e.Features || len(e.Expected) != e.Rows*e.Width {
			t.Fatalf("%s: %d inputs, %d expected values for %d rows", e.Name, len(e.Input), len(e.Expected), e.Rows)
		}
		out = append(out, e)
	}
	return exportDir, out
}

func runExport() (string, error) {
	root, err := testenv.Root()
	if err != nil {
		return "", err
	}
	cache, err := testenv.Cache()
	if err != nil {
		return "", err
	}
	python := filepath.Join(cache, "venv-conformance", "bin", "python")
	if _, err := os.Stat(python); err != nil {
		return "", fmt.Errorf("conformance: the exporters' virtualenv is missing (%w); run `make deps` (or deploy/scripts/deps.sh py)", err)
	}
	dir, err := os.MkdirTemp("", "outpost-conformance-")
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, python, filepath.Join(root, "test", "conformance", "export.py"), dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("conformance: export.py: %w\n%s", err, out)
	}
	return dir, nil
}

func TestMain(m *testing.M) {
	code := m.Run()
	if exportDir != "" {
		os.RemoveAll(exportDir)
	}
	os.Exit(code)
}

// runner is what both engines answer.
type runner interface {
	Run(x []float32, features int) ([]float32, error)
	RunFeeds(feeds []onnx.Feed) ([]float32, error)
	Outputs() int
	Close() error
}

// engines open a model for its scores output (empty: the default rule).
func engines(t *testing.T) map[string]func(model []byte, scores string) (runner, error) {
	t.Helper()
	if err := ort.Init(testenv.ORTLibrary(t)); err != nil {
		t.Fatal(err)
	}
	return map[string]func([]byte, string) (runner, error){
		"onnxruntime": func(b []byte, s string) (runner, error) { return ort.NewSessionWith(b, ort.Options{Output: s}) },
		"go":          func(b []byte, s string) (runner, error) { return goengine.LoadWith(b, goengine.Options{Output: s}) },
	}
}

func maxAbs(got []float32, want []float64) float64 {
	var worst float64
	for i := range want {
		d := math.Abs(float64(got[i]) - want[i])
		if math.IsNaN(d) {
			return math.Inf(1)
		}
		worst = max(worst, d)
	}
	return worst
}

// TestExportsMatchTheFramework: every export, unmodified, on both engines,
// as one batch of the held-out rows and row by row, against the
// framework's own predictions; the scores output is found by name and by
// the default rule alike; on the pure-Go engine the label output is the
// framework's predict.
func TestExportsMatchTheFramework(t *testing.T) {
	_, exps := exports(t)
	engs := engines(t)
	var table []string
	for _, e := range exps {
		for _, engine := range []string{"onnxruntime", "go"} {
			r, err := engs[engine](e.Model, e.Scores)
			if err != nil {
				t.Errorf("%s on %s: %v", e.Name, engine, err)
				continue
			}
			if r.Outputs() != e.Width {
				t.Errorf("%s on %s: %d scores per row, the framework gives %d", e.Name, engine, r.Outputs(), e.Width)
			}
			got, err := r.Run(e.Input, e.Features)
			if err != nil || len(got) != len(e.Expected) {
				t.Errorf("%s on %s: %d values, %v", e.Name, engine, len(got), err)
				r.Close()
				continue
			}
			worst := maxAbs(got, e.Expected)
			for row := range e.Rows {
				one, err := r.Run(e.Input[row*e.Features:(row+1)*e.Features], e.Features)
				if err != nil {
					t.Errorf("%s on %s, row %d alone: %v", e.Name, engine, row, err)
					break
				}
				worst = max(worst, maxAbs(one, e.Expected[row*e.Width:(row+1)*e.Width]))
			}
			r.Close()
			if worst > tolerance {
				t.Errorf("%s on %s: max abs error %.3g, want ≤ %g", e.Name, engine, worst, tolerance)
			}
			table = append(table, fmt.Sprintf("%-26s %-12s max abs error %.2e", e.Name, engine, worst))
			if engine == "go" && e.Labels != "" {
				// The label output, computed when named, is the framework's predict.
				l, err := goengine.LoadWith(e.Model, goengine.Options{Output: e.Scores, Label: e.Labels})
				if err != nil {
					t.Errorf("%s with its labels: %v", e.Name, err)
				} else if got, err := l.RunLabels(e.Input, e.Features); err != nil || !slices.Equal(got, e.ExpectedLabels) {
					t.Errorf("%s labels %v (%v), the framework predicts %v", e.Name, got, err, e.ExpectedLabels)
				}
			}
			// The default rule finds the same output without its name.
			d, err := engs[engine](e.Model, "")
			if err != nil {
				t.Errorf("%s on %s without the output's name: %v", e.Name, engine, err)
				continue
			}
			if again, err := d.Run(e.Input, e.Features); err != nil || maxAbs(again, e.Expected) != maxAbs(got, e.Expected) {
				t.Errorf("%s on %s: the default output differs from %s (%v)", e.Name, engine, e.Scores, err)
			}
			d.Close()
		}
	}
	t.Logf("%s\n%s", exps[0].Framework, strings.Join(table, "\n"))
}

// pack wraps an export into a model package, unmodified: golden vectors
// are the framework's predictions on the first held-out rows, and the
// manifest names the outputs by role.
func pack(t *testing.T, e export, model []byte) string {
	t.Helper()
	m := &manifest.Manifest{Name: strings.ReplaceAll(e.Name, "_", "-"), Version: 1, Task: "classification",
		Outputs: manifest.Outputs{Scores: e.Scores, Label: e.Labels}}
	if e.Labels == "" {
		m.Task = "regression"
	} else {
		for c := range e.Width {
			m.Outputs.Labels = append(m.Outputs.Labels, fmt.Sprintf("class-%d", c))
		}
	}
	for f := range e.Features {
		m.Features = append(m.Features, manifest.Feature{Field: fmt.Sprintf("f%d", f), Agg: "mean", Std: 1})
	}
	for row := range min(e.Rows, 5) {
		g := manifest.Golden{Input: e.Input[row*e.Features : (row+1)*e.Features], Tolerance: tolerance}
		for _, v := range e.Expected[row*e.Width : (row+1)*e.Width] {
			g.Output = append(g.Output, float32(v))
		}
		m.Golden = append(m.Golden, g)
	}
	dir := t.TempDir()
	if err := manifest.Write(dir, m, model); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestExportsValidateAsPackages: each export, packaged unmodified with its
// outputs named by role, passes validation (golden vectors as a batch and
// row by row) on both engines.
func TestExportsValidateAsPackages(t *testing.T) {
	_, exps := exports(t)
	engs := engines(t)
	for _, e := range exps {
		dir := pack(t, e, e.Model)
		for name, open := range engs {
			rep, err := validate.PackageFor(dir, func(b []byte, s string) (validate.Runner, error) { return open(b, s) })
			if err != nil {
				t.Errorf("%s on %s: %v", e.Name, name, err)
				continue
			}
			if rep.MaxAbsError > tolerance {
				t.Errorf("%s on %s: %v", e.Name, name, rep.MaxAbsError)
			}
		}
	}
}

// TestZipMapIsRefused: skl2onnx's default export (probabilities as a
// sequence of maps) fails validation with how to export without it.
func TestZipMapIsRefused(t *testing.T) {
	dir, exps := exports(t)
	zipped, err := os.ReadFile(filepath.Join(dir, "zipmap.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	e := exps[0]
	e.Width = 2
	for i := range e.Expected {
		e.Expected[i] = 0.5 // never compared: the graph is refused first
	}
	e.Expected = e.Expected[:e.Rows*2]
	pkg := pack(t, e, zipped)
	_, err = validate.PackageFor(pkg, func(b []byte, s string) (validate.Runner, error) {
		return goengine.LoadWith(b, goengine.Options{Output: s})
	})
	if !errors.Is(err, validate.ErrMismatch) || !strings.Contains(err.Error(), "zipmap") {
		t.Fatalf("err = %v, want ErrMismatch saying how to export without ZipMap", err)
	}
	t.Log(err)
}

// TestCNNExportsAreInTheSuite: the suite holds the two CNNs export.py
// builds with the onnx helper API, with the layers the issue names, so
// that TestExportsMatchTheFramework checks them against the reference
// evaluator on both engines.
func TestCNNExportsAreInTheSuite(t *testing.T) {
	_, exps := exports(t)
	want := map[string]struct {
		features int
		ops      map[string]int
	}{
		"onnx_cnn1d": {3 * 200, map[string]int{"Reshape": 1, "Conv": 2, "BatchNormalization": 1, "Relu": 2, "MaxPool": 1,
			"GlobalAveragePool": 1, "Flatten": 1, "Gemm": 1, "Softmax": 1}},
		"onnx_cnn2d": {3 * 32 * 32, map[string]int{"Reshape": 1, "Conv": 2, "BatchNormalization": 1, "Relu": 2, "AveragePool": 1,
			"MaxPool": 1, "Flatten": 1, "Gemm": 1, "Softmax": 1}},
	}
	for _, e := range exps {
		w, ok := want[e.Name]
		if !ok {
			continue
		}
		delete(want, e.Name)
		info, err := onnx.Inspect(e.Model)
		if err != nil {
			t.Fatal(err)
		}
		if e.Features != w.features || !maps.Equal(info.Ops, w.ops) {
			t.Errorf("%s: %d features and ops %v, want %d and %v", e.Name, e.Features, info.Ops, w.features, w.ops)
		}
		if !strings.Contains(e.Framework, "ReferenceEvaluator") {
			t.Errorf("%s: expected scores from %q, want onnx.reference's", e.Name, e.Framework)
		}
	}
	for name := range want {
		t.Errorf("export.py wrote no %s", name)
	}
}
