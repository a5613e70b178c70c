// Package manifest is the model package format: model.onnx plus
// manifest.json (DESIGN §3). The manifest's feature spec is the one
// definition of how a window result becomes a model input, used by the
// agent at inference and by the hub's trainer, so both compute the same
// vector.
package manifest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
)

// File names inside a model package directory.
const (
	ModelFile    = "model.onnx"
	ManifestFile = "manifest.json"
)

// Manifest describes one model version. outpostctl model import reads
// its sections from YAML too: yaml's default key (the lowercased field
// name) is the JSON key, and a yaml tag says so where it is not.
type Manifest struct {
	Name         string             `json:"name"`
	Version      int64              `json:"version"`
	Parent       int64              `json:"parent,omitempty"`
	Task         string             `json:"task"`               // anomaly, classification or regression
	Features     []Feature          `json:"features,omitempty"` // v1: one aggregates input
	Inputs       []Input            `json:"inputs,omitempty"`   // v2: named graph inputs of any kind
	Outputs      Outputs            `json:"outputs"`
	Quantization string             `json:"quantization,omitempty"` // none, int8-static, int8-dynamic, fp16
	Requirements Requirements       `json:"requirements"`
	Metrics      map[string]float64 `json:"metrics,omitempty"`
	SHA256       string             `json:"sha256"`
	Golden       []Golden           `json:"golden"`
}

// Feature is one model input: an aggregation of a window field,
// normalised as (x - mean) / std.
type Feature struct {
	Field string  `json:"field"`
	Agg   string  `json:"agg"`
	Mean  float64 `json:"mean"`
	Std   float64 `json:"std"`
}

// Outputs say which graph outputs the agent reads, by role, and how to
// read the scores. A graph with one output, or one float output, needs no
// names: that output is the scores (onnx.ScoresOutput).
type Outputs struct {
	// Scores names the float [N, k] output with scores or probabilities.
	Scores string `json:"scores,omitempty"`
	// Label names an exporter's predicted-label output (int64 or string,
	// [N] or [N, 1]), if the graph has one. Validation checks it exists;
	// the agent derives labels from the scores and Labels below.
	Label string `json:"label,omitempty"`
	// Embedding names a float [N, d] output, if the graph has one.
	Embedding string   `json:"embedding,omitempty"`
	Labels    []string `json:"labels,omitempty"`    // one per output column, or two (below, at or above the threshold) for one score
	Threshold float64  `json:"threshold,omitempty"` // anomaly/binary: a score at or above it is positive
}

// Requirements gate where a model may run.
type Requirements struct {
	Arch            []string `json:"arch,omitempty"`        // amd64, arm64, arm; empty: any
	Accelerator     string   `json:"accelerator,omitempty"` // cpu, cuda, ...
	MinAgentVersion string   `json:"min_agent_version,omitempty" yaml:"min_agent_version,omitempty"`
}

// Golden is a known input and its expected output.
type Golden struct {
	Input     []float32 `json:"input"`
	Output    []float32 `json:"output"`
	Tolerance float64   `json:"tolerance"`
}

// Validate checks the manifest on its own.
func (m *Manifest) Validate() error {
	if err := m.ValidateSpec(); err != nil {
		return err
	}
	switch {
	case len(m.SHA256) != 64:
		return fmt.Errorf("%w: sha256 must be 64 hex digits", ErrInvalid)
	case len(m.Golden) == 0:
		return fmt.Errorf("%w: no golden vectors", ErrInvalid)
	}
	width := m.RowWidth()
	for i, g := range m.Golden {
		if len(g.Input) != width || len(g.Output) == 0 || g.Tolerance < 0 {
			return fmt.Errorf("%w: golden vector %d: %d input values for a row of %d", ErrInvalid, i, len(g.Input), width)
		}
	}
	return nil
}

// ValidateSpec checks what a package's author writes: everything but the
// sha256 and the golden vectors, which outpostctl model import computes
// once the spec holds.
func (m *Manifest) ValidateSpec() error {
	switch {
	case m.Name == "":
		return fmt.Errorf("%w: name is empty", ErrInvalid)
	case m.Version < 1:
		return fmt.Errorf("%w: version must be at least 1", ErrInvalid)
	case m.Task != "anomaly" && m.Task != "classification" && m.Task != "regression":
		return fmt.Errorf("%w: task %q (anomaly, classification or regression)", ErrInvalid, m.Task)
	case len(m.Features) == 0 && len(m.Inputs) == 0:
		return fmt.Errorf("%w: no features or inputs", ErrInvalid)
	}
	for i, f := range m.Features {
		if f.Field == "" || f.Agg == "" || f.Std < 0 || math.IsNaN(f.Mean) || math.IsNaN(f.Std) {
			return fmt.Errorf("%w: feature %d needs field, agg and std ≥ 0", ErrInvalid, i)
		}
	}
	if err := m.validateInputs(); err != nil {
		return err
	}
	o := m.Outputs
	if o.Scores != "" && (o.Scores == o.Label || o.Scores == o.Embedding) || o.Label != "" && o.Label == o.Embedding {
		return fmt.Errorf("%w: outputs: one graph output holds two roles (scores %q, label %q, embedding %q)", ErrInvalid, o.Scores, o.Label, o.Embedding)
	}
	return nil
}

