package hub

import (
	"sort"
	"sync"

	"github.com/outpost-edge/outpost/sync/state"
)

// devices keeps the latest reported state of every device the hub has heard
// from. Authentication and the durable registry arrive with device enrolment.
type devices struct {
	mu   sync.Mutex
	last map[string]state.Reported
}

func newDevices() *devices { return &devices{last: map[string]state.Reported{}} }

func (d *devices) put(r state.Reported) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.last[r.Device] = r
}

func (d *devices) list() []state.Reported {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]state.Reported, 0, len(d.last))
	for _, r := range d.last {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Device < out[j].Device })
	return out
}
