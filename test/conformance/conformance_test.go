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
	"reflect"
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
	// A CNN's row shape (without the batch), element type (float32 or
	// uint8), layout (NCT, NCHW or NHWC) and a sequence's fields; the
	// scikit-learn exports leave them out: rows of Features.
	Shape  []int64  `json:"shape"`
	Dtype  string   `json:"dtype"`
	Layout string   `json:"layout"`
	Fields []string `json:"fields"`
	// InputName is the graph's one input.
	InputName string `json:"-"`
}

// rowShape is one row's dims: Shape, or [Features].
func (e export) rowShape() []int64 {
	if len(e.Shape) > 0 {
		return e.Shape
	}
	return []int64{int64(e.Features)}
}

// feeds is rows [from, to) fed as the graph's input in its real shape,
// [rows, dims...].
func (e export) feeds(from, to int) []onnx.Feed {
	shape := append([]int64{int64(to - from)}, e.rowShape()...)
	return []onnx.Feed{{Name: e.InputName, Shape: shape, Data: e.Input[from*e.Features : to*e.Features]}}
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
		if n := int64(1); len(e.Shape) > 0 {
			for _, d := range e.Shape {
				n *= d
			}
			if n != int64(e.Features) {
				t.Fatalf("%s: row shape %v holds %d values, not %d features", e.Name, e.Shape, n, e.Features)
			}
		}
		info, err := onnx.Inspect(e.Model)
		if err != nil || len(info.Inputs) != 1 {
			t.Fatalf("%s: %v, want one graph input (%v)", e.Name, info, err)
		}
		e.InputName = info.Inputs[0].Name
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
// fed through RunFeeds in its input's real shape (the CNNs' [N, 3, 200],
// [N, 3, 32, 32] and uint8 [N, 32, 32, 3]), as one batch of the held-out
// rows and row by row, against the framework's own predictions; a [N, F]
// export gives the same through Run; the scores output is found by name
// and by the default rule alike; on the pure-Go engine the label output
// is the framework's predict.
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
			got, err := r.RunFeeds(e.feeds(0, e.Rows))
			if err != nil || len(got) != len(e.Expected) {
				t.Errorf("%s on %s: %d values, %v", e.Name, engine, len(got), err)
				r.Close()
				continue
			}
			worst := maxAbs(got, e.Expected)
			for row := range e.Rows {
				one, err := r.RunFeeds(e.feeds(row, row+1))
				if err != nil || len(one) != e.Width {
					t.Errorf("%s on %s, row %d alone: %d values, %v", e.Name, engine, row, len(one), err)
					break
				}
				worst = max(worst, maxAbs(one, e.Expected[row*e.Width:(row+1)*e.Width]))
			}
			if len(e.rowShape()) == 1 {
				// Rows of features: Run, the agent's v1 path, agrees.
				flat, err := r.Run(e.Input, e.Features)
				if err != nil || len(flat) != len(got) || maxAbs(flat, e.Expected) != maxAbs(got, e.Expected) {
					t.Errorf("%s on %s: Run gives %d values (%v), RunFeeds %d", e.Name, engine, len(flat), err, len(got))
				}
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
			if again, err := d.RunFeeds(e.feeds(0, e.Rows)); err != nil || maxAbs(again, e.Expected) != maxAbs(got, e.Expected) {
				t.Errorf("%s on %s: the default output differs from %s (%v)", e.Name, engine, e.Scores, err)
			}
			d.Close()
		}
	}
	t.Logf("%s\n%s", exps[0].Framework, strings.Join(table, "\n"))
}

