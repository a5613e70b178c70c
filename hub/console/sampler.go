package console

import (
	"context"
	"maps"
	"slices"
	"sync"
	"time"
)

// StreamCounters is one reading of this hub's pipeline: counters that
// only grow while the bridge runs, and gauges.
type StreamCounters struct {
	// TopicRecords are the records committed to each Kafka topic (without
	// the prefix), dead letters included.
	TopicRecords                      map[string]int64
	Transactions, Aborts, DeadLetters int64
	// Backlog is the JetStream messages not yet bridged; BacklogAge how
	// long the oldest has waited.
	Backlog    uint64
	BacklogAge time.Duration
	// IngestBytes and IngestMessages are the size of the ingest stream.
	IngestBytes, IngestMessages uint64
}

// CounterSource reads the counters; the hub's console backend is one.
type CounterSource interface {
	StreamCounters() StreamCounters
}

// Sampler keeps a reading of the counters every Every for the last
// Window, for the streams page to chart. Its readings stay in memory:
// after a restart the charts start again.
type Sampler struct {
	every, window time.Duration
	mu            sync.Mutex
	ring          []reading // oldest first, at most max
	max           int
}

type reading struct {
	at time.Time
	c  StreamCounters
}

// Sampling defaults: 5 s apart for 30 minutes.
const (
	SampleEvery  = 5 * time.Second
	SampleWindow = 30 * time.Minute
)

// NewSampler keeps window's worth of readings taken every every.
func NewSampler(every, window time.Duration) *Sampler {
	return &Sampler{every: every, window: window, max: int(window/every) + 1}
}

// Run samples src until ctx ends.
func (s *Sampler) Run(ctx context.Context, src CounterSource) error {
	t := time.NewTicker(s.every)
	defer t.Stop()
	s.Sample(time.Now(), src.StreamCounters())
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			s.Sample(now, src.StreamCounters())
		}
	}
}

// Sample records c as read at now. A reading not after the last one (a
// clock stepped back) is dropped: it would make a rate of nothing.
func (s *Sampler) Sample(now time.Time, c StreamCounters) {
	c.TopicRecords = maps.Clone(c.TopicRecords)
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := len(s.ring); n > 0 && !now.After(s.ring[n-1].at) {
		return
	}
	s.ring = append(s.ring, reading{now, c})
	drop := max(len(s.ring)-s.max, 0)
	for drop < len(s.ring) && now.Sub(s.ring[drop].at) > s.window {
		drop++
	}
	if drop > 0 {
		s.ring = s.ring[:copy(s.ring, s.ring[drop:])]
	}
}

// StreamHistory is what the readings say: rates per second between
// consecutive readings (each at the later one), and the gauges.
type StreamHistory struct {
	Topics                []string // sorted
	TopicRates            map[string][]Point
	Commits, Aborts, Dead []Point
	Backlog, BacklogAge   []Point // messages, seconds
	// Last is the latest reading (zero when there is none), at LastAt.
	Last   StreamCounters
	LastAt time.Time
}

// LastRate is the newest value of a rate series (0 without one).
func LastRate(ps []Point) float64 {
	if len(ps) == 0 {
		return 0
	}
	return ps[len(ps)-1].V
}

// History computes the rates of the readings held.
func (s *Sampler) History() StreamHistory {
	s.mu.Lock()
	ring := slices.Clone(s.ring)
	s.mu.Unlock()
	h := StreamHistory{TopicRates: map[string][]Point{}}
	if len(ring) == 0 {
		return h
	}
	topics := map[string]bool{}
	for _, r := range ring {
		for t := range r.c.TopicRecords {
			topics[t] = true
		}
		h.Backlog = append(h.Backlog, Point{r.at, float64(r.c.Backlog)})
		h.BacklogAge = append(h.BacklogAge, Point{r.at, r.c.BacklogAge.Seconds()})
	}
	h.Topics = slices.Sorted(maps.Keys(topics))
	for i := 1; i < len(ring); i++ {
		prev, cur := ring[i-1], ring[i]
		dt := cur.at.Sub(prev.at).Seconds()
		rate := func(was, is int64) Point { return Point{cur.at, float64(increase(was, is)) / dt} }
		for _, t := range h.Topics {
			h.TopicRates[t] = append(h.TopicRates[t], rate(prev.c.TopicRecords[t], cur.c.TopicRecords[t]))
		}
		h.Commits = append(h.Commits, rate(prev.c.Transactions, cur.c.Transactions))
		h.Aborts = append(h.Aborts, rate(prev.c.Aborts, cur.c.Aborts))
		h.Dead = append(h.Dead, rate(prev.c.DeadLetters, cur.c.DeadLetters))
	}
	last := ring[len(ring)-1]
	h.Last, h.LastAt = last.c, last.at
	return h
}

// increase is how much a counter grew between two readings. A counter
// that went down was reset (the hub's counters started again): what it
// holds now is what it counted since, as Prometheus reads a reset.
func increase(was, is int64) int64 {
	if is < was {
		return is
	}
	return is - was
}
