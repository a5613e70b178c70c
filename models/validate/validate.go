// Package validate checks a model package end to end before anyone ships
// or loads it: the manifest, the ONNX graph, that the graph's input and
// output match the manifest's feature spec and outputs, and that the
// golden vectors reproduce on a real engine.
package validate

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/outpost-edge/outpost/models/manifest"
	"github.com/outpost-edge/outpost/models/onnx"
)

// ErrMismatch means the graph does not fit its manifest.
var ErrMismatch = errors.New("model does not match its manifest")

// Runner runs a loaded model: an ONNX Runtime session or the pure-Go
// engine.
type Runner interface {
	RunFeeds(feeds []onnx.Feed) ([]float32, error)
	Close() error
}

// Report is what a valid package looks like.
type Report struct {
	Manifest *manifest.Manifest `json:"manifest"`
	Model    *onnx.Info         `json:"model"`
	// MaxAbsError is the largest difference from a golden output.
	MaxAbsError float64 `json:"max_abs_error"`
}

// Package validates the package in dir; open loads the model for the
// golden vectors, serving the graph's default scores output
// (onnx.ScoresOutput with no name). A manifest that names another scores
// output needs PackageFor.
func Package(dir string, open func(model []byte) (Runner, error)) (*Report, error) {
	return PackageFor(dir, func(model []byte, scores string) (Runner, error) {
		info, err := onnx.Inspect(model)
		if err != nil {
			return nil, err
		}
		if def, err := onnx.ScoresOutput(info.Outputs, ""); err != nil || def.Name != scores {
			return nil, fmt.Errorf("%w: the manifest's scores output %s is not the graph's default; validate with an engine that selects it (PackageFor)", ErrMismatch, scores)
		}
		return open(model)
	})
}

// PackageFor validates the package in dir; open loads the model to serve
// the named scores output.
func PackageFor(dir string, open func(model []byte, scores string) (Runner, error)) (*Report, error) {
	m, model, err := manifest.Load(dir) // schema and sha256
	if err != nil {
		return nil, err
	}
	info, err := onnx.Inspect(model)
	if err != nil {
		return nil, err
	}
	if err := Fits(m, info); err != nil {
		return nil, err
	}
	scores, _ := onnx.ScoresOutput(info.Outputs, m.Outputs.Scores) // Fits found it
	r, err := open(model, scores.Name)
	if err != nil {
		return nil, fmt.Errorf("validate: load %s: %w", manifest.ModelFile, err)
	}
	defer r.Close()
	worst, err := m.CheckGolden(Rows(m, info, r))
	if err != nil {
		return nil, err
	}
	return &Report{Manifest: m, Model: info, MaxAbsError: worst}, nil
}

// Fits checks that the graph takes [N, len(features)] floats and that its
// outputs fit the manifest's roles: every output is a tensor; the scores
// output (outputs.scores, or the graph's only float output) gives [N, k]
// floats, with k the number of labels when the manifest names them (or 1
// with two labels: a score and its threshold) and the length of every
// golden output; a named label output is int64 or string, [N] or [N, 1];
// a named embedding is float [N, d].
func Fits(m *manifest.Manifest, info *onnx.Info) error {
	for _, o := range info.Outputs {
		if o.Kind != "" {
			return fmt.Errorf("%w: output %s is a %s, not a tensor; export without ZipMap "+
				"(skl2onnx: to_onnx(model, X, options={id(model): {'zipmap': False}})) so that probabilities are a float tensor", ErrMismatch, o.Name, o.Kind)
		}
	}
	if err := fitsInputs(m, info); err != nil {
		return err
	}
	out, err := onnx.ScoresOutput(info.Outputs, m.Outputs.Scores)
	if err != nil {
		return fmt.Errorf("%w: scores: %w", ErrMismatch, err)
	}
	if out.Type != "FLOAT" {
		return fmt.Errorf("%w: %s is %s, want FLOAT", ErrMismatch, out.Name, out.Type)
	}
	if len(out.Shape) != 2 {
		return fmt.Errorf("%w: %s has shape %v, want [batch, n]", ErrMismatch, out.Name, out.Shape)
	}
	k, err := strconv.Atoi(out.Shape[1])
	if err != nil {
		return fmt.Errorf("%w: output %s has no fixed width (%s)", ErrMismatch, out.Name, out.Shape[1])
	}
	// One label per column, or two for a single score read against the
	// threshold (below it, at or above it).
	if n := len(m.Outputs.Labels); n > 0 && n != k && (k != 1 || n != 2) {
		return fmt.Errorf("%w: output %s gives %d values, the manifest names %d labels", ErrMismatch, out.Name, k, n)
	}
	for i, g := range m.Golden {
		if len(g.Output) != k {
			return fmt.Errorf("%w: golden %d expects %d outputs, %s gives %d", ErrMismatch, i, len(g.Output), out.Name, k)
		}
	}
	if name := m.Outputs.Label; name != "" {
		l, err := onnx.ScoresOutput(info.Outputs, name) // finds it by name
		if err != nil {
			return fmt.Errorf("%w: label: %w", ErrMismatch, err)
		}
		if l.Type != "INT64" && l.Type != "STRING" && l.Type != "INT32" {
			return fmt.Errorf("%w: label output %s is %s, want INT64 or STRING", ErrMismatch, name, l.Type)
		}
		if len(l.Shape) > 2 || len(l.Shape) == 2 && l.Shape[1] != "1" {
			return fmt.Errorf("%w: label output %s has shape %v, want [batch] or [batch, 1]", ErrMismatch, name, l.Shape)
		}
	}
	if name := m.Outputs.Embedding; name != "" {
		e, err := onnx.ScoresOutput(info.Outputs, name)
		if err != nil {
			return fmt.Errorf("%w: embedding: %w", ErrMismatch, err)
		}
		if e.Type != "FLOAT" || len(e.Shape) != 2 {
			return fmt.Errorf("%w: embedding output %s is %s %v, want FLOAT [batch, d]", ErrMismatch, name, e.Type, e.Shape)
		}
	}
	return nil
}

