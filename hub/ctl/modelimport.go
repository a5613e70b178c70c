package ctl

import (
	"context"
	"encoding/csv"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/proto"

	"github.com/spf13/pflag"

	"github.com/outpost-edge/outpost/models/goengine"
	"github.com/outpost-edge/outpost/models/manifest"
	"github.com/outpost-edge/outpost/models/onnx"
	"github.com/outpost-edge/outpost/models/onnx/onnxpb"
	"github.com/outpost-edge/outpost/models/ort"
	"github.com/outpost-edge/outpost/models/validate"
)

// opener loads a model on one engine, serving the named scores output.
type opener func(model []byte, scores string) (validate.Runner, error)

// engineOpener is the engine --engine names; ONNX Runtime's library is
// found as the agent finds it unless lib names it.
func engineOpener(engine, lib string) (opener, error) {
	switch engine {
	case "onnxruntime":
		path, err := ort.FindLibrary(lib)
		if err != nil {
			return nil, fmt.Errorf("%w (or pass --engine go)", err)
		}
		if err := ort.Init(path); err != nil {
			return nil, err
		}
		return func(m []byte, scores string) (validate.Runner, error) {
			s, err := ort.NewSessionWith(m, ort.Options{Output: scores})
			if err != nil {
				return nil, err
			}
			return s, nil
		}, nil
	case "go":
		return func(m []byte, scores string) (validate.Runner, error) {
			e, err := goengine.LoadWith(m, goengine.Options{Output: scores})
			if err != nil {
				return nil, err
			}
			return e, nil
		}, nil
	}
	return nil, fmt.Errorf("%w: --engine must be onnxruntime or go, got %q", errUsage, engine)
}

// helpOr prints a command's flags for --help (and reports nil), or
// passes any other parse error on.
func helpOr(c *cli, fs *flag.FlagSet, line string, err error) error {
	if !errors.Is(err, flag.ErrHelp) {
		return err
	}
	fmt.Fprintf(c.out, "Usage: outpostctl %s\n\nFlags:\n", line)
	fs.SetOutput(c.out)
	fs.PrintDefaults()
	return nil
}

// importSpec is the YAML spec of `model import`: the manifest's own
// sections under their JSON keys (sha256 and golden are computed).
type importSpec struct {
	Name         string                `yaml:"name"`
	Version      int64                 `yaml:"version"`
	Parent       int64                 `yaml:"parent"`
	Task         string                `yaml:"task"`
	Features     []manifest.Feature    `yaml:"features"`
	Inputs       []manifest.Input      `yaml:"inputs"`
	Outputs      manifest.Outputs      `yaml:"outputs"`
	Quantization string                `yaml:"quantization"`
	Requirements manifest.Requirements `yaml:"requirements"`
	Metrics      map[string]float64    `yaml:"metrics"`
}

const importLine = "model import MODEL.onnx --out DIR --data X.csv [--spec spec.yaml] [--name N] [--version V] [--task anomaly|classification|regression] " +
	"[--features FIELD.AGG,...] [--scores OUT] [--label OUT] [--embedding OUT] [--labels a,b,...] [--threshold T] [--rows 16] [--tolerance 1e-4] [--engine onnxruntime|go] [--onnxruntime LIB]"

