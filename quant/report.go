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

// Report compares a quantized model with its float original.
type Report struct {
	Mode        string  `json:"mode"`
	Calibration string  `json:"calibration,omitempty"`
	SizeBefore  int     `json:"size_before"`
	SizeAfter   int     `json:"size_after"`
	SizeRatio   float64 `json:"size_ratio"`
	Rows        int     `json:"rows"` // evaluation rows
	MaxAbsError float64 `json:"max_abs_error"`
	// Accuracy is against labels when the data has them, else against the
	// float model's own decisions (then AccuracyBefore is 1).
	AccuracyBefore float64 `json:"accuracy_before"`
	AccuracyAfter  float64 `json:"accuracy_after"`
	Labelled       bool    `json:"labelled"`
	// Latency per run over all rows, median of several, per engine.
	Latency map[string][2]time.Duration `json:"latency"` // engine → [float, quantized]
	// Engine decided accuracy: the first of the order that loads both
	// models. Unavailable names the engines that cannot, and why.
	Engine      string            `json:"engine"`
	Unavailable map[string]string `json:"unavailable,omitempty"`
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
		Rows: len(rows), Labelled: labels != nil, Latency: map[string][2]time.Duration{}, Unavailable: map[string]string{}}
	for _, name := range order {
		var outs [2][]float32
		var lat [2]time.Duration
		loaded := true
		for j, model := range [][]byte{float, quantized} {
			r, err := engines[name](model)
			if err != nil {
				rep.Unavailable[name] = fmt.Sprintf("%s model: %v", [2]string{"float", "quantized"}[j], err)
				loaded = false
				break
			}
			var times []time.Duration
			for range 7 {
				t0 := time.Now()
				if outs[j], err = r.Run(x, features); err != nil {
					r.Close()
					return nil, fmt.Errorf("quant: %s: run: %w", name, err)
				}
				times = append(times, time.Since(t0))
			}
			r.Close()
			sort.Slice(times, func(a, b int) bool { return times[a] < times[b] })
			lat[j] = times[len(times)/2]
		}
		if !loaded {
			continue
		}
		rep.Latency[name] = lat
		if rep.Engine != "" {
			continue
		}
		rep.Engine = name
		width := len(outs[0]) / len(rows)
		right := [2]int{}
		for k := range rows {
			f, q := outs[0][k*width:(k+1)*width], outs[1][k*width:(k+1)*width]
			for c := range f {
				rep.MaxAbsError = max(rep.MaxAbsError, math.Abs(float64(f[c]-q[c])))
			}
			want := Decide(f, threshold)
			if labels != nil {
				want = labels[k]
			}
			if Decide(f, threshold) == want {
				right[0]++
			}
			if Decide(q, threshold) == want {
				right[1]++
			}
		}
		rep.AccuracyBefore = float64(right[0]) / float64(len(rows))
		rep.AccuracyAfter = float64(right[1]) / float64(len(rows))
	}
	if rep.Engine == "" {
		return nil, fmt.Errorf("%w: no engine loads both models: %v", ErrModel, rep.Unavailable)
	}
	return rep, nil
}

// String renders the report for a terminal.
func (r *Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "mode          %s %s\n", r.Mode, r.Calibration)
	fmt.Fprintf(&b, "size          %d → %d bytes (%.2f×)\n", r.SizeBefore, r.SizeAfter, r.SizeRatio)
	against := "the float model's decisions"
	if r.Labelled {
		against = "labels"
	}
	fmt.Fprintf(&b, "accuracy      %.2f%% → %.2f%% on %d rows, against %s (drop %.2f points)\n", 100*r.AccuracyBefore, 100*r.AccuracyAfter, r.Rows, against, 100*r.Drop())
	fmt.Fprintf(&b, "max abs error %.4g\n", r.MaxAbsError)
	names := make([]string, 0, len(r.Latency))
	for n := range r.Latency {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		l := r.Latency[n]
		fmt.Fprintf(&b, "latency %-12s %v → %v (%.2f× faster)\n", n, l[0].Round(time.Microsecond), l[1].Round(time.Microsecond), float64(l[0])/float64(l[1]))
	}
	for n, why := range r.Unavailable {
		fmt.Fprintf(&b, "unavailable %-8s %s\n", n, why)
	}
	return b.String()
}
