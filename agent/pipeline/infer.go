package pipeline

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"image"
	"math"
	"slices"
	"sync/atomic"
	"time"

	"github.com/outpost-edge/outpost/agent/window"
	"github.com/outpost-edge/outpost/models/features"
	"github.com/outpost-edge/outpost/models/manifest"
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
	LatencyUS   int64     `json:"latency_us"`      // of the micro-batch the row ran in
	Frame       string    `json:"frame,omitempty"` // image pipelines: the frame's file name
}

// vector appends the row m asks for from window result r: every
// input's values, in the manifest's order.
func (p *Pipeline) vector(m *manifest.Manifest, r *window.Result, frame image.Image, x []float32) ([]float32, error) {
	lookup := func(field, agg string) (float64, bool) {
		fi := slices.Index(p.cfg.Decode.Fields, field)
		if fi < 0 {
			return 0, false
		}
		a, err := window.ParseAgg(agg)
		if err != nil {
			return 0, false
		}
		return r.Value(fi, a), true
	}
	if len(m.Inputs) == 0 {
		return m.Vector(lookup, x)
	}
	base := len(x)
	start, end := r.Start.UnixNano(), r.End.UnixNano()
	for _, in := range m.Inputs {
		var err error
		switch in.Kind {
		case manifest.Aggregates:
			x, err = manifest.Vector(in.Features, lookup, x)
		case manifest.Sequence:
			x, err = p.scratch.SequenceRow(in.Sequence, p.samples(r), start, end, x)
		case manifest.Spectrum:
			x, err = p.scratch.SpectrumRow(in.Spectrum, p.samples(r), start, end, x)
		case manifest.Image:
			if frame == nil {
				err = fmt.Errorf("%w: an image input needs a frame, not a window", manifest.ErrFeature)
				break
			}
			x = p.scratch.ImageRow(in.Image, frame, x)
		default:
			err = fmt.Errorf("%w: a window cannot feed a %s input", manifest.ErrFeature, in.Kind)
		}
		if err != nil {
			return x[:base], err
		}
	}
	return x, nil
}

// samples views a window's raw readings as the features package takes
// them (the window keeps every decoded field).
func (p *Pipeline) samples(r *window.Result) *features.Samples {
	if r.Samples == nil {
		return &features.Samples{}
	}
	return &features.Samples{Fields: p.cfg.Decode.Fields, T: r.Samples.T, V: r.Samples.V}
}

// infer runs every final or updated window of one batch through the
// model in a single call: windows that close together are micro-batched.
// A shadow model runs beside it (see SetShadow). It returns each scored
// result's first score, by index into results, when drift watches it.
// frames, when not nil, holds the decoded frame of each result (image
// pipelines: a frame is a result whose start and end are its time).
func (p *Pipeline) infer(results []window.Result, frames []frame) map[int]float64 {
	m := p.model.Manifest
	var x []float32
	var rows []int
	for i := range results {
		r := &results[i]
		if r.Firing == window.Early {
			continue
		}
		var err error
		before := len(x)
		if x, err = p.vector(m, r, frameOf(frames, i), x); err != nil {
			x = x[:before]
			if errors.Is(err, features.ErrShort) {
				// A declared policy, not a failure: counted as its own reason.
				p.Stats.Short.Add(1)
				continue
			}
			p.Stats.InferErrors.Add(1)
			p.rejLog.Do(func() { p.log.Warn("no feature vector", "key", r.Key, "err", err) })
			continue
		}
		rows = append(rows, i)
	}
	if len(rows) == 0 {
		return nil
	}
	p.recent.add(x, len(x)/len(rows))
	out, took, err := p.model.Infer(x)
	if p.Stats.InferLatency != nil {
		p.Stats.InferLatency(took)
	}
	p.Stats.InferCalls.Add(1)
	p.Stats.InferNanos.Add(int64(took))
	p.calls.add(took, len(rows))
	if err != nil {
		p.Stats.InferErrors.Add(int64(len(rows)))
		p.log.Error("inference failed", "model", m.Name, "rows", len(rows), "err", err)
		return nil
	}
	width := p.model.Outputs()
	var first map[int]float64 // only drift reads it: no allocation per batch otherwise
	if p.drift != nil {
		first = make(map[int]float64, len(rows))
	}
	var served map[int][]float32
	if p.shadow != nil {
		served = p.runShadow(results, frames, rows, out, width, took)
	}
	for j, i := range rows {
		r := &results[i]
		rm, scores := m, out[j*width:(j+1)*width]
		if s, ok := served[j]; ok {
			rm, scores = p.shadow.Manifest, s
		}
		scores = append([]float32(nil), scores...)
		if !finite(scores) {
			// JSON cannot carry NaN: count it, and keep the window record.
			p.Stats.NaN.Add(1)
			p.Stats.InferErrors.Add(1)
			p.rejLog.Do(func() {
				p.log.Warn("model produced a non-finite score", "model", rm.Name, "version", rm.Version, "key", r.Key)
			})
			continue
		}
		rec := InferenceRecord{Pipeline: p.cfg.Name, Key: r.Key, WindowStart: r.Start, WindowEnd: r.End, Firing: string(r.Firing),
			Model: rm.Name, Version: rm.Version, Scores: scores, LatencyUS: took.Microseconds()}
		if frames != nil {
			rec.Frame = frames[i].name
		}
		rec.Label, rec.Positive = interpret(rm.Task, rm.Outputs.Labels, rm.Outputs.Threshold, scores)
		p.Stats.Inferences.Add(1)
		if first != nil {
			first[i] = float64(scores[0])
		}
		p.add("inferences", r.End, rec)
		if rec.Positive {
			p.Stats.Alerts.Add(1)
			p.acts.fire(rec)
		}
	}
	return first
}