// modelImport makes a package from an ONNX file: the manifest from a
// spec and flags, golden vectors from sample rows run on an engine, then
// validates what it wrote on that engine.
func modelImport(fs *flag.FlagSet) runFunc {
	out := fs.String("out", "", "package directory to write (must not exist, or be empty)")
	specPath := fs.String("spec", "", "YAML spec: the manifest's keys (name, version, task, features or inputs, outputs, ...); flags override it")
	name := fs.String("name", "", "model name (default: the file name without .onnx)")
	version := fs.Int64("version", 0, "model version (default 1)")
	task := fs.String("task", "", "anomaly, classification or regression (default: classification when the graph has a label output)")
	features := fs.String("features", "", "comma-separated FIELD.AGG list for a one-input aggregates model (mean 0, std 1 unless the spec gives them)")
	scores := fs.String("scores", "", "scores output (default: the graph's only float output)")
	label := fs.String("label", "", "the exporter's label output (default: the graph's only INT64/STRING output)")
	embedding := fs.String("embedding", "", "embedding output, if any")
	labels := fs.String("labels", "", "comma-separated class names, one per scores column (default: the graph classifier's class labels)")
	threshold := fs.Float64("threshold", 0, "anomaly or one-score classifier: a score at or above it is positive")
	data := fs.String("data", "", "CSV with a header; each row is one model input row (every input's values in order)")
	rows := fs.Int("rows", 16, "golden vectors to take from the first rows of --data")
	tolerance := fs.Float64("tolerance", 1e-4, "golden tolerance (scaled by a row's largest output where that is above 1)")
	engine := fs.String("engine", "onnxruntime", "engine for the golden vectors and the validation: onnxruntime or go")
	lib := fs.String("onnxruntime", "", "path of libonnxruntime.so.1 (default: $"+ort.EnvLibrary+", lib/ next to outpostctl, /usr/lib/outpost)")
	return func(_ context.Context, c *cli, args []string) error {
		path, err := oneArg(fs, args, "MODEL.onnx")
		if err != nil {
			return helpOr(c, fs, importLine, err)
		}
		set := map[string]bool{}
		c.flags.Visit(func(f *pflag.Flag) { set[f.Name] = true })
		switch {
		case *out == "":
			return fmt.Errorf("%w: --out DIR is required", errUsage)
		case *data == "":
			return fmt.Errorf("%w: --data X.csv is required: golden vectors are the model's outputs for sample rows", errUsage)
		case *rows < 1:
			return fmt.Errorf("%w: --rows must be at least 1", errUsage)
		case *tolerance <= 0:
			return fmt.Errorf("%w: --tolerance must be above 0", errUsage)
		}
		if err := emptyOrAbsent(*out); err != nil {
			return err
		}
		open, err := engineOpener(*engine, *lib)
		if err != nil {
			return err
		}
		model, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		info, err := onnx.Inspect(model)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		// A ZipMap export is refused before anything else: no spec fixes it.
		for _, o := range info.Outputs {
			if o.Kind != "" {
				return fmt.Errorf("%s: %w", path, validate.Fits(&manifest.Manifest{}, info))
			}
		}

		var spec importSpec
		if *specPath != "" {
			if err := readSpec(*specPath, &spec); err != nil {
				return err
			}
		}
		m := &manifest.Manifest{Name: spec.Name, Version: spec.Version, Parent: spec.Parent, Task: spec.Task,
			Features: spec.Features, Inputs: spec.Inputs, Outputs: spec.Outputs, Quantization: spec.Quantization,
			Requirements: spec.Requirements, Metrics: spec.Metrics}
		// Where each setting came from, for the errors.
		labelsFrom := *specPath + ": outputs.labels"
		if set["name"] {
			m.Name = *name
		}
		if set["version"] {
			m.Version = *version
		}
		if set["task"] {
			m.Task = *task
		}
		if set["scores"] {
			m.Outputs.Scores = *scores
		}
		if set["label"] {
			m.Outputs.Label = *label
		}
		if set["embedding"] {
			m.Outputs.Embedding = *embedding
		}
		if set["labels"] {
			m.Outputs.Labels, labelsFrom = splitList(*labels), "--labels"
		}
		if set["threshold"] {
			m.Outputs.Threshold = *threshold
		}
		if set["features"] {
			if m.Features, err = featureFlag(*features, spec.Features, len(spec.Inputs) > 0, *specPath); err != nil {
				return err
			}
		}
		if m.Name == "" {
			m.Name = strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
		}
		if m.Version == 0 {
			m.Version = 1
		}
		if err := importDefaults(m, info, model, labelsFrom == "--labels" || len(m.Outputs.Labels) > 0); err != nil {
			return err
		}
		if len(m.Features) == 0 && len(m.Inputs) == 0 {
			return fmt.Errorf("%w: no feature spec: give --features FIELD.AGG,... (%s) or features or inputs in --spec", errUsage, inputShapes(info))
		}
		if m.Task == "" {
			return fmt.Errorf("%w: --task (or task in --spec): anomaly, classification or regression (the graph has no label output to call it a classifier)", errUsage)
		}
		if err := fitsWithPaths(m, info, labelsFrom); err != nil {
			return err
		}

		width := m.RowWidth()
		x, header, err := readCSV(*data, width, m)
		if err != nil {
			return err
		}
		n := min(*rows, len(x)/width)
		r, err := open(model, scoresName(m, info))
		if err != nil {
			return fmt.Errorf("load %s on %s: %w", path, *engine, err)
		}
		y, err := validate.Rows(m, info, r)(x[:n*width], width)
		r.Close()
		if err != nil {
			return fmt.Errorf("run --data's first %d rows on %s: %w", n, *engine, err)
		}
		k := len(y) / n
		if k == 0 || len(y) != n*k {
			return fmt.Errorf("run --data's first %d rows on %s: %d outputs", n, *engine, len(y))
		}
		for i := range n {
			g := manifest.Golden{Input: x[i*width : (i+1)*width], Output: y[i*k : (i+1)*k]}
			big := 1.0
			for _, v := range g.Output {
				big = max(big, math.Abs(float64(v)))
			}
			// Relative above 1: float32 keeps about 7 digits, so a regressor's
			// outputs in the hundreds differ between engines by more than 1e-4.
			g.Tolerance = *tolerance * big
			m.Golden = append(m.Golden, g)
		}

		// Write beside --out, validate, then move into place: a package that
		// fails its own validation is never left behind.
		parent := filepath.Dir(filepath.Clean(*out))
		if err := os.MkdirAll(parent, 0o755); err != nil {
			return err
		}
		tmp, err := os.MkdirTemp(parent, ".import-*")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		if err := manifest.Write(tmp, m, model); err != nil {
			return err
		}
		rep, err := validate.PackageFor(tmp, open)
		if err != nil {
			return fmt.Errorf("the imported package does not validate on %s: %w", *engine, err)
		}
		if err := os.Remove(*out); err != nil && !os.IsNotExist(err) {
			return err
		}
		if err := os.Rename(tmp, *out); err != nil {
			return err
		}
		return importSummary(c.out, m, info, *out, *data, header, *engine, rep.MaxAbsError)
	}
}

