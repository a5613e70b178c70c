package bridge

import (
	"testing"
	"time"
)

// The backoff after a failure doubles while runs fail without committing,
// and starts again from a second after a run that committed: before, a
// bridge that had once backed off to 30 s waited 30 s into every later
// outage, however long it had run well in between.
func TestBackoffStartsAgainAfterAHealthyRun(t *testing.T) {
	var waits []time.Duration
	var d time.Duration
	for _, committed := range []bool{false, false, false, false, false, false, false, true, false} {
		d = nextBackoff(d, committed)
		waits = append(waits, d)
	}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 30 * time.Second, 30 * time.Second, time.Second, 2 * time.Second}
	for i := range want {
		if waits[i] != want[i] {
			t.Fatalf("waits %v, want %v", waits, want)
		}
	}
}