// fitsInputs checks that the manifest feeds every graph input exactly
// once, each with its element type and a row of the shape its kind
// makes (a symbolic or unknown dim takes any size).
func fitsInputs(m *manifest.Manifest, info *onnx.Info) error {
	ins := m.InputList()
	if len(ins) == 1 && ins[0].Name == "" {
		if len(info.Inputs) != 1 {
			return fmt.Errorf("%w: the graph has %d inputs (%s), the manifest feeds one; name each in inputs[].name", ErrMismatch, len(info.Inputs), inputNames(info))
		}
		ins = []manifest.Input{ins[0]}
		ins[0].Name = info.Inputs[0].Name
	}
	for _, g := range info.Inputs {
		if !slices.ContainsFunc(ins, func(in manifest.Input) bool { return in.Name == g.Name }) {
			return fmt.Errorf("%w: graph input %s is not fed by the manifest's inputs", ErrMismatch, g.Name)
		}
	}
	for i, in := range ins {
		j := slices.IndexFunc(info.Inputs, func(t onnx.Tensor) bool { return t.Name == in.Name })
		if j < 0 {
			return fmt.Errorf("%w: inputs[%d] feeds %q, the graph's inputs are %s", ErrMismatch, i, in.Name, inputNames(info))
		}
		g := info.Inputs[j]
		if g.Type != in.ElemType() {
			return fmt.Errorf("%w: input %s is %s, the manifest's %s input gives %s", ErrMismatch, g.Name, g.Type, in.Kind, in.ElemType())
		}
		dims := in.Dims()
		if len(g.Shape) != 1+len(dims) {
			return fmt.Errorf("%w: input %s has shape %v, the manifest's %s input gives [batch %s]", ErrMismatch, g.Name, g.Shape, in.Kind, joinDims(dims))
		}
		for k, d := range dims {
			got, err := strconv.Atoi(g.Shape[1+k])
			if err != nil {
				continue // symbolic: any size
			}
			if got != d {
				if in.Kind == manifest.Aggregates {
					return fmt.Errorf("%w: input %s takes %d values per row, the manifest lists %d features", ErrMismatch, g.Name, got, d)
				}
				return fmt.Errorf("%w: input %s has shape %v, the manifest's %s input gives [batch %s]", ErrMismatch, g.Name, g.Shape, in.Kind, joinDims(dims))
			}
		}
	}
	return nil
}

func inputNames(info *onnx.Info) string {
	var n []string
	for _, t := range info.Inputs {
		n = append(n, t.Name)
	}
	return strings.Join(n, ", ")
}

func joinDims(d []int) string {
	var s []string
	for _, x := range d {
		s = append(s, strconv.Itoa(x))
	}
	return strings.Join(s, " ")
}

// FeedRunner is what Rows drives: either engine.
type FeedRunner interface {
	RunFeeds(feeds []onnx.Feed) ([]float32, error)
}

// Rows adapts an engine to rows laid out as golden vectors are: each
// row is every input's values concatenated in the manifest's order. It
// splits a batch into one feed per graph input, shaped [rows, dims...];
// a single input is fed without a copy. info names an unnamed v1 input.
func Rows(m *manifest.Manifest, info *onnx.Info, r FeedRunner) func(x []float32, width int) ([]float32, error) {
	ins := m.InputList()
	names := make([]string, len(ins))
	for i, in := range ins {
		names[i] = in.Name
		if in.Name == "" && len(info.Inputs) == 1 {
			names[i] = info.Inputs[0].Name
		}
	}
	return func(x []float32, width int) ([]float32, error) {
		if width != m.RowWidth() || width == 0 || len(x)%width != 0 {
			return nil, fmt.Errorf("%w: %d values are not rows of %d", ErrMismatch, len(x), m.RowWidth())
		}
		rows := len(x) / width
		feeds := make([]onnx.Feed, len(ins))
		off := 0
		for i, in := range ins {
			dims := in.Dims()
			shape := make([]int64, 0, 1+len(dims))
			shape = append(shape, int64(rows))
			for _, d := range dims {
				shape = append(shape, int64(d))
			}
			w := in.Width()
			data := x
			if len(ins) > 1 {
				data = make([]float32, 0, rows*w)
				for r := range rows {
					data = append(data, x[r*width+off:r*width+off+w]...)
				}
			}
			feeds[i] = onnx.Feed{Name: names[i], Shape: shape, Data: data}
			off += w
		}
		return r.RunFeeds(feeds)
	}
}