// emptyOrAbsent refuses to import over an existing package.
func emptyOrAbsent(dir string) error {
	ents, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("--out %s: %w", dir, err)
	}
	if len(ents) > 0 {
		return fmt.Errorf("%w: --out %s exists and is not empty", errUsage, dir)
	}
	return nil
}

// readSpec decodes a YAML spec; an unknown key is an error with its path.
func readSpec(path string, spec *importSpec) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("--spec: %w", err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return fmt.Errorf("--spec %s: %w", path, err)
	}
	if len(doc.Content) == 0 {
		return nil // an empty spec: flags and defaults only
	}
	if err := knownKeys(doc.Content[0], reflect.TypeOf(*spec), ""); err != nil {
		return fmt.Errorf("--spec %s: %w", path, err)
	}
	// KnownFields again as the decoder's own check (and its type errors).
	dec := yaml.NewDecoder(strings.NewReader(string(raw)))
	dec.KnownFields(true)
	if err := dec.Decode(spec); err != nil {
		return fmt.Errorf("--spec %s: %s", path, strings.ReplaceAll(err.Error(), "\n ", ""))
	}
	return nil
}

// knownKeys walks a YAML mapping beside the Go type it decodes into and
// names the first key the type lacks by its path (outputs.scorez), with
// the keys it takes: yaml's own error names only a line and a Go type.
func knownKeys(n *yaml.Node, t reflect.Type, at string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case n.Kind == yaml.SequenceNode && t.Kind() == reflect.Slice:
		for i, e := range n.Content {
			if err := knownKeys(e, t.Elem(), fmt.Sprintf("%s[%d]", at, i)); err != nil {
				return err
			}
		}
	case n.Kind == yaml.MappingNode && t.Kind() == reflect.Struct:
		keys := map[string]reflect.Type{}
		var names []string
		for i := range t.NumField() {
			f := t.Field(i)
			k, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if k == "" {
				k = strings.ToLower(f.Name)
			}
			keys[k] = f.Type
			names = append(names, k)
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i].Value
			path := k
			if at != "" {
				path = at + "." + k
			}
			ft, ok := keys[k]
			if !ok {
				where := "the spec"
				if at != "" {
					where = at
				}
				return fmt.Errorf("%s (line %d): unknown key; %s takes %s", path, n.Content[i].Line, where, strings.Join(names, ", "))
			}
			if err := knownKeys(n.Content[i+1], ft, path); err != nil {
				return err
			}
		}
	}
	return nil
}

