// Package join pairs window feature records with the labels that arrive
// for them later (from devices' `labels` stream or cloud teams' Kafka
// topic), or earlier. A label names its window exactly (device, pipeline,
// key and window start) or by an event time inside the window (an
// interval join). Either side waits at most Wait for the other; a label
// that finds no window in time is counted unmatched, never silently lost.
package join

import (
	"time"

	"github.com/outpost-edge/outpost/hub/api"
)

// Window is one window's features, by device, pipeline and key.
type Window struct {
	Device, Pipeline, Key string
	Start, End            time.Time
	Fields                map[string]map[string]float64 // field → aggregation → value
	Revision              int
}

// Label is a ground-truth class for one window.
type Label struct {
	Device, Pipeline, Key string
	// WindowStart names the window exactly; zero means: the window whose
	// [start, end) holds EventTime.
	WindowStart time.Time
	EventTime   time.Time
	Class       int
}

// Pair is a window with its label.
type Pair struct {
	Window Window
	Class  int
}

// Stats are the join's counters (hub/api, shared with the CLI).
type Stats = api.JoinStats

type stream struct{ device, pipeline, key string }

type pendingWindow struct {
	w       Window
	arrived time.Time
}

type pendingLabel struct {
	l       Label
	arrived time.Time
}

// Join holds what waits for its other half.
type Join struct {
	Wait  time.Duration
	Now   func() time.Time
	Stats Stats

	windows map[stream][]pendingWindow
	labels  map[stream][]pendingLabel
}

// New makes a join whose halves wait up to wait.
func New(wait time.Duration) *Join {
	return &Join{Wait: wait, Now: time.Now, windows: map[stream][]pendingWindow{}, labels: map[stream][]pendingLabel{}}
}

func (l Label) fits(w Window) bool {
	if !l.WindowStart.IsZero() {
		return l.WindowStart.Equal(w.Start)
	}
	return !l.EventTime.Before(w.Start) && l.EventTime.Before(w.End)
}

// AddWindow offers a window; it returns the pair if its label was waiting.
// A later revision of the same window (a late event updated it) replaces
// the waiting one.
func (j *Join) AddWindow(w Window) []Pair {
	s := stream{w.Device, w.Pipeline, w.Key}
	if ls := j.labels[s]; len(ls) > 0 {
		for i, pl := range ls {
			if pl.l.fits(w) {
				j.labels[s] = append(ls[:i], ls[i+1:]...)
				j.Stats.Matched++
				return []Pair{{Window: w, Class: pl.l.Class}}
			}
		}
	}
	ws := j.windows[s]
	for i := range ws {
		if ws[i].w.Start.Equal(w.Start) {
			if w.Revision >= ws[i].w.Revision {
				ws[i].w = w
				j.Stats.Replaced++
			}
			return nil
		}
	}
	j.windows[s] = append(ws, pendingWindow{w: w, arrived: j.Now()})
	return nil
}

// AddLabel offers a label; it returns the pair if its window was waiting.
func (j *Join) AddLabel(l Label) []Pair {
	s := stream{l.Device, l.Pipeline, l.Key}
	ws := j.windows[s]
	for i, pw := range ws {
		if l.fits(pw.w) {
			j.windows[s] = append(ws[:i], ws[i+1:]...)
			j.Stats.Matched++
			return []Pair{{Window: pw.w, Class: l.Class}}
		}
	}
	j.labels[s] = append(j.labels[s], pendingLabel{l: l, arrived: j.Now()})
	return nil
}

// Expire drops what has waited longer than Wait, counting labels that
// found no window and windows that got no label.
func (j *Join) Expire() {
	cut := j.Now().Add(-j.Wait)
	j.Stats.UnlabelledWindows += prune(j.windows, func(p pendingWindow) time.Time { return p.arrived }, cut)
	j.Stats.UnmatchedLabels += prune(j.labels, func(p pendingLabel) time.Time { return p.arrived }, cut)
}

// prune drops the entries that arrived before cut and counts them.
func prune[T any](m map[stream][]T, arrived func(T) time.Time, cut time.Time) int64 {
	var dropped int64
	for s, entries := range m {
		keep := entries[:0]
		for _, e := range entries {
			if arrived(e).Before(cut) {
				dropped++
				continue
			}
			keep = append(keep, e)
		}
		if len(keep) == 0 {
			delete(m, s)
		} else {
			m[s] = keep
		}
	}
	return dropped
}

// Pending is how many windows and labels wait.
func (j *Join) Pending() (windows, labels int) {
	for _, ws := range j.windows {
		windows += len(ws)
	}
	for _, ls := range j.labels {
		labels += len(ls)
	}
	return windows, labels
}
