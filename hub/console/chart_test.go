package console

import (
	"math"
	"strings"
	"testing"
	"time"
)

func TestChartSVG(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	c := Chart{ID: "acc", Title: `holdout <accuracy> & "more"`, Unit: "%", Series: []Series{
		{Name: "production", Points: []Point{{t0, 90}, {t0.Add(time.Minute), math.NaN()}, {t0.Add(2 * time.Minute), 92}}},
		{Name: "candidate <b>", Points: []Point{{t0.Add(time.Minute), 95}}},
	}}
	svg := string(c.SVG())
	if strings.Contains(svg, "<accuracy>") || strings.Contains(svg, "candidate <b>") || !strings.Contains(svg, "holdout &lt;accuracy&gt; &amp; &#34;more&#34;") {
		t.Fatalf("text is not escaped: %s", svg)
	}
	// Two finite points make the first line; the NaN is left out. The
	// candidate's one point is a dot.
	if n := strings.Count(svg, "<polyline"); n != 1 {
		t.Fatalf("%d polylines: %s", n, svg)
	}
	pts := svg[strings.Index(svg, `points="`)+8:]
	pts = pts[:strings.Index(pts, `"`)]
	if len(strings.Fields(pts)) != 2 {
		t.Fatalf("points %q", pts)
	}
	// From 0 up to the highest value: 95 sits at the top, 0 at the bottom.
	if !strings.Contains(svg, `<circle class="s1" cx="`) || !strings.Contains(svg, `cy="12.0"`) {
		t.Fatalf("the candidate's dot: %s", svg)
	}
	if !strings.Contains(svg, "<b>92%</b>") || !strings.Contains(svg, "<b>95%</b>") {
		t.Fatalf("legend lacks the last values: %s", svg)
	}
	if empty := string(Chart{Title: "x"}.SVG()); !strings.Contains(empty, "no data yet") || strings.Contains(empty, "<polyline") {
		t.Fatalf("empty chart: %s", empty)
	}
}

func TestFormatValue(t *testing.T) {
	for v, want := range map[float64]string{0: "0", 0.9345: "0.934", 3.14159: "3.14", 12.34: "12.3", 452: "452", 45200: "45.2k", 1.25e6: "1.2M", 7: "7"} {
		if got := FormatValue(v); got != want {
			t.Errorf("FormatValue(%v) = %q, want %q", v, got, want)
		}
	}
}
