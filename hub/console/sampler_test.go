package console

import (
	"testing"
	"time"
)

func values(ps []Point) []float64 {
	out := make([]float64, len(ps))
	for i, p := range ps {
		out[i] = p.V
	}
	return out
}

func equal(a, b []float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Counter deltas become rates per second at the later reading; a topic
// that appears counts from zero; gauges are charted as read.
func TestSamplerRates(t *testing.T) {
	s := NewSampler(5*time.Second, time.Minute)
	t0 := now
	s.Sample(t0, StreamCounters{TopicRecords: map[string]int64{"windows": 100}, Transactions: 10, Backlog: 4, BacklogAge: 2 * time.Second})
	s.Sample(t0.Add(5*time.Second), StreamCounters{TopicRecords: map[string]int64{"windows": 600, "events": 10}, Transactions: 20, Aborts: 1, Backlog: 0})
	s.Sample(t0.Add(15*time.Second), StreamCounters{TopicRecords: map[string]int64{"windows": 1600, "events": 10}, Transactions: 40, Aborts: 1, DeadLetters: 5})
	h := s.History()
	if len(h.Topics) != 2 || h.Topics[0] != "events" || h.Topics[1] != "windows" {
		t.Fatalf("topics %v", h.Topics)
	}
	for name, c := range map[string]struct{ got, want []float64 }{
		"windows":     {values(h.TopicRates["windows"]), []float64{100, 100}},
		"events":      {values(h.TopicRates["events"]), []float64{2, 0}},
		"commits":     {values(h.Commits), []float64{2, 2}},
		"aborts":      {values(h.Aborts), []float64{0.2, 0}},
		"dead":        {values(h.Dead), []float64{0, 0.5}},
		"backlog":     {values(h.Backlog), []float64{4, 0, 0}},
		"backlog age": {values(h.BacklogAge), []float64{2, 0, 0}},
	} {
		if !equal(c.got, c.want) {
			t.Errorf("%s: %v, want %v", name, c.got, c.want)
		}
	}
	if p := h.TopicRates["windows"]; !p[1].At.Equal(t0.Add(15 * time.Second)) {
		t.Errorf("a rate is at %s, want at the later reading", p[1].At)
	}
	if !h.LastAt.Equal(t0.Add(15*time.Second)) || h.Last.Transactions != 40 || LastRate(h.Commits) != 2 {
		t.Errorf("last reading %s %+v", h.LastAt, h.Last)
	}
}

// A counter that goes down (the counters started again) is a reset: the
// rate is what it counted since, never negative.
func TestSamplerCounterResetIsNotNegative(t *testing.T) {
	s := NewSampler(5*time.Second, time.Minute)
	s.Sample(now, StreamCounters{TopicRecords: map[string]int64{"windows": 5000, "late": 7}, Transactions: 900, Aborts: 3})
	s.Sample(now.Add(5*time.Second), StreamCounters{TopicRecords: map[string]int64{"windows": 50}, Transactions: 10})
	h := s.History()
	for name, c := range map[string]struct{ got, want []float64 }{
		"windows": {values(h.TopicRates["windows"]), []float64{10}},
		"late":    {values(h.TopicRates["late"]), []float64{0}}, // gone: read as 0 since the reset
		"commits": {values(h.Commits), []float64{2}},
		"aborts":  {values(h.Aborts), []float64{0}},
	} {
		if !equal(c.got, c.want) {
			t.Errorf("%s: %v, want %v", name, c.got, c.want)
		}
	}
}

// The ring holds the window and no more, by count and by age; a reading
// not after the last is dropped; the caller's map is copied.
func TestSamplerRingIsBounded(t *testing.T) {
	s := NewSampler(5*time.Second, time.Minute) // 13 readings
	m := map[string]int64{"windows": 0}
	for i := range 100 {
		m["windows"] = int64(i * 10)
		s.Sample(now.Add(time.Duration(i)*5*time.Second), StreamCounters{TopicRecords: m})
	}
	s.Sample(now, StreamCounters{TopicRecords: map[string]int64{"windows": 1}}) // clock stepped back
	m["windows"] = -1
	h := s.History()
	if n := len(h.Backlog); n != 13 {
		t.Fatalf("%d readings held, want 13", n)
	}
	if first := h.Backlog[0].At; !first.Equal(now.Add(87 * 5 * time.Second)) {
		t.Errorf("oldest reading at %s", first)
	}
	if h.Last.TopicRecords["windows"] != 990 {
		t.Errorf("last reading %v: the stepped-back reading was kept, or the map shared", h.Last.TopicRecords)
	}
	for _, p := range h.TopicRates["windows"] {
		if p.V != 2 {
			t.Fatalf("rates %v, want 2/s throughout", values(h.TopicRates["windows"]))
		}
	}
	// Readings far apart: only those within the window stay.
	s = NewSampler(5*time.Second, time.Minute)
	s.Sample(now, StreamCounters{})
	s.Sample(now.Add(time.Minute-time.Second), StreamCounters{})
	s.Sample(now.Add(2*time.Minute), StreamCounters{})
	if n := len(s.History().Backlog); n != 1 {
		t.Errorf("%d readings after a gap longer than the window, want 1", n)
	}
}