// featureFlag reads --features: FIELD.AGG names in order, normalised as
// the spec's feature of the same name says, else mean 0 and std 1.
func featureFlag(list string, fromSpec []manifest.Feature, specInputs bool, specPath string) ([]manifest.Feature, error) {
	if specInputs {
		return nil, fmt.Errorf("%w: --features is for a one-input aggregates model; %s has inputs (give the features there)", errUsage, specPath)
	}
	var out []manifest.Feature
	for i, s := range splitList(list) {
		j := strings.LastIndexByte(s, '.')
		if j <= 0 || j == len(s)-1 {
			return nil, fmt.Errorf("%w: --features[%d] %q: want FIELD.AGG (temp.mean)", errUsage, i, s)
		}
		f := manifest.Feature{Field: s[:j], Agg: s[j+1:], Std: 1}
		if k := slices.IndexFunc(fromSpec, func(g manifest.Feature) bool { return g.Field == f.Field && g.Agg == f.Agg }); k >= 0 {
			f = fromSpec[k]
		}
		out = append(out, f)
	}
	for i, g := range fromSpec {
		if !slices.ContainsFunc(out, func(f manifest.Feature) bool { return f.Field == g.Field && f.Agg == g.Agg }) {
			return nil, fmt.Errorf("%w: --features leaves out %s: features[%d] (%s.%s); list it or drop it from the spec", errUsage, specPath, i, g.Field, g.Agg)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: --features is empty", errUsage)
	}
	return out, nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// importDefaults names the scores and label outputs and the task where
// nothing did, and takes a classifier's labels from the graph.
func importDefaults(m *manifest.Manifest, info *onnx.Info, model []byte, haveLabels bool) error {
	o := &m.Outputs
	if o.Scores == "" {
		// Left empty when there is no one choice: Fits says why (a ZipMap
		// output, two float outputs).
		if s, err := onnx.ScoresOutput(info.Outputs, ""); err == nil && s.Kind == "" {
			o.Scores = s.Name
		}
	}
	if o.Label == "" {
		var ints []string
		for _, t := range info.Outputs {
			if t.Kind == "" && t.Name != o.Scores && (t.Type == "INT64" || t.Type == "STRING" || t.Type == "INT32") && len(t.Shape) <= 2 {
				ints = append(ints, t.Name)
			}
		}
		if len(ints) == 1 {
			o.Label = ints[0]
		}
	}
	if m.Task == "" && o.Label != "" {
		m.Task = "classification"
	}
	if m.Task == "classification" && !haveLabels {
		k := scoresWidth(info, o.Scores)
		if cl := classLabels(model); len(cl) > 0 && (len(cl) == k || k == 1 && len(cl) == 2) {
			o.Labels = cl
		}
	}
	return nil
}

// classLabels are the class labels of the graph's one ai.onnx.ml
// classifier node (LinearClassifier, TreeEnsembleClassifier, ...), the
// classes the exporter's label output names: nil if there is not one.
func classLabels(model []byte) []string {
	var mp onnxpb.ModelProto
	if proto.Unmarshal(model, &mp) != nil {
		return nil
	}
	var found []string
	n := 0
	for _, node := range mp.GetGraph().GetNode() {
		if node.GetDomain() != "ai.onnx.ml" || !strings.HasSuffix(node.GetOpType(), "Classifier") {
			continue
		}
		n++
		for _, a := range node.GetAttribute() {
			switch a.GetName() {
			case "classlabels_strings":
				for _, s := range a.GetStrings() {
					found = append(found, string(s))
				}
			case "classlabels_ints", "classlabels_int64s":
				for _, v := range a.GetInts() {
					found = append(found, strconv.FormatInt(v, 10))
				}
			}
		}
	}
	if n != 1 {
		return nil
	}
	return found
}

// scoresWidth is the scores output's fixed width, or 0.
func scoresWidth(info *onnx.Info, name string) int {
	s, err := onnx.ScoresOutput(info.Outputs, name)
	if err != nil || len(s.Shape) != 2 {
		return 0
	}
	k, _ := strconv.Atoi(s.Shape[1])
	return k
}

func scoresName(m *manifest.Manifest, info *onnx.Info) string {
	s, _ := onnx.ScoresOutput(info.Outputs, m.Outputs.Scores)
	return s.Name
}

// fitsWithPaths checks the manifest against the graph, naming the flag
// or spec key to change for the mistakes an importer makes.
func fitsWithPaths(m *manifest.Manifest, info *onnx.Info, labelsFrom string) error {
	// The spec first: Fits reads each input's dims, which a malformed
	// input section lacks. Its paths are the spec's keys.
	if err := m.ValidateSpec(); err != nil {
		return err
	}
	if k := scoresWidth(info, m.Outputs.Scores); k > 0 {
		if n := len(m.Outputs.Labels); n > 0 && n != k && (k != 1 || n != 2) {
			return fmt.Errorf("%w: %s: %d labels, the scores output %s gives %d values a row (one label per value, or two for one score)",
				validate.ErrMismatch, labelsFrom, n, scoresName(m, info), k)
		}
	}
	if err := validate.Fits(m, info); err != nil {
		return fmt.Errorf("%w (set --features/--scores/--label or the spec's features, inputs, outputs)", err)
	}
	return nil
}

func inputShapes(info *onnx.Info) string {
	var s []string
	for _, t := range info.Inputs {
		s = append(s, fmt.Sprintf("the graph's input %s is %s [%s]", t.Name, t.Type, strings.Join(t.Shape, ", ")))
	}
	return strings.Join(s, "; ")
}

// readCSV reads rows of width values under a header. For a features-only
// manifest a header that names the features in another order is refused:
// the columns would feed the wrong inputs.
func readCSV(path string, width int, m *manifest.Manifest) ([]float32, []string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("--data: %w", err)
	}
	defer f.Close()
	cr := csv.NewReader(f)
	cr.FieldsPerRecord = -1 // widths are checked here, with the row's line
	cr.TrimLeadingSpace = true
	cr.ReuseRecord = true
	header, err := cr.Read()
	if err == io.EOF {
		return nil, nil, fmt.Errorf("--data %s is empty (want a header, then rows)", path)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("--data %s: %w", path, err)
	}
	header = slices.Clone(header)
	if len(header) != width {
		return nil, nil, fmt.Errorf("--data %s: the header has %d columns, a row of the model takes %d (%s)", path, len(header), width, rowParts(m))
	}
	if fs := m.InputList(); len(fs) == 1 && fs[0].Kind == manifest.Aggregates {
		var names []string
		for _, f := range fs[0].Features {
			names = append(names, f.Field+"."+f.Agg)
		}
		if !slices.Equal(names, header) && slices.Equal(slices.Sorted(slices.Values(names)), slices.Sorted(slices.Values(header))) {
			return nil, nil, fmt.Errorf("--data %s: the header names the features in another order than the manifest (%s)", path, strings.Join(names, ","))
		}
	}
	var x []float32
	for {
		rec, err := cr.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, nil, fmt.Errorf("--data %s: %w", path, err)
		}
		line, _ := cr.FieldPos(0)
		if len(rec) != width {
			return nil, nil, fmt.Errorf("--data %s: line %d: %d values, want %d (%s)", path, line, len(rec), width, rowParts(m))
		}
		for j, cell := range rec {
			v, err := strconv.ParseFloat(strings.TrimSpace(cell), 32)
			if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
				return nil, nil, fmt.Errorf("--data %s: line %d, column %d (%s): %q is not a finite number", path, line, j+1, header[j], cell)
			}
			x = append(x, float32(v))
		}
	}
	if len(x) == 0 {
		return nil, nil, fmt.Errorf("--data %s has no rows after the header", path)
	}
	return x, header, nil
}

