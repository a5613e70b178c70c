package pipeline

import (
	"fmt"
	"math"
	"time"

	"github.com/outpost-edge/outpost/agent/window"
	"github.com/outpost-edge/outpost/deploy/config"
	"github.com/outpost-edge/outpost/models/drift"
)

// DriftConfig is a pipeline's `drift` section: each window aggregate (and
// the model's first score) is sketched over a reference of Windows final
// windows, then every later run of Windows windows is compared with it.
type DriftConfig struct {
	Windows      int     `yaml:"windows"`       // windows per sketch (reference and each comparison)
	Bins         int     `yaml:"bins"`          // sketch bins (default 10)
	PSIThreshold float64 `yaml:"psi_threshold"` // PSI at or above it is drift (default 0.25)
	KSPValue     float64 `yaml:"ks_p_value"`    // KS p-value below it is drift (default 0.01)
}

func (c *DriftConfig) validate(path string, errs *config.Errors) {
	bins := c.Bins
	if bins == 0 {
		bins = 10
	}
	// PSI between two samples of one distribution is about
	// (bins−1)·2/windows: below 20 windows a bin it measures noise.
	if c.Windows < 20*bins {
		errs.Add(path+".windows", fmt.Sprintf("must be at least 20 × bins (%d), got %d", 20*bins, c.Windows))
	}
	if c.Bins != 0 && (c.Bins < 2 || c.Bins > 100) {
		errs.Add(path+".bins", fmt.Sprintf("must be 2 to 100, got %d", c.Bins))
	}
	if c.PSIThreshold < 0 || c.KSPValue < 0 || c.KSPValue > 1 {
		errs.Add(path, "psi_threshold must not be negative; ks_p_value is 0 to 1")
	}
}

// DriftRecord is the data of a `drift` record.
type DriftRecord struct {
	Pipeline string                  `json:"pipeline"`
	Windows  int                     `json:"windows"` // in the reference and in the compared run
	From     time.Time               `json:"from"`    // end of the first and last windows compared
	To       time.Time               `json:"to"`
	Features map[string]FeatureDrift `json:"features"` // "field.agg", and "prediction" for the first score
	Drifted  []string                `json:"drifted,omitempty"`
}

// FeatureDrift is one feature's comparison with its reference.
type FeatureDrift struct {
	PSI   float64 `json:"psi"`
	KSD   float64 `json:"ks_d"`
	KSP   float64 `json:"ks_p"`
	Drift bool    `json:"drift"`
}

// driftState sketches one pipeline's features.
type driftState struct {
	cfg      DriftConfig
	names    []string
	refVals  [][]float64 // while the reference fills
	ref, cur []*drift.Sketch
	n        int
	from     time.Time
}

func newDrift(c DriftConfig, names []string) *driftState {
	if c.Bins == 0 {
		c.Bins = 10
	}
	if c.PSIThreshold == 0 {
		c.PSIThreshold = 0.25
	}
	if c.KSPValue == 0 {
		c.KSPValue = 0.01
	}
	return &driftState{cfg: c, names: names, refVals: make([][]float64, len(names))}
}

// observe adds one final window's feature values (NaN: not available) and
// returns a record when a comparison run is complete.
func (d *driftState) observe(pipeline string, end time.Time, vals []float64) *DriftRecord {
	if d.ref == nil {
		for i, v := range vals {
			// A reference refuses ±Inf as well (drift.ErrNonFinite).
			if !math.IsNaN(v) && !math.IsInf(v, 0) {
				d.refVals[i] = append(d.refVals[i], v)
			}
		}
		if d.n++; d.n < d.cfg.Windows {
			return nil
		}
		d.ref, d.cur = make([]*drift.Sketch, len(vals)), make([]*drift.Sketch, len(vals))
		for i, vs := range d.refVals {
			if sk, err := drift.NewSketch(vs, d.cfg.Bins); err == nil {
				d.ref[i], d.cur[i] = sk, sk.Empty()
			}
		}
		d.refVals, d.n = nil, 0
		return nil
	}
	if d.n == 0 {
		d.from = end
	}
	for i, v := range vals {
		if d.cur[i] != nil && !math.IsNaN(v) {
			d.cur[i].Add(v)
		}
	}
	if d.n++; d.n < d.cfg.Windows {
		return nil
	}
	rec := &DriftRecord{Pipeline: pipeline, Windows: d.cfg.Windows, From: d.from, To: end, Features: map[string]FeatureDrift{}}
	for i, name := range d.names {
		if d.ref[i] == nil || d.cur[i].N == 0 {
			continue
		}
		psi, _ := drift.PSI(d.ref[i], d.cur[i])
		ks, _ := drift.KSSketch(d.ref[i], d.cur[i])
		f := FeatureDrift{PSI: psi, KSD: ks.D, KSP: ks.P, Drift: psi >= d.cfg.PSIThreshold || ks.P < d.cfg.KSPValue}
		rec.Features[name] = f
		if f.Drift {
			rec.Drifted = append(rec.Drifted, name)
		}
		d.cur[i] = d.ref[i].Empty()
	}
	d.n = 0
	return rec
}

// driftNames are the features a pipeline sketches: every field.agg, then
// the model's first score.
func (p *Pipeline) driftNames() []string {
	var names []string
	for _, f := range p.cfg.Decode.Fields {
		for _, a := range p.aggs {
			names = append(names, f+"."+string(a))
		}
	}
	if p.model != nil {
		names = append(names, "prediction")
	}
	return names
}

// observeDrift feeds final windows (and their first scores, by index into
// results) to the drift state and records what it finds.
func (p *Pipeline) observeDrift(results []window.Result, scores map[int]float64) {
	for i := range results {
		r := &results[i]
		if r.Firing != window.Final {
			continue
		}
		vals := make([]float64, 0, len(p.drift.names))
		for fi := range p.cfg.Decode.Fields {
			for _, a := range p.aggs {
				vals = append(vals, r.Value(fi, a))
			}
		}
		if p.model != nil {
			s, ok := scores[i]
			if !ok {
				s = math.NaN()
			}
			vals = append(vals, s)
		}
		if rec := p.drift.observe(p.cfg.Name, r.End, vals); rec != nil {
			p.Stats.DriftChecks.Add(1)
			if len(rec.Drifted) > 0 {
				p.Stats.DriftDetected.Add(1)
				p.log.Warn("drift", "features", rec.Drifted, "windows", rec.Windows)
			}
			p.add("drift", r.End, rec)
		}
	}
}
