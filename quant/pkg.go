package quant

import (
	"errors"
	"fmt"

	"github.com/outpost-edge/outpost/models/manifest"
)

// ErrAccuracy means quantization cost more accuracy than allowed.
var ErrAccuracy = errors.New("quant: accuracy drop beyond the bound")

// PackageOptions quantize a whole model package.
type PackageOptions struct {
	Options
	// Rows calibrate (static) and evaluate; empty uses the golden inputs.
	Rows   [][]float32
	Labels []int // optional, one per row
	// MaxDrop refuses a result that loses more accuracy (0.01: one point).
	MaxDrop float64
	// Version of the new package; 0 gives the input's version + 1. The
	// input version becomes the parent.
	Version int64
	// Engines run the evaluation, the first that loads the models deciding
	// accuracy and the golden outputs; Order lists their names. Those that
	// cannot load them are named in the report.
	Engines map[string]func([]byte) (Runner, error)
	Order   []string
	// Unavailable names engines the caller could not start, and why; the
	// report lists them with those that cannot load the models.
	Unavailable map[string]string
}

// Golden tolerance of a quantized package: the pure-Go engine and ONNX
// Runtime may round one activation differently (see quant tests).
const (
	int8Tolerance = 5e-3
	fp16Tolerance = 1e-4
)

// QuantizePackage quantizes the package in inDir, evaluates it and, if the
// accuracy drop is within bounds, writes the new package to outDir with
// golden outputs recomputed on the quantized model.
func QuantizePackage(inDir, outDir string, po PackageOptions) (*Report, error) {
	m, model, err := manifest.Load(inDir)
	if err != nil {
		return nil, err
	}
	if m.Quantization != "" && m.Quantization != "none" {
		return nil, fmt.Errorf("%w: %s v%d is already quantized (%s)", ErrOptions, m.Name, m.Version, m.Quantization)
	}
	rows := po.Rows
	if len(rows) == 0 {
		for _, g := range m.Golden {
			rows = append(rows, g.Input)
		}
		po.Labels = nil
	}
	o := po.Options
	o.Samples = rows
	q, err := Quantize(model, o)
	if err != nil {
		return nil, err
	}
	rep, err := Evaluate(model, q, rows, po.Labels, m.Outputs.Threshold, po.Engines, po.Order)
	if err != nil {
		return nil, err
	}
	for k, v := range po.Unavailable {
		rep.Unavailable[k] = v
	}
	rep.Mode, rep.Calibration = o.Mode, o.Calibration
	if o.Mode != Static {
		rep.Calibration = ""
	}
	if rep.Drop() > po.MaxDrop {
		return rep, fmt.Errorf("%w: %.2f points lost, the bound is %.2f", ErrAccuracy, 100*rep.Drop(), 100*po.MaxDrop)
	}
	out := *m
	out.Parent, out.Version, out.Quantization = m.Version, po.Version, o.Mode
	if out.Version == 0 {
		out.Version = m.Version + 1
	}
	out.Metrics = map[string]float64{}
	for k, v := range m.Metrics {
		out.Metrics[k] = v
	}
	out.Metrics["quant_size_ratio"] = rep.SizeRatio
	out.Metrics["quant_accuracy_drop"] = rep.Drop()
	out.Metrics["quant_max_abs_error"] = rep.MaxAbsError
	tol := int8Tolerance
	if o.Mode == FP16 {
		tol = fp16Tolerance
	}
	r, err := po.Engines[rep.Engine](q)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	out.Golden = nil
	for _, g := range m.Golden {
		y, err := r.Run(g.Input, len(g.Input))
		if err != nil {
			return nil, fmt.Errorf("quant: golden: %w", err)
		}
		out.Golden = append(out.Golden, manifest.Golden{Input: g.Input, Output: y, Tolerance: max(g.Tolerance, tol)})
	}
	if err := manifest.Write(outDir, &out, q); err != nil {
		return nil, err
	}
	return rep, nil
}
