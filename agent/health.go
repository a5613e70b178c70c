package agent

import (
	"time"

	"github.com/outpost-edge/outpost/agent/pipeline"
	"github.com/outpost-edge/outpost/sync/state"
)

// healthSource is what the report reads of a pipeline.
type healthSource interface {
	Name() string
	Counters() pipeline.Counters
	RecentCalls() pipeline.CallLatency
}

// healthRates remembers the counters the report's rates are taken
// against. Only the report uses it, one report at a time.
type healthRates struct {
	at   time.Time
	prev map[string]pipeline.Counters
	// minSpan keeps the baseline until it is this old: a burst of update
	// reports a few hundred ms apart would otherwise show the rates of a
	// moment with no window closing.
	minSpan time.Duration
}

// pipelineHealth reads every pipeline at now, with the model each runs
// (from models), and moves the baseline on if it is old enough.
func (h *healthRates) pipelineHealth(now time.Time, pipes []healthSource, models []state.ModelStatus) []state.PipelineHealth {
	out := make([]state.PipelineHealth, 0, len(pipes))
	cur := make(map[string]pipeline.Counters, len(pipes))
	span := now.Sub(h.at)
	for _, p := range pipes {
		c := p.Counters()
		cur[p.Name()] = c
		ph := healthOf(p.Name(), c, h.prev[p.Name()], span, p.RecentCalls())
		for _, m := range models {
			if m.Pipeline == ph.Pipeline {
				ph.Model, ph.Version = m.Model, m.Version
			}
		}
		out = append(out, ph)
	}
	if span >= h.minSpan {
		h.at, h.prev = now, cur
	}
	return out
}

// healthOf is one pipeline's health from its counters now and span
// earlier (zero counters: the start) and its recent calls.
func healthOf(name string, cur, prev pipeline.Counters, span time.Duration, calls pipeline.CallLatency) state.PipelineHealth {
	h := state.PipelineHealth{Pipeline: name,
		Events: cur.Events, Rejected: cur.Rejected, Late: cur.Late, Windows: cur.Windows,
		Inferences: cur.Inferences, InferErrors: cur.InferErrors, NaN: cur.NaN, Calls: cur.Calls,
		LatencyCalls: calls.Calls, RowsPerCall: calls.RowsPerCall,
		LatencyP50US: micros(calls.P50), LatencyP99US: micros(calls.P99)}
	if span > 0 {
		h.RateSeconds = span.Seconds()
		h.InferencesPerSec = perSecond(cur.Inferences, prev.Inferences, span)
		h.EventsPerSec = perSecond(cur.Events, prev.Events, span)
	}
	return h
}

// perSecond is the rate of a counter from prev to cur over span (> 0); a
// counter that went back (it cannot, short of a bug) reads 0.
func perSecond(cur, prev int64, span time.Duration) float64 {
	return float64(max(0, cur-prev)) / span.Seconds()
}

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
