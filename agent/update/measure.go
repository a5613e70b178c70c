package update

import (
	"bytes"
	"fmt"
	"os"
	"runtime/debug"
	"slices"
	"strconv"
	"time"

	"github.com/outpost-edge/outpost/agent/infer"
	"github.com/outpost-edge/outpost/sync/state"
)

// Measurement settings: at least minCalls timed calls at each batch size,
// more while they fit in measureFor, never more than maxCalls. A
// candidate far over budget stops after minCalls (or measureLimit).
const (
	minCalls     = 50
	maxCalls     = 500
	measureFor   = 200 * time.Millisecond
	measureLimit = 10 * time.Second // a model this slow is measured on fewer calls
	maxBatchRows = 1024
)

// percentile is the nearest-rank q-th percentile (0 < q ≤ 100) of ds, in
// µs; ds is sorted in place.
func percentile(ds []time.Duration, q float64) float64 {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	rank := int(float64(len(ds))*q/100+0.999999) - 1
	rank = min(max(rank, 0), len(ds)-1)
	return float64(ds[rank]) / 1e3
}

// timeCalls runs call repeatedly and returns the timed durations: a warm
// call first (untimed), then at least minCalls, more while the whole is
// under measureFor, at most maxCalls; a call so slow that the whole
// passes measureLimit stops it early (after 3 calls at least).
func timeCalls(call func() (time.Duration, error)) ([]time.Duration, error) {
	if _, err := call(); err != nil {
		return nil, err
	}
	var ds []time.Duration
	start := time.Now()
	for len(ds) < maxCalls {
		spent := time.Since(start)
		if len(ds) >= minCalls && spent > measureFor || len(ds) >= 3 && spent > measureLimit {
			break
		}
		d, err := call()
		if err != nil {
			return nil, err
		}
		ds = append(ds, d)
	}
	return ds, nil
}

// inputs are what a self-test times a model on: its golden vectors, and
// the pipeline's recent real rows of the same width (a burst of this
// device's own windows; none before the pipeline has run, or when the
// candidate's input differs from the running model's).
type inputs struct {
	golden, real [][]float32
}

func inputsOf(mod *infer.Model, recent [][]float32) inputs {
	var in inputs
	for _, g := range mod.Manifest.Golden {
		in.golden = append(in.golden, g.Input)
	}
	if len(in.golden) == 0 {
		return in
	}
	for _, r := range recent {
		if len(r) == len(in.golden[0]) {
			in.real = append(in.real, r)
		}
	}
	return in
}

// sameWidth reports whether two models take rows of one width (by their
// golden vectors).
func sameWidth(a, b *infer.Model) bool {
	ga, gb := a.Manifest.Golden, b.Manifest.Golden
	return len(ga) > 0 && len(gb) > 0 && len(ga[0].Input) == len(gb[0].Input)
}

// batchRows is n rows cycling through the real rows, or through the
// golden vectors when there are none.
func (in inputs) batchRows(n int) []float32 {
	src := in.real
	if len(src) == 0 {
		src = in.golden
	}
	var x []float32
	for i := range n {
		x = append(x, src[i%len(src)]...)
	}
	return x
}

// measure times mod at batch 1, cycling through the golden vectors and
// the real rows, and at batch rows (real rows when there are some).
func measure(mod *infer.Model, batch int, in inputs) (p50, p99, bp50, bp99 float64, calls int, err error) {
	if len(in.golden) == 0 {
		return 0, 0, 0, 0, 0, fmt.Errorf("no golden vectors to time")
	}
	all := append(append([][]float32(nil), in.golden...), in.real...)
	i := 0
	one, err := timeCalls(func() (time.Duration, error) {
		_, d, err := mod.Infer(all[i%len(all)])
		i++
		return d, err
	})
	if err != nil {
		return 0, 0, 0, 0, 0, err
	}
	x := in.batchRows(batch)
	many, err := timeCalls(func() (time.Duration, error) {
		_, d, err := mod.Infer(x)
		return d, err
	})
	if err != nil {
		return 0, 0, 0, 0, 0, err
	}
	return percentile(one, 50), percentile(one, 99), percentile(many, 50), percentile(many, 99), min(len(one), len(many)), nil
}

// usualBatch is the pipeline's mean rows per model call so far, or the
// number of golden vectors before it has run any.
func usualBatch(r Runner, golden int) int {
	inf, _, _, calls, _ := r.Health()
	n := golden
	if calls > 0 {
		n = int((inf + calls/2) / calls)
	}
	return min(max(n, 1), maxBatchRows)
}

// residentBytes is the process's resident set size, from /proc/self/statm
// (0 where there is none). Freed Go memory is returned to the system
// first, so that garbage does not count as growth.
func residentBytes() int64 {
	debug.FreeOSMemory()
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := bytes.Fields(b)
	if len(f) < 2 {
		return 0
	}
	pages, err := strconv.ParseInt(string(f[1]), 10, 64)
	if err != nil {
		return 0
	}
	return pages * int64(os.Getpagesize())
}

// growthMB is the resident-memory growth between two readings, in MB;
// a reading that shrank (noise: pages given back) counts as none.
func growthMB(before, after int64) float64 {
	if before == 0 || after <= before {
		return 0
	}
	return float64(after-before) / (1 << 20)
}

// selfTestGates are j's budget: the rollout's, with the agent's own
// latency factor where the desired state sets none.
func (m *Manager) selfTestGates(j *job) state.PerfGates {
	g := j.Gates
	if g.MaxLatencyFactor == 0 {
		g.MaxLatencyFactor = m.cfg.MaxLatencyFactor
	}
	return g
}
