package quant

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"time"
)

// Runner runs a model: an ONNX Runtime session or the pure-Go engine.
type Runner interface {
	Run(x []float32, features int) ([]float32, error)
	Close() error
}

// Batches are the batch sizes latency is measured at.
var Batches = []int{1, 32}

// Report compares a quantized model with its float original.
type Report struct {
	Mode        string `json:"mode"`
	Calibration string `json:"calibration,omitempty"`
	// Scheme says how weights and activations were quantized.
	Scheme     string  `json:"scheme,omitempty"`
	SizeBefore int     `json:"size_before"`
	SizeAfter  int     `json:"size_after"`
	SizeRatio  float64 `json:"size_ratio"`
	// CalibrationRows calibrated (static); Rows evaluated. Split says
	// where the evaluation rows came from.
	CalibrationRows int     `json:"calibration_rows,omitempty"`
	Rows            int     `json:"rows"`
	Split           string  `json:"split,omitempty"`
	MaxAbsError     float64 `json:"max_abs_error"`
	// Accuracy is against labels when the data has them, else against the
	// float model's own decisions (then AccuracyBefore is 1). Agreement is
	// the share of rows where the quantized model decides as float does.
	AccuracyBefore float64 `json:"accuracy_before"`
	AccuracyAfter  float64 `json:"accuracy_after"`
	Agreement      float64 `json:"agreement"`
	Labelled       bool    `json:"labelled"`
	// Latency per engine and batch size, float and quantized measured
	// interleaved.
	Latency map[string][]Latency `json:"latency"`
	// Engine decided accuracy: the first of the order that loads both
	// models. Unavailable names the engines that cannot, and why.
	Engine      string            `json:"engine"`
	Unavailable map[string]string `json:"unavailable,omitempty"`
	Warnings    []string          `json:"warnings,omitempty"`
	// FloatOps names the Gemm, MatMul and Conv nodes that stayed float,
	// and why.
	FloatOps []string `json:"float_ops,omitempty"`
	// Written is the package directory written, empty when refused.
	Written string `json:"written,omitempty"`
}

// Latency is the median time of one run of a batch.
type Latency struct {
	Batch int `json:"batch"`
	// FloatMicros and QuantMicros are microseconds per run.
	FloatMicros float64 `json:"float_us"`
	QuantMicros float64 `json:"quantized_us"`
	// Speedup is float time / quantized time: below 1 is a slowdown.
	Speedup float64 `json:"speedup"`
}

// Drop is the accuracy lost, in fractions (0.01 is one point).
func (r *Report) Drop() float64 { return r.AccuracyBefore - r.AccuracyAfter }

// Decide turns one output row into a class: argmax of several columns, or
// a single score against threshold.
func Decide(row []float32, threshold float64) int {
	if len(row) == 1 {
		if float64(row[0]) >= threshold {
			return 1
		}
		return 0
	}
	best := 0
	for i := range row {
		if row[i] > row[best] {
			best = i
		}
	}
	return best
}

// Evaluate runs float and quantized models on rows with every engine in
// engines (the first that loads both decides accuracy and error) and fills
// a report. An engine that cannot load either model is named in
// Unavailable; none loading both is an error. labels may be nil.
func Evaluate(float, quantized []byte, rows [][]float32, labels []int, threshold float64, engines map[string]func([]byte) (Runner, error), order []string) (*Report, error) {
	if len(rows) == 0 {
		return nil, fmt.Errorf("%w: no evaluation rows", ErrOptions)
	}
	if labels != nil && len(labels) != len(rows) {
		return nil, fmt.Errorf("%w: %d labels for %d rows", ErrOptions, len(labels), len(rows))
	}
	features := len(rows[0])
	var x []float32
	for i, r := range rows {
		if len(r) != features {
			return nil, fmt.Errorf("%w: row %d has %d values, want %d", ErrOptions, i, len(r), features)
		}
		x = append(x, r...)
	}
	rep := &Report{SizeBefore: len(float), SizeAfter: len(quantized), SizeRatio: float64(len(quantized)) / float64(len(float)),
		Rows: len(rows), Labelled: labels != nil, Latency: map[string][]Latency{}, Unavailable: map[string]string{}}
	for _, name := range order {
		var rs [2]Runner
		for j, model := range [][]byte{float, quantized} {
			r, err := engines[name](model)
			if err != nil {
				rep.Unavailable[name] = fmt.Sprintf("%s model: %v", [2]string{"float", "quantized"}[j], err)
				break
			}
			rs[j] = r
		}
		if rs[1] == nil {
			if rs[0] != nil {
				rs[0].Close()
			}
			continue
		}
		err := rep.engine(name, rs, x, features, rows, labels, threshold)
		rs[0].Close()
		rs[1].Close()
		if err != nil {
			return nil, err
		}
	}
	if rep.Engine == "" {
		return nil, fmt.Errorf("%w: no engine loads both models: %v", ErrModel, rep.Unavailable)
	}
	rep.FloatOps = FloatOps(quantized)
	if rep.SizeRatio > 1 {
		rep.Warnings = append(rep.Warnings, fmt.Sprintf("the quantized model is larger than the float one (%.2f×): its scales and QDQ nodes outweigh the weights saved", rep.SizeRatio))
	}
	return rep, nil
}

