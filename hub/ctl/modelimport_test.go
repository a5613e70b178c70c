package ctl

import (
	"bufio"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/outpost-edge/outpost/models/manifest"
	"github.com/outpost-edge/outpost/models/onnx"
	"github.com/outpost-edge/outpost/test/testenv"
)

// export is one skl2onnx export in models/testdata/skl2onnx, with
// scikit-learn's own predictions.
type export struct {
	Features       int       `json:"features"`
	Rows           int       `json:"rows"`
	Width          int       `json:"width"`
	Input          []float32 `json:"input"`
	Scores         string    `json:"scores"`
	Labels         string    `json:"labels"`
	Expected       []float64 `json:"expected"`
	ExpectedLabels []string  `json:"expected_labels"`
	model          string
}

func loadExport(t *testing.T, name string) export {
	t.Helper()
	root, err := testenv.Root()
	if err != nil {
		t.Fatal(err)
	}
	base := filepath.Join(root, "models", "testdata", "skl2onnx", name)
	raw, err := os.ReadFile(base + ".json")
	if err != nil {
		t.Fatal(err)
	}
	var e export
	if err := json.Unmarshal(raw, &e); err != nil {
		t.Fatal(err)
	}
	e.model = base + ".onnx"
	return e
}

func featureNames(n int) []string {
	var s []string
	for i := range n {
		s = append(s, fmt.Sprintf("x.p%d", i))
	}
	return s
}

// writeCSV writes rows of width values under a header.
func writeCSV(t *testing.T, header []string, x []float32) string {
	t.Helper()
	var b strings.Builder
	b.WriteString(strings.Join(header, ",") + "\n")
	for r := 0; r < len(x)/len(header); r++ {
		var cells []string
		for _, v := range x[r*len(header) : (r+1)*len(header)] {
			cells = append(cells, strconv.FormatFloat(float64(v), 'g', -1, 32))
		}
		b.WriteString(strings.Join(cells, ",") + "\n")
	}
	return writeFile(t, "x.csv", b.String())
}

