package pipeline

import "sync"

// Recent rows: the last feature rows the model was fed, so that an
// update's self-test can time a candidate on this device's real windows,
// not only on the golden vectors that shipped with it. Bounded by count
// and by bytes (an image pipeline's rows are large).
const (
	recentRows  = 64
	recentBytes = 1 << 20
)

// recent is a ring of copies of the latest rows; the pipeline writes it,
// the update manager reads it from another goroutine.
type recent struct {
	mu    sync.Mutex
	rows  [][]float32
	next  int
	width int
}

// add keeps the rows of x (width values each), replacing the oldest.
func (r *recent) add(x []float32, width int) {
	if width <= 0 || len(x) < width {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if width != r.width { // another model's rows: start again
		r.rows, r.next, r.width = nil, 0, width
	}
	keep := max(1, min(recentRows, recentBytes/(4*width))) // one row at least, however wide
	// Only the last keep rows of a large batch can stay: copy those.
	start := max(0, len(x)/width-keep) * width
	for i := start; i+width <= len(x); i += width {
		row := x[i : i+width]
		if len(r.rows) < keep {
			r.rows = append(r.rows, append([]float32(nil), row...))
			continue
		}
		r.next %= len(r.rows)
		r.rows[r.next] = append(r.rows[r.next][:0], row...)
		r.next++
	}
}

// snapshot copies the rows, oldest first.
func (r *recent) snapshot() [][]float32 {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([][]float32, 0, len(r.rows))
	for i := range r.rows {
		row := r.rows[(r.next+i)%len(r.rows)]
		out = append(out, append([]float32(nil), row...))
	}
	return out
}

// RecentRows are copies of the last feature rows (at most 64, and 1 MiB)
// the running model was fed, oldest first.
func (p *Pipeline) RecentRows() [][]float32 { return p.recent.snapshot() }
