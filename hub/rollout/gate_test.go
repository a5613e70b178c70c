package rollout

import (
	"strings"
	"testing"

	"github.com/outpost-edge/outpost/sync/state"
)

func hwLabels(i int) map[string]string {
	if i%2 == 0 {
		return map[string]string{"hw": "pi4"}
	}
	return map[string]string{"hw": "nuc"}
}

// slowOnPi measures 40 ms p99 on the Pis and 4 ms on the NUCs, 30 MB.
func slowOnPi(id string) state.SelfTest {
	st := state.SelfTest{Calls: 50, LatencyP50US: 2000, LatencyP99US: 4000, BatchRows: 4, BatchP50US: 3000, BatchP99US: 4000,
		RSSGrowthMB: 30, ActiveLatencyP50US: 1500, ActiveBatchP50US: 2500}
	if hwLabels(int(id[len(id)-1] - '0'))["hw"] == "pi4" {
		st.LatencyP50US, st.LatencyP99US, st.BatchP50US, st.BatchP99US = 20000, 40000, 30000, 40000
		st.ActiveLatencyP50US, st.ActiveBatchP50US = 15000, 25000
	}
	return st
}

// The gates travel in the desired state; a canary that refuses the
// candidate at self-test halts the rollout before any other device is
// touched.
func TestPerfGatesReachTheDeviceAndARefusalHaltsAtTheCanary(t *testing.T) {
	f := newFleet(6, func(int) map[string]string { return map[string]string{"hw": "pi4"} })
	f.measure = func(string) state.SelfTest {
		return state.SelfTest{Calls: 50, LatencyP50US: 20000, LatencyP99US: 40000, BatchP99US: 40000, RSSGrowthMB: 30, ActiveLatencyP50US: 15000}
	}
	c, ctx := newController(t, f)
	s := spec("1,100%")
	s.Gates.MaxLatencyMS, s.Gates.MaxRSSMB = 4, 64
	r, err := c.Start(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	r = tickUntil(t, c, ctx, r.ID, 20, nil)
	if r.State != Halted || len(r.Devices) != 1 || !strings.Contains(r.Reason, "max_latency_ms 4") {
		t.Fatalf("rollout %s (%s) with %d devices, want halted at the canary on max_latency_ms", r.State, r.Reason, len(r.Devices))
	}
	for id, d := range r.Devices {
		if d.Phase != state.PhaseFailed || d.SelfTest == nil || d.SelfTest.LatencyP99US != 40000 {
			t.Fatalf("canary %s: %+v", id, d)
		}
		g := f.sent[0].Models["m"]
		if f.sent[0].Device != id || g.Version != 2 || g.MaxLatencyMS != 4 || g.MaxRSSMB != 64 || g.MaxLatencyFactor != 3 {
			t.Fatalf("desired state of the canary carries gates %+v", g.PerfGates)
		}
	}
	for id := range f.devs {
		if _, canary := r.Devices[id]; canary {
			continue
		}
		if _, ok := f.desired[id]; ok || len(f.devs[id].Reported.Updates) != 0 {
			t.Fatalf("device %s was touched: %+v", id, f.desired[id])
		}
	}
	// The revert to v1 carries no gates.
	for id := range r.Devices {
		if g := f.desired[id].Models["m"]; g.Version != 1 || g.PerfGates != (state.PerfGates{}) {
			t.Fatalf("revert %+v", g)
		}
	}
}

// An agent that reports its measurement without enforcing the gates is
// held to them by the hub.
func TestHubHoldsReportedSelfTestFiguresToTheGates(t *testing.T) {
	f := newFleet(4, hwLabels)
	f.measure, f.lax = slowOnPi, true
	c, ctx := newController(t, f)
	s := spec("100%")
	s.Gates.MaxRSSMB = 16
	r, err := c.Start(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	r = tickUntil(t, c, ctx, r.ID, 20, nil)
	if r.State != Halted || !strings.Contains(r.Reason, "max_rss_mb 16") {
		t.Fatalf("rollout %s (%s), want halted on max_rss_mb", r.State, r.Reason)
	}
}

func TestSpecRefusesNegativePerfGates(t *testing.T) {
	for _, g := range []Gates{{MaxLatencyMS: -1}, {MaxRSSMB: -1}, {MaxErrorRate: 2}, {MaxErrorRate: -0.1}} {
		s := spec("1")
		s.Gates = g
		s.Defaults()
		if err := s.Validate(); err == nil {
			t.Errorf("%+v accepted", g)
		}
	}
}

// Costs group the devices' measurements by a label's values.
func TestCostsByLabel(t *testing.T) {
	f := newFleet(5, hwLabels) // d00 d02 d04 are pi4, d01 d03 nuc
	f.measure = slowOnPi
	c, ctx := newController(t, f)
	s := spec("100%")
	s.Gates.MaxLatencyMS = 10 // the Pis refuse, the NUCs fit
	s.Gates.MinHealthy = 0.01
	r, err := c.Start(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	r = tickUntil(t, c, ctx, r.ID, 20, nil)
	devs := f.Devices()
	devs = append(devs, state.Device{ID: "bare", Reported: &state.Reported{Updates: map[string]state.Update{
		"m": {Model: "m", To: 2, Phase: state.PhaseCommitted, SelfTest: &state.SelfTest{LatencyP50US: 1, LatencyP99US: 2}}}}})
	costs := Costs(devs, "m", 2, "hw")
	if len(costs) != 3 || costs[0].Value != "" || costs[1].Value != "nuc" || costs[2].Value != "pi4" {
		t.Fatalf("costs %+v", costs)
	}
	pi, nuc := costs[2], costs[1]
	if pi.Devices != 3 || pi.Refused != 3 || pi.LatencyP99US != (Spread{Median: 40000, Max: 40000}) || pi.RSSGrowthMB.Median != 30 {
		t.Fatalf("pi4 %+v", pi)
	}
	if nuc.Devices != 2 || nuc.Refused != 0 || nuc.LatencyP50US.Median != 2000 || nuc.ActiveLatencyP50US.Max != 1500 {
		t.Fatalf("nuc %+v", nuc)
	}
	if got := Costs(devs, "m", 3, "hw"); len(got) != 0 {
		t.Fatalf("another version: %+v", got)
	}
	if got := RolloutCosts(r, devs, "hw"); len(got) != 2 {
		t.Fatalf("the rollout's own devices: %+v", got)
	}
	if sp := spread([]float64{4, 1, 3, 2}); sp != (Spread{Median: 2.5, Max: 4}) {
		t.Fatalf("spread %+v", sp)
	}
}
