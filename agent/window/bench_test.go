package window

import (
	"strconv"
	"testing"
	"time"
)

// BenchmarkWindowKeyedTumbling: a keyed tumbling mean over 1,000 keys, in
// events per second on one core (the operator is single-threaded).
func BenchmarkWindowKeyedTumbling(b *testing.B) {
	o, err := New(Spec{Kind: Tumbling, Size: time.Second, MaxOutOfOrder: 50 * time.Millisecond, Fields: []string{"v"}})
	if err != nil {
		b.Fatal(err)
	}
	keys := make([]string, 1000)
	for i := range keys {
		keys[i] = "sensor-" + strconv.Itoa(i)
	}
	var out []Result
	ev := Event{Values: []float64{0}}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ev.Key = keys[i%len(keys)]
		ev.Time = t0.Add(time.Duration(i) * 10 * time.Microsecond) // 100k events per event-second
		ev.Values[0] = float64(i & 1023)
		out, _ = o.Process(ev, t0, out[:0])
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

func BenchmarkWindowSliding(b *testing.B) {
	o, _ := New(Spec{Kind: Sliding, Size: time.Second, Slide: 250 * time.Millisecond, Fields: []string{"v"}})
	var out []Result
	ev := Event{Values: []float64{0}}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ev.Key = "k" + strconv.Itoa(i%100)
		ev.Time = t0.Add(time.Duration(i) * 10 * time.Microsecond)
		out, _ = o.Process(ev, t0, out[:0])
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}