func writeFile(t *testing.T, name, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func near(got float32, want float64) bool {
	return math.Abs(float64(got)-want) <= 1e-4
}

// TestModelImportScikitLearn imports skl2onnx exports as they are (label
// and probabilities outputs, ai.onnx.ml ops) with CSV rows of their
// inputs, on each engine; validates the packages on both engines; and
// checks that model run prints scikit-learn's probabilities and
// predictions.
func TestModelImportScikitLearn(t *testing.T) {
	lib := testenv.ORTLibrary(t)
	for _, name := range []string{"logreg_binary", "logreg_multiclass", "random_forest", "gradient_boosting", "random_forest_regressor"} {
		e := loadExport(t, name)
		data := writeCSV(t, featureNames(e.Features), e.Input)
		for _, engine := range []string{"onnxruntime", "go"} {
			t.Run(name+"/"+engine, func(t *testing.T) {
				dir := filepath.Join(t.TempDir(), "pkg")
				args := []string{"model", "import", e.model, "--out", dir, "--data", data, "--engine", engine, "--onnxruntime", lib}
				switch name {
				case "random_forest":
					// Through a spec: normalisation only a spec can give,
					// and the outputs named by role.
					var fs []string
					for i := range e.Features {
						fs = append(fs, fmt.Sprintf("    - {field: x, agg: p%d, mean: %d, std: 2}", i, i))
					}
					spec := writeFile(t, "spec.yaml", "name: forest\nversion: 3\ntask: classification\nfeatures:\n"+strings.Join(fs, "\n")+
						"\noutputs:\n  scores: probabilities\n  label: label\n  labels: [low, mid, high]\nrequirements:\n  min_agent_version: 0.9.0\n")
					args = append(args, "--spec", spec)
				case "random_forest_regressor":
					args = append(args, "--features", strings.Join(featureNames(e.Features), ","), "--task", "regression")
				default:
					args = append(args, "--features", strings.Join(featureNames(e.Features), ","))
				}
				code, out, errOut := run(args...)
				if code != 0 {
					t.Fatalf("import: exit %d\n%s%s", code, out, errOut)
				}
				t.Log("\n" + out)
				m, _, err := manifest.Load(dir)
				if err != nil {
					t.Fatal(err)
				}
				if m.Outputs.Scores != e.Scores || m.Outputs.Label != e.Labels || len(m.Golden) != e.Rows {
					t.Fatalf("outputs %+v, %d golden; want scores %q label %q, %d golden", m.Outputs, len(m.Golden), e.Scores, e.Labels, e.Rows)
				}
				for i, g := range m.Golden {
					for j, v := range g.Output {
						if want := e.Expected[i*e.Width+j]; !near(v, want) {
							t.Fatalf("golden %d output %d = %v, scikit-learn %v", i, j, v, want)
						}
					}
				}
				wantLabels := e.ExpectedLabels
				switch name {
				case "random_forest":
					if m.Name != "forest" || m.Version != 3 || m.Features[2].Mean != 2 || m.Features[2].Std != 2 || m.Requirements.MinAgentVersion != "0.9.0" {
						t.Errorf("spec not applied: %+v", m)
					}
					classes := map[string]string{"0": "low", "1": "mid", "2": "high"}
					wantLabels = nil
					for _, l := range e.ExpectedLabels {
						wantLabels = append(wantLabels, classes[l])
					}
				case "random_forest_regressor":
					wantLabels = nil // no label column
					if m.Task != "regression" || len(m.Outputs.Labels) != 0 {
						t.Errorf("task %q labels %v", m.Task, m.Outputs.Labels)
					}
				default:
					// The classes come from the graph's classifier node.
					if m.Name != name || m.Version != 1 || m.Task != "classification" || len(m.Outputs.Labels) != e.Width {
						t.Errorf("defaults: name %q v%d task %q labels %v", m.Name, m.Version, m.Task, m.Outputs.Labels)
					}
				}
				for _, other := range []string{"onnxruntime", "go"} {
					if code, out, errOut := run("model", "validate", dir, "--engine", other, "--onnxruntime", lib); code != 0 {
						t.Errorf("validate on %s: exit %d\n%s%s", other, code, out, errOut)
					}
				}
				checkRunCSV(t, e, wantLabels, engine, dir, data, lib)
				checkRunJSON(t, e, wantLabels, engine, dir, data, lib)
			})
		}
	}
}

func checkRunCSV(t *testing.T, e export, labels []string, engine, dir, data, lib string) {
	t.Helper()
	code, out, errOut := run("model", "run", dir, "--data", data, "--engine", engine, "--onnxruntime", lib, "-o", "csv")
	if code != 0 {
		t.Fatalf("run: exit %d\n%s", code, errOut)
	}
	recs, err := csv.NewReader(strings.NewReader(out)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != e.Rows+1 {
		t.Fatalf("%d lines, want a header and %d rows:\n%s", len(recs), e.Rows, out)
	}
	head := recs[0]
	want := []string{"row"}
	for j := range e.Width {
		want = append(want, fmt.Sprintf("%s[%d]", e.Scores, j))
	}
	if labels != nil {
		want = append(want, "label", "flagged")
	}
	graph := engine == "go" && e.Labels != ""
	if graph {
		want = append(want, "graph_label")
	}
	if strings.Join(head, ",") != strings.Join(want, ",") {
		t.Fatalf("header %v, want %v", head, want)
	}
	for i, rec := range recs[1:] {
		for j := range e.Width {
			v, err := strconv.ParseFloat(rec[1+j], 32)
			if err != nil || !near(float32(v), e.Expected[i*e.Width+j]) {
				t.Fatalf("row %d score %d = %s, scikit-learn %v", i+1, j, rec[1+j], e.Expected[i*e.Width+j])
			}
		}
		if labels != nil && rec[1+e.Width] != labels[i] {
			t.Errorf("row %d label %q, scikit-learn %q", i+1, rec[1+e.Width], labels[i])
		}
		if graph && rec[len(rec)-1] != e.ExpectedLabels[i] {
			t.Errorf("row %d graph label %q, scikit-learn %q", i+1, rec[len(rec)-1], e.ExpectedLabels[i])
		}
	}
}

func checkRunJSON(t *testing.T, e export, labels []string, engine, dir, data, lib string) {
	t.Helper()
	code, out, errOut := run("model", "run", "--engine", engine, dir, "--onnxruntime", lib, "--data", data, "-o", "json")
	if code != 0 {
		t.Fatalf("run: exit %d\n%s", code, errOut)
	}
	sc := bufio.NewScanner(strings.NewReader(out))
	i := 0
	for ; sc.Scan(); i++ {
		var r struct {
			Row        int       `json:"row"`
			Scores     []float32 `json:"scores"`
			Label      *string   `json:"label"`
			Flagged    *bool     `json:"flagged"`
			GraphLabel *string   `json:"graph_label"`
		}
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("line %d: %v: %s", i+1, err, sc.Text())
		}
		if r.Row != i+1 || len(r.Scores) != e.Width {
			t.Fatalf("line %d: %s", i+1, sc.Text())
		}
		for j, v := range r.Scores {
			if !near(v, e.Expected[i*e.Width+j]) {
				t.Fatalf("row %d score %d = %v, scikit-learn %v", i+1, j, v, e.Expected[i*e.Width+j])
			}
		}
		if (labels != nil) != (r.Label != nil) || labels != nil && *r.Label != labels[i] {
			t.Errorf("row %d: %s, want label %v", i+1, sc.Text(), labels)
		}
		if wantGraph := engine == "go" && e.Labels != ""; wantGraph != (r.GraphLabel != nil) || wantGraph && *r.GraphLabel != e.ExpectedLabels[i] {
			t.Errorf("row %d: %s, want graph label %v", i+1, sc.Text(), e.ExpectedLabels)
		}
	}
	if i != e.Rows {
		t.Errorf("%d lines, want %d", i, e.Rows)
	}
}

// TestModelValidateNamedScores: a graph with two float outputs (an
// embedding and the scores) has no default scores output, so validation
// must open each engine on the one the manifest names.
func TestModelValidateNamedScores(t *testing.T) {
	g := onnx.NewGraph("embed").Input("X", "N", 2).
		Initializer("W1", []float32{1, 0, 0.5, 0, 1, -0.5}, 2, 3).Initializer("B1", []float32{0, 0.1, 0}, 3).
		Initializer("W2", []float32{1, -1, 0.5, 0.5, -1, 1}, 3, 2).Initializer("B2", []float32{0, 0}, 2).
		Node("Gemm", []string{"X", "W1", "B1"}, []string{"embedding"}).
		Node("Gemm", []string{"embedding", "W2", "B2"}, []string{"logits"}).
		Node("Softmax", []string{"logits"}, []string{"scores"}, onnx.Attr{Name: "axis", Value: int64(1)}).
		Output("embedding", "N", 3).Output("scores", "N", 2)
	model, err := g.Model("test")
	if err != nil {
		t.Fatal(err)
	}
	path := writeFile(t, "embed.onnx", string(model))
	data := writeCSV(t, []string{"a.mean", "a.max"}, []float32{0.3, -0.7, 1, 2, -1.5, 0.25})
	lib := testenv.ORTLibrary(t)
	// Without names the import refuses: two float outputs, no one choice.
	code, _, errOut := run("model", "import", path, "--out", filepath.Join(t.TempDir(), "p"), "--features", "a.mean,a.max",
		"--task", "classification", "--data", data, "--engine", "go")
	if code != 1 || !strings.Contains(errOut, "2 float outputs") || !strings.Contains(errOut, "--scores") {
		t.Errorf("unnamed scores: exit %d, stderr %q", code, errOut)
	}
	dir := filepath.Join(t.TempDir(), "pkg")
	code, out, errOut := run("model", "import", path, "--out", dir, "--features", "a.mean,a.max", "--task", "classification",
		"--scores", "scores", "--embedding", "embedding", "--labels", "off,on", "--data", data, "--engine", "go")
	if code != 0 {
		t.Fatalf("import: exit %d\n%s%s", code, out, errOut)
	}
	for _, engine := range []string{"onnxruntime", "go"} {
		code, out, errOut := run("model", "validate", dir, "--engine", engine, "--onnxruntime", lib)
		if code != 0 || !strings.HasPrefix(out, "valid: embed v1 (classification), 2 features, 3 golden vectors reproduced on "+engine) {
			t.Errorf("validate on %s: exit %d\n%s%s", engine, code, out, errOut)
		}
	}
}

// TestModelImportRefusals: each mistake an importer makes is named with
// the flag or spec key that fixes it, and nothing is written.
func TestModelImportRefusals(t *testing.T) {
	e := loadExport(t, "logreg_multiclass")
	names := featureNames(e.Features)
	feats := strings.Join(names, ",")
	good := writeCSV(t, names, e.Input)
	root, _ := testenv.Root()
	zipmap := filepath.Join(root, "models", "testdata", "skl2onnx", "zipmap.onnx")
	regressor := loadExport(t, "ridge")
	lines := strings.Split(strings.TrimSpace(string(must(os.ReadFile(good)))), "\n")
	short := writeFile(t, "short.csv", strings.Join(lines[:2], "\n")+"\n1,2,3,4,5\n")
	text := writeFile(t, "text.csv", lines[0]+"\n1,2,abc,4,5,6\n")
	swapped := writeFile(t, "swapped.csv", "x.p1,x.p0,x.p2,x.p3,x.p4,x.p5\n"+strings.Join(lines[1:], "\n")+"\n")
	taken := t.TempDir()
	os.WriteFile(filepath.Join(taken, "keep"), nil, 0o644)

	for _, c := range []struct {
		name string
		args []string
		spec string
		code int
		want []string
	}{
		{"row width", []string{e.model, "--features", feats, "--data", short}, "", 1, []string{"--data", "line 3: 5 values, want 6"}},
		{"not a number", []string{e.model, "--features", feats, "--data", text}, "", 1, []string{"line 2, column 3 (x.p2)", `"abc" is not a finite number`}},
		{"columns swapped", []string{e.model, "--features", feats, "--data", swapped}, "", 1, []string{"another order"}},
		{"label count", []string{e.model, "--features", feats, "--labels", "ok,broken", "--data", good}, "", 1,
			[]string{"--labels: 2 labels", "probabilities gives 3 values"}},
		{"label count in the spec", []string{e.model, "--features", feats, "--data", good}, "outputs:\n  labels: [ok, broken]\n", 1,
			[]string{"spec.yaml: outputs.labels: 2 labels"}},
		{"zipmap", []string{zipmap, "--features", feats, "--data", good}, "", 1, []string{"output_probability", "{'zipmap': False}"}},
		{"unknown key", []string{e.model, "--data", good}, "features:\n  - {field: x, agg: p0}\noutputs:\n  scorez: probabilities\n", 1,
			[]string{"outputs.scorez (line 4): unknown key", "outputs takes scores, label, embedding, labels, threshold"}},
		{"unknown nested key", []string{e.model, "--data", good}, "inputs:\n  - kind: sequence\n    sequence: {fields: [a], stepz: 4}\n", 1,
			[]string{"inputs[0].sequence.stepz (line 3): unknown key"}},
		{"bad input section", []string{e.model, "--data", good}, "inputs:\n  - kind: sequence\n", 1, []string{"inputs[0]: exactly one of features"}},
		{"feature count", []string{e.model, "--features", "x.p0,x.p1", "--data", good}, "", 1, []string{"takes 6 values per row, the manifest lists 2 features"}},
		{"no features", []string{e.model, "--data", good}, "", 2, []string{"--features FIELD.AGG", "input X is FLOAT [?, 6]"}},
		{"no task", []string{regressor.model, "--features", feats, "--data", good}, "", 2, []string{"--task"}},
		{"features leave out the spec's", []string{e.model, "--features", "x.p0,x.p1,x.p2,x.p3,x.p4", "--data", good},
			"features:\n  - {field: x, agg: p5, mean: 1, std: 2}\n", 2, []string{"--features leaves out", "features[0] (x.p5)"}},
		{"no data", []string{e.model, "--features", feats}, "", 2, []string{"--data X.csv is required"}},
		{"out taken", []string{e.model, "--features", feats, "--data", good, "--out", taken}, "", 2, []string{"exists and is not empty"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "pkg")
			args := append([]string{"model", "import", "--engine", "go", "--out", out}, c.args...)
			if c.spec != "" {
				args = append(args, "--spec", writeFile(t, "spec.yaml", c.spec))
			}
			code, stdout, errOut := run(args...)
			if code != c.code {
				t.Errorf("exit %d, want %d\n%s%s", code, c.code, stdout, errOut)
			}
			for _, w := range c.want {
				if !strings.Contains(errOut, w) {
					t.Errorf("stderr lacks %q: %s", w, errOut)
				}
			}
			if _, err := os.Stat(out); !os.IsNotExist(err) {
				t.Errorf("a refused import wrote %s", out)
			}
		})
	}
	// model run reads CSV with the same checks.
	dir := filepath.Join(t.TempDir(), "pkg")
	if code, _, errOut := run("model", "import", e.model, "--out", dir, "--features", feats, "--data", good, "--engine", "go"); code != 0 {
		t.Fatal(errOut)
	}
	if code, _, errOut := run("model", "run", dir, "--data", short, "--engine", "go"); code != 1 || !strings.Contains(errOut, "line 3: 5 values, want 6") {
		t.Errorf("run, short row: exit %d, stderr %q", code, errOut)
	}
	if code, _, errOut := run("model", "run", dir, "--data", good, "--engine", "go", "-o", "yaml"); code != 2 || !strings.Contains(errOut, "-o must be csv or json") {
		t.Errorf("run -o yaml: exit %d, stderr %q", code, errOut)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
