package trainer

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/outpost-edge/outpost/models/drift"
)

// driftReport is a device's latest `drift` record, as far as it matters.
type driftReport struct {
	at      time.Time
	drifted []string
}

// fleetWindow is how long a device's drift verdict stands.
const fleetWindow = 10 * time.Minute

// driftRecord is the agent's `drift` record (agent/pipeline.DriftRecord).
type driftRecord struct {
	Pipeline string    `json:"pipeline"`
	To       time.Time `json:"to"`
	Drifted  []string  `json:"drifted"`
}

// observeDrift takes one device's drift record for every model on that
// pipeline and reports a fleet-wide drift when it starts.
func (t *Trainer) observeDrift(ctx context.Context, device string, rec driftRecord) {
	now := time.Now().UTC()
	for _, m := range t.sorted() {
		if m.cfg.Pipeline != rec.Pipeline {
			continue
		}
		t.mu.Lock()
		if m.reports == nil {
			m.reports = map[string]driftReport{}
		}
		m.reports[device] = driftReport{at: now, drifted: rec.Drifted}
		f := FleetDrift{Features: map[string]int{}, Since: m.status.Fleet.Since, Active: m.status.Fleet.Active, Last: now}
		for d, r := range m.reports {
			if now.Sub(r.at) > fleetWindow {
				delete(m.reports, d)
				continue
			}
			f.Devices++
			if len(r.drifted) > 0 {
				f.Drifting++
			}
			for _, name := range r.drifted {
				f.Features[name]++
			}
		}
		fleetWide := f.Devices >= 2 && 2*f.Drifting >= f.Devices
		var ev *Event
		switch {
		case fleetWide && !f.Active:
			f.Active, f.Since = true, now
			ev = &Event{At: now, Kind: "fleet_data_drift", Detail: fmt.Sprintf("%d of %d devices report data drift: %s", f.Drifting, f.Devices, topFeatures(f.Features))}
		case !fleetWide && f.Active:
			f.Active, f.Since = false, time.Time{}
		}
		m.status.Fleet = f
		if ev != nil {
			m.history = append(m.history, *ev)
		}
		t.mu.Unlock()
		if ev != nil {
			t.log.Warn("fleet-wide data drift", "model", m.cfg.Model, "pipeline", rec.Pipeline, "detail", ev.Detail)
			t.emit(ctx, m.cfg.Model, *ev)
		}
	}
}

func topFeatures(f map[string]int) string {
	names := make([]string, 0, len(f))
	for n := range f {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool {
		return f[names[i]] > f[names[j]] || (f[names[i]] == f[names[j]] && names[i] < names[j])
	})
	var parts []string
	for _, n := range names[:min(len(names), 5)] {
		parts = append(parts, fmt.Sprintf("%s (%d)", n, f[n]))
	}
	return strings.Join(parts, ", ")
}

// cohort watches production's errors on one device cohort (the devices
// sharing a value of ModelConfig.CohortLabel) with its own detectors, at
// their defaults; each reports a change once, so one change is one event.
type cohort struct {
	adwin drift.ADWIN
	ph    drift.PageHinkley
	rows  int64
	ok    int64
	drift int
}

// observeCohort feeds a labelled row's production outcome to its
// device's cohort; a drift there is an event and starts a check.
func (t *Trainer) observeCohort(m *model, device string, correct bool) *Event {
	if m.cfg.CohortLabel == "" || t.labels == nil {
		return nil
	}
	value := t.labels(device)[m.cfg.CohortLabel]
	if value == "" {
		value = "(none)"
	}
	if m.cohorts == nil {
		m.cohorts = map[string]*cohort{}
	}
	c := m.cohorts[value]
	if c == nil {
		c = &cohort{}
		m.cohorts[value] = c
	}
	c.rows++
	errv := 1.0
	if correct {
		c.ok++
		errv = 0
	}
	a, p := c.adwin.Update(errv), c.ph.Update(errv)
	if m.status.Cohorts == nil {
		m.status.Cohorts = map[string]CohortStatus{}
	}
	if a || p {
		c.drift++
	}
	m.status.Cohorts[value] = CohortStatus{Rows: c.rows, Accuracy: float64(c.ok) / float64(c.rows), Drifts: c.drift}
	if !(a || p) {
		return nil
	}
	m.r.Check("drift in cohort " + m.cfg.CohortLabel + "=" + value)
	return &Event{At: time.Now().UTC(), Kind: "cohort_drift", Detail: fmt.Sprintf("%s=%s: production's error rate changed", m.cfg.CohortLabel, value)}
}