// Load reads a package directory, validates the manifest and checks the
// ONNX file against its sha256.
func Load(dir string) (*Manifest, []byte, error) {
	raw, err := os.ReadFile(filepath.Join(dir, ManifestFile))
	if err != nil {
		return nil, nil, fmt.Errorf("manifest: %w", err)
	}
	m, err := Parse(raw)
	if err != nil {
		return nil, nil, err
	}
	model, err := os.ReadFile(filepath.Join(dir, ModelFile))
	if err != nil {
		return nil, nil, fmt.Errorf("manifest: %w", err)
	}
	if got := Digest(model); got != m.SHA256 {
		return nil, nil, fmt.Errorf("%w: %s has sha256 %s, manifest says %s", ErrChecksum, ModelFile, got, m.SHA256)
	}
	return m, model, nil
}

// Parse decodes and validates manifest.json. Unknown fields are errors:
// a misspelt key must not silently drop a normalisation.
func Parse(raw []byte) (*Manifest, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var m Manifest
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrInvalid, ManifestFile, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: %s: data after the manifest object", ErrInvalid, ManifestFile)
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

// Write stores a package: the model, and the manifest with its digest.
func Write(dir string, m *Manifest, model []byte) error {
	m.SHA256 = Digest(model)
	if err := m.Validate(); err != nil {
		return err
	}
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("manifest: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("manifest: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, ModelFile), model, 0o644); err != nil {
		return fmt.Errorf("manifest: %w", err)
	}
	return os.WriteFile(filepath.Join(dir, ManifestFile), data, 0o644)
}

// Digest is the hex sha256 the manifest records.
func Digest(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// Vector appends the normalised feature vector of a v1 manifest (or of
// its aggregates input) to dst. lookup returns an aggregation of a field;
// a missing one is an error, never a silent zero.
func (m *Manifest) Vector(lookup func(field, agg string) (float64, bool), dst []float32) ([]float32, error) {
	return Vector(m.Features, lookup, dst)
}

// Vector appends the normalised aggregates of features to dst.
func Vector(features []Feature, lookup func(field, agg string) (float64, bool), dst []float32) ([]float32, error) {
	for _, f := range features {
		x, ok := lookup(f.Field, f.Agg)
		if !ok || math.IsNaN(x) || math.IsInf(x, 0) {
			return dst, fmt.Errorf("%w: %s.%s", ErrFeature, f.Field, f.Agg)
		}
		std := f.Std
		if std == 0 {
			std = 1
		}
		dst = append(dst, float32((x-f.Mean)/std))
	}
	return dst, nil
}

// CheckGolden runs the golden vectors (rows of RowWidth values: every
// input's row, in order) as one batch, then row by row
// (DESIGN §3: a graph that works only on one row, or whose rows change
// each other's answers, must fail), and compares the outputs within each
// vector's tolerance; it returns the largest absolute error seen. A NaN
// output always fails.
func (m *Manifest) CheckGolden(run func(x []float32, features int) ([]float32, error)) (float64, error) {
	features := m.RowWidth()
	var batch []float32
	want := 0
	for _, g := range m.Golden {
		batch = append(batch, g.Input...)
		want += len(g.Output)
	}
	out, err := run(batch, features)
	if err != nil {
		return 0, fmt.Errorf("%w: the %d vectors as one batch: %w", ErrGolden, len(m.Golden), err)
	}
	if len(out) != want {
		return 0, fmt.Errorf("%w: the %d vectors as one batch gave %d outputs, want %d", ErrGolden, len(m.Golden), len(out), want)
	}
	var worst float64
	at := 0
	for i, g := range m.Golden {
		d, err := compare(i, "in the batch", out[at:at+len(g.Output)], g)
		if err != nil {
			return worst, err
		}
		worst, at = max(worst, d), at+len(g.Output)
	}
	for i, g := range m.Golden {
		out, err := run(g.Input, features)
		if err != nil {
			return worst, fmt.Errorf("%w: golden %d alone: %w", ErrGolden, i, err)
		}
		d, err := compare(i, "alone", out, g)
		if err != nil {
			return worst, err
		}
		worst = max(worst, d)
	}
	return worst, nil
}

// compare checks one golden vector's outputs; how says whether it ran in
// the batch or alone.
func compare(i int, how string, out []float32, g Golden) (float64, error) {
	if len(out) != len(g.Output) {
		return 0, fmt.Errorf("%w: golden %d %s: %d outputs, want %d", ErrGolden, i, how, len(out), len(g.Output))
	}
	var worst float64
	for j := range out {
		d := math.Abs(float64(out[j] - g.Output[j]))
		if d > g.Tolerance || math.IsNaN(float64(out[j])) {
			return worst, fmt.Errorf("%w: golden %d %s: output %d = %v, want %v ± %v", ErrGolden, i, how, j, out[j], g.Output[j], g.Tolerance)
		}
		worst = max(worst, d)
	}
	return worst, nil
}
