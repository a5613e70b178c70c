package rollout

import (
	"slices"
	"sort"

	"github.com/outpost-edge/outpost/sync/state"
)

// Cost is what one model version costs on one class of device: the
// self-test measurements its devices reported, grouped by the value of a
// label (hardware, say), so a fleet manager sees the cost on each kind of
// hardware before widening a rollout.
type Cost struct {
	Label string `json:"label"`
	Value string `json:"value"` // "" for devices without the label
	// Devices that reported a measurement, and how many of them refused
	// the candidate before the switch.
	Devices int `json:"devices"`
	Refused int `json:"refused"`
	// Medians and worst over the devices of the class.
	LatencyP50US       Spread `json:"latency_p50_us"`
	LatencyP99US       Spread `json:"latency_p99_us"`
	BatchP99US         Spread `json:"batch_p99_us"`
	RSSGrowthMB        Spread `json:"rss_growth_mb"`
	ActiveLatencyP50US Spread `json:"active_latency_p50_us"`
}

// Spread is a figure's median and maximum over a class of devices.
type Spread struct {
	Median float64 `json:"median"`
	Max    float64 `json:"max"`
}

func spread(v []float64) Spread {
	if len(v) == 0 {
		return Spread{}
	}
	slices.Sort(v)
	med := v[len(v)/2]
	if len(v)%2 == 0 {
		med = (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	return Spread{Median: med, Max: v[len(v)-1]}
}

// Costs groups by label the self-test measurements of model at version
// that devs reported (their last update of the model), one Cost per label
// value, in the values' order.
func Costs(devs []state.Device, model string, version int64, label string) []Cost {
	type acc struct {
		c                       Cost
		p50, p99, bp99, rss, ap []float64
	}
	by := map[string]*acc{}
	for _, d := range devs {
		if d.Reported == nil {
			continue
		}
		u, ok := d.Reported.Updates[model]
		if !ok || u.To != version || u.SelfTest == nil {
			continue
		}
		v := d.Labels[label]
		a := by[v]
		if a == nil {
			a = &acc{c: Cost{Label: label, Value: v}}
			by[v] = a
		}
		st := u.SelfTest
		a.c.Devices++
		if u.Phase == state.PhaseFailed {
			a.c.Refused++
		}
		a.p50, a.p99, a.bp99, a.rss = append(a.p50, st.LatencyP50US), append(a.p99, st.LatencyP99US), append(a.bp99, st.BatchP99US), append(a.rss, st.RSSGrowthMB)
		if st.ActiveLatencyP50US > 0 {
			a.ap = append(a.ap, st.ActiveLatencyP50US)
		}
	}
	out := []Cost{}
	for _, a := range by {
		a.c.LatencyP50US, a.c.LatencyP99US, a.c.BatchP99US = spread(a.p50), spread(a.p99), spread(a.bp99)
		a.c.RSSGrowthMB, a.c.ActiveLatencyP50US = spread(a.rss), spread(a.ap)
		out = append(out, a.c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Value < out[j].Value })
	return out
}

// RolloutCosts are r's own devices' measurements grouped by label.
func RolloutCosts(r *Rollout, fleet []state.Device, label string) []Cost {
	var mine []state.Device
	for _, d := range fleet {
		if _, ok := r.Devices[d.ID]; ok {
			mine = append(mine, d)
		}
	}
	return Costs(mine, r.Spec.Model, r.Spec.Version, label)
}
