package pipeline

import (
	"testing"
	"time"
)

// TestCallsPercentiles: nearest-rank p50 and p99 of the recorded calls,
// the mean rows per call, and only the latest 256 calls once the ring is
// full.
func TestCallsPercentiles(t *testing.T) {
	var c calls
	if got := c.snapshot(); got != (CallLatency{}) {
		t.Fatalf("empty ring: %+v", got)
	}
	c.add(7*time.Microsecond, 3)
	if got := c.snapshot(); got.Calls != 1 || got.P50 != 7*time.Microsecond || got.P99 != 7*time.Microsecond || got.RowsPerCall != 3 {
		t.Fatalf("one call: %+v", got)
	}

	c = calls{}
	// 100 calls of 1..100 µs, added out of order: p50 is 50, p99 99.
	for i := range 100 {
		c.add(time.Duration((i*37)%100+1)*time.Microsecond, 1+i%2)
	}
	got := c.snapshot()
	if got.Calls != 100 || got.P50 != 50*time.Microsecond || got.P99 != 99*time.Microsecond || got.RowsPerCall != 1.5 {
		t.Fatalf("100 calls: %+v; want p50 50µs, p99 99µs, 1.5 rows a call", got)
	}

	// 300 more calls: the 256 latest (1000..1255 µs) replace the rest.
	for i := range 300 {
		c.add(time.Duration(956+i)*time.Microsecond, 4)
	}
	got = c.snapshot()
	if got.Calls != recentCalls || got.P50 != 1127*time.Microsecond || got.P99 != 1253*time.Microsecond || got.RowsPerCall != 4 {
		t.Fatalf("after 400 calls: %+v; want 256 calls, p50 1127µs (rank 128), p99 1253µs (rank 254), 4 rows a call", got)
	}
}
