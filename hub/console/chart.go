package console

import (
	"fmt"
	"html/template"
	"math"
	"strconv"
	"strings"
	"time"
)

// Point is one sample of a chart series.
type Point struct {
	At time.Time
	V  float64
}

// Series is one line of a chart.
type Series struct {
	Name   string
	Points []Point
}

// Chart is a time-series line chart, drawn on the server as inline SVG
// so that the console needs no charting library and works without
// script; the streams page swaps in a fresh one as it polls.
type Chart struct {
	ID    string
	Title string
	Unit  string // after each value: "/s", "%", " s"
	// Min and Max fix the value axis (both 0: from the data, from 0 up).
	Min, Max float64
	Series   []Series
}

const (
	chartW, chartH           = 560.0, 180.0
	chartLeft, chartRight    = 56.0, 12.0
	chartTop, chartBottom    = 12.0, 24.0
	chartPlotW, chartPlotH   = chartW - chartLeft - chartRight, chartH - chartTop - chartBottom
	chartSeriesClassesNumber = 4
)

// SVG renders the chart. Every value it writes is a number it formatted
// or text escaped here, so the result is safe to embed.
func (c Chart) SVG() template.HTML {
	var t0, t1 time.Time
	lo, hi := c.Min, c.Max
	fromData := lo == 0 && hi == 0
	n := 0
	for _, s := range c.Series {
		for _, p := range s.Points {
			if math.IsNaN(p.V) || math.IsInf(p.V, 0) {
				continue
			}
			if n == 0 || p.At.Before(t0) {
				t0 = p.At
			}
			if n == 0 || p.At.After(t1) {
				t1 = p.At
			}
			if fromData {
				hi = math.Max(hi, p.V)
				lo = math.Min(lo, p.V)
			}
			n++
		}
	}
	if hi <= lo {
		hi = lo + 1
	}
	span := t1.Sub(t0)
	x := func(t time.Time) float64 {
		if span <= 0 {
			return chartLeft + chartPlotW
		}
		return chartLeft + chartPlotW*float64(t.Sub(t0))/float64(span)
	}
	y := func(v float64) float64 { return chartTop + chartPlotH*(1-(v-lo)/(hi-lo)) }
	var b strings.Builder
	esc := template.HTMLEscapeString
	fmt.Fprintf(&b, `<figure class="chart" id="%s"><figcaption>%s</figcaption>`, esc(c.ID), esc(c.Title))
	fmt.Fprintf(&b, `<svg viewBox="0 0 %g %g" role="img" aria-label="%s">`, chartW, chartH, esc(c.Title))
	for _, v := range []float64{lo, (lo + hi) / 2, hi} {
		fmt.Fprintf(&b, `<line class="grid" x1="%g" x2="%g" y1="%.1f" y2="%.1f"/>`, chartLeft, chartLeft+chartPlotW, y(v), y(v))
		fmt.Fprintf(&b, `<text class="axis" x="%g" y="%.1f" text-anchor="end">%s</text>`, chartLeft-4, y(v)+4, esc(FormatValue(v)+c.Unit))
	}
	if n == 0 {
		fmt.Fprintf(&b, `<text class="axis" x="%g" y="%g" text-anchor="middle">no data yet</text>`, chartLeft+chartPlotW/2, chartTop+chartPlotH/2)
	} else {
		fmt.Fprintf(&b, `<text class="axis" x="%g" y="%g">%s</text>`, chartLeft, chartH-6, esc(t0.UTC().Format("Jan 2 15:04:05")))
		fmt.Fprintf(&b, `<text class="axis" x="%g" y="%g" text-anchor="end">%s</text>`, chartLeft+chartPlotW, chartH-6, esc(t1.UTC().Format("Jan 2 15:04:05")))
	}
	for i, s := range c.Series {
		var pts []string
		for _, p := range s.Points {
			if math.IsNaN(p.V) || math.IsInf(p.V, 0) {
				continue
			}
			v := math.Min(math.Max(p.V, lo), hi)
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(p.At), y(v)))
		}
		cls := "s" + strconv.Itoa(i%chartSeriesClassesNumber)
		switch len(pts) {
		case 0:
		case 1: // one sample: a dot, since a line needs two
			xy := strings.Split(pts[0], ",")
			fmt.Fprintf(&b, `<circle class="%s" cx="%s" cy="%s" r="3"/>`, cls, xy[0], xy[1])
		default:
			fmt.Fprintf(&b, `<polyline class="%s" points="%s"/>`, cls, strings.Join(pts, " "))
		}
	}
	b.WriteString(`</svg><ul class="legend">`)
	for i, s := range c.Series {
		last := "—"
		if k := len(s.Points); k > 0 {
			last = FormatValue(s.Points[k-1].V) + c.Unit
		}
		fmt.Fprintf(&b, `<li class="s%d"><span class="swatch"></span>%s <b>%s</b></li>`, i%chartSeriesClassesNumber, esc(s.Name), esc(last))
	}
	b.WriteString(`</ul></figure>`)
	return template.HTML(b.String()) // #nosec: built from escaped text and numbers
}

// FormatValue writes v with about three significant digits: 0.934,
// 12.3, 4,520, 1.2M.
func FormatValue(v float64) string {
	a := math.Abs(v)
	switch {
	case math.IsNaN(v):
		return "NaN"
	case a >= 1e6:
		return strconv.FormatFloat(v/1e6, 'f', 1, 64) + "M"
	case a >= 1e4:
		return strconv.FormatFloat(v/1e3, 'f', 1, 64) + "k"
	case a >= 100 || a == math.Trunc(a):
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case a >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
	return strconv.FormatFloat(v, 'f', 3, 64)
}