// runShadow runs the shadow model on the rows it takes (all of them, or
// the split share) and counts how often it agrees with the active model.
// It returns the candidate's scores for the rows it serves (split only).
func (p *Pipeline) runShadow(results []window.Result, frames []frame, rows []int, out []float32, width int, took time.Duration) map[int][]float32 {
	sm, am := p.shadow.Manifest, p.model.Manifest
	var x []float32
	var take []int // indexes into rows
	for j, i := range rows {
		r := &results[i]
		if p.split > 0 && splitFraction(r.Key, r.Start) >= p.split {
			continue
		}
		var err error
		before := len(x)
		if x, err = p.vector(sm, r, frameOf(frames, i), x); err != nil {
			x = x[:before]
			p.shadowStats.errors.Add(1)
			continue
		}
		take = append(take, j)
	}
	st := &p.shadowStats
	st.activeRows.Add(int64(len(rows)))
	st.activeNanos.Add(int64(took))
	if len(take) == 0 {
		return nil
	}
	sout, stook, err := p.shadow.Infer(x)
	st.rows.Add(int64(len(take)))
	st.nanos.Add(int64(stook))
	if err != nil {
		st.errors.Add(int64(len(take)))
		return nil
	}
	sw := p.shadow.Outputs()
	var served map[int][]float32
	if p.split > 0 {
		served = make(map[int][]float32, len(take))
	}
	for k, j := range take {
		cand := sout[k*sw : (k+1)*sw]
		if !finite(cand) {
			st.nan.Add(1)
			st.errors.Add(1)
			continue
		}
		al, ap := interpret(am.Task, am.Outputs.Labels, am.Outputs.Threshold, out[j*width:(j+1)*width])
		cl, cp := interpret(sm.Task, sm.Outputs.Labels, sm.Outputs.Threshold, cand)
		if al == cl && ap == cp {
			st.agree.Add(1)
		}
		if served != nil {
			served[j] = cand
		}
	}
	return served
}

// frame is a decoded frame of an image pipeline and its file name.
type frame struct {
	img  image.Image
	name string
}

func frameOf(frames []frame, i int) image.Image {
	if frames == nil {
		return nil
	}
	return frames[i].img
}

// splitFraction maps a window to [0, 1) stably, so a key's windows are
// served by the same model whichever agent restart comes between.
func splitFraction(key string, start time.Time) float64 {
	h := fnv.New64a()
	h.Write([]byte(key))
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(start.UnixNano()))
	h.Write(b[:])
	return float64(h.Sum64()>>11) / (1 << 53)
}

// ShadowStats describe a shadow model next to the active one.
type ShadowStats struct {
	Rows, Agree, Errors, NaN int64
	Nanos                    int64 // in shadow calls
	ActiveRows, ActiveNanos  int64 // of the active model meanwhile
}

type shadowCounters struct {
	rows, agree, errors, nan, nanos, activeRows, activeNanos atomic.Int64
}

func (c *shadowCounters) snapshot() ShadowStats {
	return ShadowStats{Rows: c.rows.Load(), Agree: c.agree.Load(), Errors: c.errors.Load(), NaN: c.nan.Load(),
		Nanos: c.nanos.Load(), ActiveRows: c.activeRows.Load(), ActiveNanos: c.activeNanos.Load()}
}

// interpret turns scores into a label and whether the window is flagged
// (manifest.Outputs.Interpret, which outpostctl model run shares).
func interpret(task string, labels []string, threshold float64, scores []float32) (string, bool) {
	return manifest.Outputs{Labels: labels, Threshold: threshold}.Interpret(task, scores)
}

func finite(v []float32) bool {
	for _, x := range v {
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			return false
		}
	}
	return true
}
