package join

import (
	"testing"
	"time"
)

func TestJoin(t *testing.T) {
	t0 := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	win := func(dev, key string, start int, rev int) Window {
		return Window{Device: dev, Pipeline: "p", Key: key, Start: t0.Add(time.Duration(start) * time.Second),
			End: t0.Add(time.Duration(start+10) * time.Second), Revision: rev}
	}
	exact := func(dev, key string, start, class int) Label {
		return Label{Device: dev, Pipeline: "p", Key: key, WindowStart: t0.Add(time.Duration(start) * time.Second), Class: class}
	}
	at := func(dev, key string, sec float64, class int) Label {
		return Label{Device: dev, Pipeline: "p", Key: key, EventTime: t0.Add(time.Duration(sec * float64(time.Second))), Class: class}
	}
	type step struct {
		w       *Window
		l       *Label
		advance time.Duration
		pairs   int
	}
	W := func(w Window) *Window { return &w }
	L := func(l Label) *Label { return &l }
	cases := []struct {
		name                          string
		steps                         []step
		matched, unmatched, unlabeled int64
	}{
		{"label after window, by id", []step{{w: W(win("d", "k", 0, 0))}, {l: L(exact("d", "k", 0, 1)), pairs: 1}}, 1, 0, 0},
		{"label before window", []step{{l: L(exact("d", "k", 0, 1))}, {w: W(win("d", "k", 0, 0)), pairs: 1}}, 1, 0, 0},
		{"label by event time inside the window", []step{{w: W(win("d", "k", 0, 0))}, {w: W(win("d", "k", 10, 0))}, {l: L(at("d", "k", 12.5, 0)), pairs: 1}}, 1, 0, 1},
		{"event time at the window end belongs to the next", []step{{w: W(win("d", "k", 0, 0))}, {l: L(at("d", "k", 10, 1))}, {w: W(win("d", "k", 10, 0)), pairs: 1}}, 1, 0, 1},
		{"another device's window does not match", []step{{w: W(win("d1", "k", 0, 0))}, {l: L(exact("d2", "k", 0, 1))}, {advance: time.Minute}}, 0, 1, 1},
		{"a label waits no longer than Wait", []step{{l: L(exact("d", "k", 0, 1))}, {advance: 31 * time.Second}, {w: W(win("d", "k", 0, 0))}}, 0, 1, 1},
		{"within Wait it still matches", []step{{l: L(exact("d", "k", 0, 1))}, {advance: 29 * time.Second}, {w: W(win("d", "k", 0, 0)), pairs: 1}}, 1, 0, 0},
		{"a revised window replaces the waiting one", []step{{w: W(win("d", "k", 0, 0))}, {w: W(win("d", "k", 0, 1))}, {l: L(exact("d", "k", 0, 1)), pairs: 1}}, 1, 0, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			now := t0
			j := New(30 * time.Second)
			j.Now = func() time.Time { return now }
			var last []Pair
			for i, s := range c.steps {
				now = now.Add(s.advance)
				j.Expire()
				var got []Pair
				switch {
				case s.w != nil:
					got = j.AddWindow(*s.w)
				case s.l != nil:
					got = j.AddLabel(*s.l)
				}
				if len(got) != s.pairs {
					t.Fatalf("step %d: %d pairs, want %d", i, len(got), s.pairs)
				}
				if len(got) > 0 {
					last = got
				}
			}
			now = now.Add(time.Hour)
			j.Expire()
			if j.Stats.Matched != c.matched || j.Stats.UnmatchedLabels != c.unmatched || j.Stats.UnlabelledWindows != c.unlabeled {
				t.Fatalf("stats %+v, want matched %d unmatched %d unlabelled %d", j.Stats, c.matched, c.unmatched, c.unlabeled)
			}
			if c.name == "a revised window replaces the waiting one" && last[0].Window.Revision != 1 {
				t.Fatalf("paired revision %d, want the later 1", last[0].Window.Revision)
			}
			if w, l := j.Pending(); w != 0 || l != 0 {
				t.Fatalf("%d windows and %d labels still pending", w, l)
			}
		})
	}
}
