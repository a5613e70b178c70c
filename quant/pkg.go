package quant

import (
	"errors"
	"fmt"
	"math"

	"github.com/outpost-edge/outpost/models/manifest"
)

// Refusals: the quantized model misses a bound asked for.
var (
	// ErrAccuracy means quantization cost more accuracy than allowed.
	ErrAccuracy = errors.New("quant: accuracy drop beyond the bound")
	// ErrSlower means the quantized model is not faster, with RequireFaster.
	ErrSlower = errors.New("quant: quantized model not faster")
	// ErrSize means the quantized model is larger than MaxSizeRatio allows.
	ErrSize = errors.New("quant: quantized model too large")
)

// Refused reports whether err is one of the refusals on request.
func Refused(err error) bool {
	return errors.Is(err, ErrAccuracy) || errors.Is(err, ErrSlower) || errors.Is(err, ErrSize)
}

// PackageOptions quantize a whole model package.
type PackageOptions struct {
	Options
	// Rows calibrate (static) and, without EvalRows, the last Holdout
	// share of them evaluates instead (never both); empty uses the golden
	// inputs for both, which the report states.
	Rows   [][]float32
	Labels []int // optional, one per row
	// EvalRows, with EvalLabels (optional), evaluate.
	EvalRows   [][]float32
	EvalLabels []int
	// Holdout is the share of Rows held out for evaluation when there are
	// no EvalRows (0.2 when 0; it must leave a row on each side).
	Holdout float64
	// MaxDrop refuses a result that loses more accuracy (0.01: one point).
	MaxDrop float64
	// RequireFaster refuses a result that is not faster than float at
	// every batch size on the engine that decides (ONNX Runtime first).
	RequireFaster bool
	// MaxSizeRatio refuses a result larger than this share of the float
	// model (0: no bound).
	MaxSizeRatio float64
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
	calib, _, eval, evalLabels, split, err := splitRows(m, po)
	if err != nil {
		return nil, err
	}
	o := po.Options
	o.Samples = calib
	q, err := Quantize(model, o)
	if err != nil {
		return nil, err
	}
	rep, err := Evaluate(model, q, eval, evalLabels, m.Outputs.Threshold, po.Engines, po.Order)
	if err != nil {
		return nil, err
	}
	rep.Split = split
	if o.Mode == Static {
		rep.CalibrationRows = len(calib)
	}
	for k, v := range po.Unavailable {
		rep.Unavailable[k] = v
	}
	rep.Mode, rep.Calibration, rep.Scheme = o.Mode, o.Calibration, Scheme(o)
	if o.Mode != Static {
		rep.Calibration = ""
	}
	if rep.Drop() > po.MaxDrop {
		return rep, fmt.Errorf("%w: %.2f points lost, the bound is %.2f", ErrAccuracy, 100*rep.Drop(), 100*po.MaxDrop)
	}
	if po.MaxSizeRatio > 0 && rep.SizeRatio > po.MaxSizeRatio {
		return rep, fmt.Errorf("%w: %.2f× the float model's size, the bound is %.2f×", ErrSize, rep.SizeRatio, po.MaxSizeRatio)
	}
	if po.RequireFaster {
		for _, l := range rep.Latency[rep.Engine] {
			if l.Speedup <= 1 {
				return rep, fmt.Errorf("%w: %s at batch %d on %s (%.1f µs against float's %.1f µs)", ErrSlower, l.Faster(), l.Batch, rep.Engine, l.QuantMicros, l.FloatMicros)
			}
		}
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
	rep.Written = outDir
	return rep, nil
}

// splitRows picks calibration and evaluation rows and says where the
// evaluation rows came from.
func splitRows(m *manifest.Manifest, po PackageOptions) (calib [][]float32, labels []int, eval [][]float32, evalLabels []int, split string, err error) {
	calib, labels = po.Rows, po.Labels
	switch {
	case len(po.EvalRows) > 0 && len(calib) > 0:
		return calib, labels, po.EvalRows, po.EvalLabels, fmt.Sprintf("separate evaluation data, %d calibration rows", len(calib)), nil
	case len(po.EvalRows) > 0:
		for _, g := range m.Golden {
			calib = append(calib, g.Input)
		}
		return calib, nil, po.EvalRows, po.EvalLabels, fmt.Sprintf("separate evaluation data, calibrated on the %d golden inputs", len(calib)), nil
	case len(calib) > 0:
		h := po.Holdout
		if h == 0 {
			h = 0.2
		}
		if h <= 0 || h >= 1 {
			return nil, nil, nil, nil, "", fmt.Errorf("%w: holdout %v (0 < share < 1)", ErrOptions, h)
		}
		n := int(math.Round(h * float64(len(calib))))
		if n < 1 || n >= len(calib) {
			return nil, nil, nil, nil, "", fmt.Errorf("%w: a holdout of %v of %d rows leaves no rows to calibrate or to evaluate; pass more rows or --eval-data", ErrOptions, h, len(calib))
		}
		cut := len(calib) - n
		eval = calib[cut:]
		if labels != nil {
			evalLabels, labels = labels[cut:], labels[:cut]
		}
		return calib[:cut], labels, eval, evalLabels,
			fmt.Sprintf("held out: the last %.0f%% of the data (%d of %d rows), calibrated on the first %d", 100*h, n, len(po.Rows), cut), nil
	}
	for _, g := range m.Golden {
		calib = append(calib, g.Input)
	}
	return calib, nil, calib, nil, fmt.Sprintf("the %d golden inputs, which also calibrate: not held out", len(calib)), nil
}
