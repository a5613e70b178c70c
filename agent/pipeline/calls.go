package pipeline

import (
	"slices"
	"sync"
	"time"
)

// recentCalls is how many model calls the latency percentiles cover: a
// few minutes of a busy pipeline, and a fixed 3 KiB.
const recentCalls = 256

// calls is a ring of the latest model calls' durations and rows; the
// pipeline writes it, the agent's report reads it from another goroutine.
type calls struct {
	mu    sync.Mutex
	took  [recentCalls]time.Duration
	rows  [recentCalls]int32
	n     int // filled entries
	next  int
	sorts []time.Duration // scratch for the percentiles, reused
}

// add records one call of rows rows that took d.
func (c *calls) add(d time.Duration, rows int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.took[c.next], c.rows[c.next] = d, int32(min(rows, 1<<31-1))
	c.next = (c.next + 1) % recentCalls
	c.n = min(c.n+1, recentCalls)
}

// CallLatency is what the recent model calls took.
type CallLatency struct {
	Calls       int // how many calls the figures cover; 0: none yet
	P50, P99    time.Duration
	RowsPerCall float64
}

// snapshot computes the percentiles (nearest rank) of the recorded calls.
func (c *calls) snapshot() CallLatency {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == 0 {
		return CallLatency{}
	}
	c.sorts = append(c.sorts[:0], c.took[:c.n]...)
	slices.Sort(c.sorts)
	var rows int64
	for _, r := range c.rows[:c.n] {
		rows += int64(r)
	}
	return CallLatency{Calls: c.n, P50: rank(c.sorts, 50), P99: rank(c.sorts, 99), RowsPerCall: float64(rows) / float64(c.n)}
}

// rank is the pct-th percentile of sorted (not empty) by nearest rank:
// the smallest value with at least pct% of the values at or below it.
func rank(sorted []time.Duration, pct int) time.Duration {
	i := (len(sorted)*pct + 99) / 100 // ceil, in integers
	return sorted[max(i, 1)-1]
}

// RecentCalls is the latency of the last model calls (at most 256).
func (p *Pipeline) RecentCalls() CallLatency { return p.calls.snapshot() }

// Counters is a snapshot of a pipeline's counters since it was built.
type Counters struct {
	Events, Rejected, Late, Windows int64
	Inferences, InferErrors, NaN    int64
	Calls                           int64
}

// Counters reads the pipeline's counters.
func (p *Pipeline) Counters() Counters {
	s := &p.Stats
	return Counters{Events: s.Events.Load(), Rejected: s.Rejected.Load(), Late: s.Late.Load(), Windows: s.Windows.Load(),
		Inferences: s.Inferences.Load(), InferErrors: s.InferErrors.Load(), NaN: s.NaN.Load(), Calls: s.InferCalls.Load()}
}
