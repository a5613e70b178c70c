package pipeline

import (
	"math"
	"time"

	"github.com/outpost-edge/outpost/agent/window"
)

// InferenceRecord is the data of an `inferences` record.
type InferenceRecord struct {
	Pipeline    string    `json:"pipeline"`
	Key         string    `json:"key"`
	WindowStart time.Time `json:"window_start"`
	WindowEnd   time.Time `json:"window_end"`
	Firing      string    `json:"firing"`
	Model       string    `json:"model"`
	Version     int64     `json:"version"`
	Scores      []float32 `json:"scores"`
	Label       string    `json:"label,omitempty"`
	Positive    bool      `json:"positive"`
	LatencyUS   int64     `json:"latency_us"` // of the micro-batch the row ran in
}

// infer runs every final or updated window of one batch through the
// model in a single call: windows that close together are micro-batched.
func (p *Pipeline) infer(results []window.Result) {
	m := p.model.Manifest
	fieldIdx := map[string]int{}
	for i, f := range p.cfg.Decode.Fields {
		fieldIdx[f] = i
	}
	var x []float32
	var rows []int
	for i := range results {
		r := &results[i]
		if r.Firing == window.Early {
			continue
		}
		lookup := func(field, agg string) (float64, bool) {
			fi, ok := fieldIdx[field]
			if !ok {
				return 0, false
			}
			a, err := window.ParseAgg(agg)
			if err != nil {
				return 0, false
			}
			return r.Value(fi, a), true
		}
		var err error
		before := len(x)
		if x, err = m.Vector(lookup, x); err != nil {
			x = x[:before]
			p.Stats.InferErrors.Add(1)
			p.rejLog.Do(func() { p.log.Warn("no feature vector", "key", r.Key, "err", err) })
			continue
		}
		rows = append(rows, i)
	}
	if len(rows) == 0 {
		return
	}
	out, took, err := p.model.Infer(x)
	if p.Stats.InferLatency != nil {
		p.Stats.InferLatency(took)
	}
	p.Stats.InferCalls.Add(1)
	p.Stats.InferNanos.Add(int64(took))
	if err != nil {
		p.Stats.InferErrors.Add(int64(len(rows)))
		p.log.Error("inference failed", "model", m.Name, "rows", len(rows), "err", err)
		return
	}
	width := p.model.Outputs()
	for j, i := range rows {
		r := &results[i]
		scores := append([]float32(nil), out[j*width:(j+1)*width]...)
		if !finite(scores) {
			// JSON cannot carry NaN: count it, and keep the window record.
			p.Stats.NaN.Add(1)
			p.Stats.InferErrors.Add(1)
			p.rejLog.Do(func() {
				p.log.Warn("model produced a non-finite score", "model", m.Name, "version", m.Version, "key", r.Key)
			})
			continue
		}
		rec := InferenceRecord{Pipeline: p.cfg.Name, Key: r.Key, WindowStart: r.Start, WindowEnd: r.End, Firing: string(r.Firing),
			Model: m.Name, Version: m.Version, Scores: scores, LatencyUS: took.Microseconds()}
		rec.Label, rec.Positive = interpret(m.Task, m.Outputs.Labels, m.Outputs.Threshold, scores)
		p.Stats.Inferences.Add(1)
		p.add("inferences", r.End, rec)
		if rec.Positive {
			p.Stats.Alerts.Add(1)
			p.acts.fire(rec)
		}
	}
}

// interpret turns scores into a label and whether the window is flagged:
// anomaly models flag a first score at or above the threshold;
// classifiers take the arg-max label and flag anything but the first.
func interpret(task string, labels []string, threshold float64, scores []float32) (string, bool) {
	switch task {
	case "anomaly":
		pos := float64(scores[0]) >= threshold
		if len(labels) == 2 {
			if pos {
				return labels[1], true
			}
			return labels[0], false
		}
		return "", pos
	case "classification":
		best := 0
		for i, s := range scores {
			if s > scores[best] {
				best = i
			}
		}
		if best < len(labels) {
			return labels[best], best != 0
		}
		return "", best != 0
	}
	return "", false
}

func finite(v []float32) bool {
	for _, x := range v {
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			return false
		}
	}
	return true
}