// rowParts says what a row holds: each input and its values.
func rowParts(m *manifest.Manifest) string {
	var s []string
	for _, in := range m.InputList() {
		name := in.Name
		if name == "" {
			name = "the input"
		}
		if in.Kind == manifest.Aggregates {
			s = append(s, fmt.Sprintf("%s: %d features", name, in.Width()))
		} else {
			s = append(s, fmt.Sprintf("%s: %s %v", name, in.Kind, in.Dims()))
		}
	}
	return strings.Join(s, ", ")
}

func importSummary(w io.Writer, m *manifest.Manifest, info *onnx.Info, out, data string, header []string, engine string, worst float64) error {
	fmt.Fprintf(w, "imported %s v%d (%s) into %s\n", m.Name, m.Version, m.Task, out)
	for _, in := range m.InputList() {
		name := in.Name
		if name == "" {
			name = info.Inputs[0].Name
		}
		what := fmt.Sprintf("%s %v", in.Kind, in.Dims())
		if in.Kind == manifest.Aggregates {
			var fs []string
			for _, f := range in.Features {
				fs = append(fs, f.Field+"."+f.Agg)
			}
			what = fmt.Sprintf("%d features: %s", len(fs), strings.Join(fs, ", "))
		}
		fmt.Fprintf(w, "  input      %s ← %s\n", name, what)
	}
	o := m.Outputs
	fmt.Fprintf(w, "  scores     %s", o.Scores)
	if len(o.Labels) > 0 {
		fmt.Fprintf(w, " (labels %s)", strings.Join(o.Labels, ", "))
	}
	fmt.Fprintln(w)
	if o.Label != "" {
		fmt.Fprintf(w, "  label      %s (the exporter's; the agent derives labels from the scores)\n", o.Label)
	}
	if o.Embedding != "" {
		fmt.Fprintf(w, "  embedding  %s\n", o.Embedding)
	}
	_, err := fmt.Fprintf(w, "  golden     %d rows of %s (columns %s), validated on %s (max abs error %.3g)\n",
		len(m.Golden), data, strings.Join(header, ","), engine, worst)
	return err
}