// engine measures one engine's float and quantized runners; the first
// engine measured also scores accuracy.
func (rep *Report) engine(name string, rs [2]Runner, x []float32, features int, rows [][]float32, labels []int, threshold float64) error {
	var outs [2][]float32
	for j, r := range rs {
		var err error
		if outs[j], err = r.Run(x, features); err != nil {
			return fmt.Errorf("quant: %s: run: %w", name, err)
		}
	}
	for _, batch := range Batches {
		in := make([]float32, 0, batch*features)
		for len(in) < batch*features {
			in = append(in, x[:min(len(x), batch*features-len(in))]...)
		}
		l, err := latency(rs, in, features)
		if err != nil {
			return fmt.Errorf("quant: %s: run: %w", name, err)
		}
		l.Batch = batch
		rep.Latency[name] = append(rep.Latency[name], l)
	}
	if rep.Engine != "" {
		return nil
	}
	rep.Engine = name
	width := len(outs[0]) / len(rows)
	right, agree := [2]int{}, 0
	for k := range rows {
		f, q := outs[0][k*width:(k+1)*width], outs[1][k*width:(k+1)*width]
		for c := range f {
			rep.MaxAbsError = max(rep.MaxAbsError, math.Abs(float64(f[c]-q[c])))
		}
		df, dq := Decide(f, threshold), Decide(q, threshold)
		want := df
		if labels != nil {
			want = labels[k]
		}
		if df == want {
			right[0]++
		}
		if dq == want {
			right[1]++
		}
		if df == dq {
			agree++
		}
	}
	rep.AccuracyBefore = float64(right[0]) / float64(len(rows))
	rep.AccuracyAfter = float64(right[1]) / float64(len(rows))
	rep.Agreement = float64(agree) / float64(len(rows))
	return nil
}

// latency runs float and quantized models alternately, so that a noisy
// machine slows both alike, for about 100 ms each or 200 runs, and
// returns the median of each.
func latency(rs [2]Runner, x []float32, features int) (Latency, error) {
	var times [2][]time.Duration
	for j := range rs { // warm up: first runs allocate
		if _, err := rs[j].Run(x, features); err != nil {
			return Latency{}, err
		}
	}
	var total time.Duration
	for i := 0; i < 200 && (i < 7 || total < 200*time.Millisecond); i++ {
		for j, r := range rs {
			t0 := time.Now()
			if _, err := r.Run(x, features); err != nil {
				return Latency{}, err
			}
			d := time.Since(t0)
			times[j] = append(times[j], d)
			total += d
		}
	}
	med := func(t []time.Duration) float64 {
		sort.Slice(t, func(a, b int) bool { return t[a] < t[b] })
		return float64(t[len(t)/2]) / float64(time.Microsecond)
	}
	l := Latency{FloatMicros: med(times[0]), QuantMicros: med(times[1])}
	if l.QuantMicros > 0 {
		l.Speedup = l.FloatMicros / l.QuantMicros
	}
	return l, nil
}

// Faster says how the quantized time compares: "1.52× faster", "1.80×
// slower", never a factor below one.
func (l Latency) Faster() string {
	switch {
	case l.Speedup >= 1:
		return fmt.Sprintf("%.2f× faster", l.Speedup)
	case l.Speedup > 0:
		return fmt.Sprintf("%.2f× slower", 1/l.Speedup)
	}
	return "not measured"
}

// String renders the report for a terminal.
func (r *Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "mode          %s %s\n", r.Mode, r.Calibration)
	if r.Scheme != "" {
		fmt.Fprintf(&b, "scheme        %s\n", r.Scheme)
	}
	fmt.Fprintf(&b, "size          %d → %d bytes (%.2f×)\n", r.SizeBefore, r.SizeAfter, r.SizeRatio)
	if r.CalibrationRows > 0 {
		fmt.Fprintf(&b, "calibration   %d rows\n", r.CalibrationRows)
	}
	if r.Split != "" {
		fmt.Fprintf(&b, "evaluation    %d rows: %s\n", r.Rows, r.Split)
	}
	against := "the float model's decisions"
	if r.Labelled {
		against = "labels"
	}
	fmt.Fprintf(&b, "accuracy      %.2f%% → %.2f%% on %d rows, against %s (drop %.2f points), on %s\n", 100*r.AccuracyBefore, 100*r.AccuracyAfter, r.Rows, against, 100*r.Drop(), r.Engine)
	fmt.Fprintf(&b, "agreement     %.2f%% of rows decided as float decides\n", 100*r.Agreement)
	fmt.Fprintf(&b, "max abs error %.4g\n", r.MaxAbsError)
	for _, n := range sortedKeys(r.Latency) {
		for _, l := range r.Latency[n] {
			fmt.Fprintf(&b, "latency %-12s batch %-3d %.1f µs → %.1f µs (%s)\n", n, l.Batch, l.FloatMicros, l.QuantMicros, l.Faster())
		}
	}
	for _, n := range sortedKeys(r.Unavailable) {
		fmt.Fprintf(&b, "unavailable %-8s %s\n", n, r.Unavailable[n])
	}
	for _, op := range r.FloatOps {
		fmt.Fprintf(&b, "stays float   %s\n", op)
	}
	for _, w := range r.Warnings {
		fmt.Fprintf(&b, "warning       %s\n", w)
	}
	return b.String()
}

func sortedKeys[V any](m map[string]V) []string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
