package pipeline

import "testing"

// TestRecentRowsRing: the ring keeps the latest rows oldest first, at
// most 64 of them and 1 MiB, copies what it keeps, and starts again for
// rows of another width.
func TestRecentRowsRing(t *testing.T) {
	var r recent
	var x []float32
	for i := range 100 {
		x = append(x, float32(i), float32(-i))
	}
	r.add(x, 2)
	x[199] = 42 // the caller reuses its buffer
	got := r.snapshot()
	if len(got) != recentRows || got[0][0] != 36 || got[63][0] != 99 || got[63][1] != -99 {
		t.Fatalf("after 100 rows: %d kept, first %v, last %v; want 64 from row 36 to 99", len(got), got[0], got[len(got)-1])
	}
	got[0][0] = 7 // and snapshots are copies
	if r.snapshot()[0][0] != 36 {
		t.Fatal("a snapshot shares the ring's memory")
	}
	wide := make([]float32, 3*96*96) // an image row: 110 KB, 9 fit in 1 MiB
	for i := range 20 {
		wide[0] = float32(i)
		r.add(wide, len(wide))
	}
	got = r.snapshot()
	if len(got) != recentBytes/(4*len(wide)) || got[len(got)-1][0] != 19 || len(got[0]) != len(wide) {
		t.Fatalf("wide rows: %d kept (last starts %v), want %d, the latest last", len(got), got[len(got)-1][0], recentBytes/(4*len(wide)))
	}
}
