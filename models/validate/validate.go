// Package validate checks a model package end to end before anyone ships
// or loads it: the manifest, the ONNX graph, that the graph's input and
// output match the manifest's feature spec and outputs, and that the
// golden vectors reproduce on a real engine.
package validate

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/outpost-edge/outpost/models/manifest"
	"github.com/outpost-edge/outpost/models/onnx"
)

// ErrMismatch means the graph does not fit its manifest.
var ErrMismatch = errors.New("model does not match its manifest")

// Runner runs a loaded model: an ONNX Runtime session or the pure-Go
// engine.
type Runner interface {
	Run(x []float32, features int) ([]float32, error)
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
// golden vectors.
func Package(dir string, open func(model []byte) (Runner, error)) (*Report, error) {
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
	r, err := open(model)
	if err != nil {
		return nil, fmt.Errorf("validate: load %s: %w", manifest.ModelFile, err)
	}
	defer r.Close()
	worst, err := m.CheckGolden(r.Run)
	if err != nil {
		return nil, err
	}
	return &Report{Manifest: m, Model: info, MaxAbsError: worst}, nil
}

// Fits checks that the graph takes [N, len(features)] floats and gives
// [N, k] floats, with k the number of labels when the manifest names them
// (or 1 with two labels: a score and its threshold) and the length of
// every golden output.
func Fits(m *manifest.Manifest, info *onnx.Info) error {
	if len(info.Inputs) != 1 || len(info.Outputs) != 1 {
		return fmt.Errorf("%w: the graph has %d inputs and %d outputs, want 1 and 1", ErrMismatch, len(info.Inputs), len(info.Outputs))
	}
	in, out := info.Inputs[0], info.Outputs[0]
	for _, t := range []onnx.Tensor{in, out} {
		if t.Type != "FLOAT" {
			return fmt.Errorf("%w: %s is %s, want FLOAT", ErrMismatch, t.Name, t.Type)
		}
		if len(t.Shape) != 2 {
			return fmt.Errorf("%w: %s has shape %v, want [batch, n]", ErrMismatch, t.Name, t.Shape)
		}
	}
	if got, want := in.Shape[1], strconv.Itoa(len(m.Features)); got != want {
		return fmt.Errorf("%w: input %s takes %s values per row, the manifest lists %s features", ErrMismatch, in.Name, got, want)
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
	return nil
}