// pack wraps an export into a model package, unmodified: golden vectors
// are the framework's predictions on the first held-out rows, and the
// manifest names the outputs by role. Rows of features get a v1 manifest
// (one feature per column); an input of rank > 2 gets a v2 one, its kind
// from the layout: NCT a sequence of the export's fields, NCHW and NHWC
// an RGB image (float32 or uint8).
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
	if in := v2Input(t, e); in != nil {
		m.Inputs = []manifest.Input{*in}
	} else {
		for f := range e.Features {
			m.Features = append(m.Features, manifest.Feature{Field: fmt.Sprintf("f%d", f), Agg: "mean", Std: 1})
		}
	}
	if m.RowWidth() != e.Features {
		t.Fatalf("%s: the manifest's rows are %d values, the export's %d", e.Name, m.RowWidth(), e.Features)
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

// v2Input is the manifest input an export of rank > 2 needs (nil for rows
// of features), named after the graph's input.
func v2Input(t *testing.T, e export) *manifest.Input {
	t.Helper()
	dims := e.rowShape()
	if len(dims) == 1 {
		return nil
	}
	switch {
	case e.Layout == "NCT" && len(dims) == 2 && len(e.Fields) == int(dims[0]):
		return &manifest.Input{Name: e.InputName, Kind: manifest.Sequence,
			Sequence: &manifest.SequenceSpec{Fields: e.Fields, Steps: int(dims[1]), Layout: "NCT"}}
	case (e.Layout == "NCHW" || e.Layout == "NHWC") && len(dims) == 3:
		c, h, w := dims[0], dims[1], dims[2]
		if e.Layout == "NHWC" {
			h, w, c = dims[0], dims[1], dims[2]
		}
		if c != 3 {
			t.Fatalf("%s: %d channels, the suite packs RGB", e.Name, c)
		}
		return &manifest.Input{Name: e.InputName, Kind: manifest.Image,
			Image: &manifest.ImageSpec{Width: int(w), Height: int(h), Channels: "RGB", Layout: e.Layout, Type: e.Dtype}}
	}
	t.Fatalf("%s: no manifest input for layout %q, shape %v, fields %v", e.Name, e.Layout, dims, e.Fields)
	return nil
}

// TestExportsValidateAsPackages: each export, packaged unmodified with its
// outputs named by role, passes validation (golden vectors as a batch and
// row by row) on both engines; the CNNs' packages have v2 manifests (a
// sequence input, float32 NCHW and uint8 NHWC images).
func TestExportsValidateAsPackages(t *testing.T) {
	_, exps := exports(t)
	engs := engines(t)
	v2 := map[string]string{}
	for _, e := range exps {
		dir := pack(t, e, e.Model)
		for _, name := range []string{"onnxruntime", "go"} {
			rep, err := validate.PackageFor(dir, func(b []byte, s string) (validate.Runner, error) { return engs[name](b, s) })
			if err != nil {
				t.Errorf("%s on %s: %v", e.Name, name, err)
				continue
			}
			if rep.MaxAbsError > tolerance {
				t.Errorf("%s on %s: %v", e.Name, name, rep.MaxAbsError)
			}
			if ins := rep.Manifest.Inputs; len(ins) == 1 {
				desc := ins[0].Kind
				if im := ins[0].Image; im != nil {
					desc += fmt.Sprintf(" %s %s %s %d×%d", im.Type, im.Layout, im.Channels, im.Width, im.Height)
				}
				if sq := ins[0].Sequence; sq != nil {
					desc += fmt.Sprintf(" %s %v ×%d", sq.Layout, sq.Fields, sq.Steps)
				}
				v2[e.Name] = desc
			}
		}
	}
	want := map[string]string{
		"onnx_cnn1d":            "sequence NCT [ax ay az] ×200",
		"onnx_cnn2d":            "image float32 NCHW RGB 32×32",
		"onnx_cnn2d_uint8_nhwc": "image uint8 NHWC RGB 32×32",
	}
	if !maps.Equal(v2, want) {
		t.Errorf("v2 packages validated: %v, want %v", v2, want)
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

// TestCNNExportsAreInTheSuite: the suite holds the three CNNs export.py
// builds with the onnx helper API, each taking its input in its real
// shape (no leading Reshape), with the layers the issue names, so that
// TestExportsMatchTheFramework checks them against the reference
// evaluator on both engines.
func TestCNNExportsAreInTheSuite(t *testing.T) {
	_, exps := exports(t)
	cnn2d := map[string]int{"Conv": 2, "BatchNormalization": 1, "Relu": 2, "AveragePool": 1,
		"MaxPool": 1, "Flatten": 1, "Gemm": 1, "Softmax": 1}
	camera := maps.Clone(cnn2d)
	camera["Cast"], camera["Mul"], camera["Transpose"] = 1, 1, 1
	want := map[string]struct {
		input onnx.Tensor // the graph's one input, as declared
		ops   map[string]int
	}{
		"onnx_cnn1d": {onnx.Tensor{Name: "input", Type: "FLOAT", Shape: []string{"batch", "3", "200"}},
			map[string]int{"Conv": 2, "BatchNormalization": 1, "Relu": 2, "MaxPool": 1,
				"GlobalAveragePool": 1, "Flatten": 1, "Gemm": 1, "Softmax": 1}},
		"onnx_cnn2d":            {onnx.Tensor{Name: "input", Type: "FLOAT", Shape: []string{"batch", "3", "32", "32"}}, cnn2d},
		"onnx_cnn2d_uint8_nhwc": {onnx.Tensor{Name: "input", Type: "UINT8", Shape: []string{"batch", "32", "32", "3"}}, camera},
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
		if len(info.Inputs) != 1 || !reflect.DeepEqual(info.Inputs[0], w.input) || !maps.Equal(info.Ops, w.ops) {
			t.Errorf("%s: inputs %+v and ops %v, want %+v and %v", e.Name, info.Inputs, info.Ops, w.input, w.ops)
		}
		if !strings.Contains(e.Framework, "ReferenceEvaluator") {
			t.Errorf("%s: expected scores from %q, want onnx.reference's", e.Name, e.Framework)
		}
	}
	for name := range want {
		t.Errorf("export.py wrote no %s", name)
	}
}
