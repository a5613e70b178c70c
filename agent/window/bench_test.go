package window

import (
	"runtime"
	"slices"
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

// rawSpec is BenchmarkWindowRawSamples' window: 3 fields in 2 s tumbling
// windows, with or without the raw samples of all three kept.
func rawSpec(raw bool) Spec {
	s := Spec{Kind: Tumbling, Size: 2 * time.Second, MaxOutOfOrder: 50 * time.Millisecond, Fields: []string{"x", "y", "z"}}
	if raw {
		s.Raw, s.MaxSamples = []int{0, 1, 2}, 4096
	}
	return s
}

// rawKeys are the 1,000 sensor keys; event i goes to key i % 1000 at
// t0 + i × 10 µs: 100 Hz per key, 100k events per event-second.
var rawKeys = func() []string {
	keys := make([]string, 1000)
	for i := range keys {
		keys[i] = "sensor-" + strconv.Itoa(i)
	}
	return keys
}()

// rawFeed pushes events [from, to) of the workload through o.
func rawFeed(o *Operator, from, to int, out []Result) []Result {
	ev := Event{Values: []float64{0, 0, 0}}
	for i := from; i < to; i++ {
		ev.Key = rawKeys[i%len(rawKeys)]
		ev.Time = t0.Add(time.Duration(i) * 10 * time.Microsecond)
		ev.Values[0], ev.Values[1], ev.Values[2] = float64(i&1023), float64(i&511), float64(i&255)
		out, _ = o.Process(ev, t0, out[:0])
	}
	return out
}

// heapPerKey is the live heap, in bytes per key, of an operator holding
// each of the 1,000 keys' one open window filled with 1.9 s of samples
// (190 per key; the watermark, 50 ms behind, fires nothing).
func heapPerKey(b *testing.B, raw bool) float64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	o, err := New(rawSpec(raw))
	if err != nil {
		b.Fatal(err)
	}
	out := rawFeed(o, 0, 190*len(rawKeys), nil)
	if len(out) != 0 || len(o.keys) != len(rawKeys) {
		b.Fatalf("%d results, %d keys open", len(out), len(o.keys))
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(o)
	return float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / float64(len(rawKeys))
}

// BenchmarkWindowRawSamples is BenchmarkWindowKeyedTumbling's workload
// (1,000 keys at 100 Hz each) on 3 fields in 2 s windows, with raw
// samples off and on (all 3 fields, MaxSamples 4096): events/s on one
// core, and heap_B/key, the live heap per key with one open window of
// 190 samples (after GC). raw=on also reports raw_B/key-window, its heap
// per key less raw=off's. on/off runs both operators in interleaved
// rounds and reports the median per-round time ratio (on/off-time), the
// figure to trust on a noisy machine.
func BenchmarkWindowRawSamples(b *testing.B) {
	for _, raw := range []bool{false, true} {
		name := "raw=off"
		if raw {
			name = "raw=on"
		}
		b.Run(name, func(b *testing.B) {
			o, err := New(rawSpec(raw))
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			rawFeed(o, 0, b.N, nil)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
			if o.Stats.RawDropped != 0 {
				b.Fatalf("%d raw samples dropped", o.Stats.RawDropped)
			}
			mem := heapPerKey(b, raw)
			b.ReportMetric(mem, "heap_B/key")
			if raw {
				b.ReportMetric(mem-heapPerKey(b, false), "raw_B/key-window")
			}
		})
	}
	b.Run("on/off", func(b *testing.B) {
		off, _ := New(rawSpec(false))
		on, _ := New(rawSpec(true))
		const chunk = 20000 // 0.2 event-seconds: windows close within every few rounds
		var ratios []float64
		var outOff, outOn []Result
		b.ResetTimer()
		for done, r := 0, 0; done < b.N; r++ {
			n := min(chunk, b.N-done)
			var t [2]time.Duration
			for k := range 2 {
				start := time.Now()
				if (r+k)%2 == 0 {
					outOff = rawFeed(off, done, done+n, outOff)
					t[0] = time.Since(start)
				} else {
					outOn = rawFeed(on, done, done+n, outOn)
					t[1] = time.Since(start)
				}
			}
			ratios = append(ratios, t[1].Seconds()/t[0].Seconds())
			done += n
		}
		b.StopTimer()
		slices.Sort(ratios)
		b.ReportMetric(ratios[len(ratios)/2], "on/off-time")
	})
}
