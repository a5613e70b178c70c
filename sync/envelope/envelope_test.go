package envelope

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
)

func sample() *Envelope {
	t0 := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	return &Envelope{V: Version, Device: "d1", Stream: "windows", Prev: 4, Records: []Record{
		{Seq: 5, EventTime: t0, Data: json.RawMessage(`{"mean":1.5}`)},
		{Seq: 7, EventTime: t0.Add(time.Second), Data: json.RawMessage(`{"mean":2}`)},
	}}
}

func TestRoundTrip(t *testing.T) {
	for _, compress := range []bool{false, true} {
		b, err := Encode(sample(), compress)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Decode(b)
		if err != nil {
			t.Fatalf("compress=%v: %v", compress, err)
		}
		if got.Device != "d1" || got.Prev != 4 || got.Last() != 7 || string(got.Records[1].Data) != `{"mean":2}` {
			t.Fatalf("compress=%v: got %+v", compress, got)
		}
	}
}

func TestRejects(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Envelope)
	}{
		{"version", func(e *Envelope) { e.V = 2 }},
		{"device", func(e *Envelope) { e.Device = "" }},
		{"stream", func(e *Envelope) { e.Stream = "" }},
		{"empty", func(e *Envelope) { e.Records = nil }},
		{"seq not above prev", func(e *Envelope) { e.Prev = 5 }},
		{"seq order", func(e *Envelope) { e.Records[1].Seq = 5 }},
		{"event time", func(e *Envelope) { e.Records[0].EventTime = time.Time{} }},
		{"data", func(e *Envelope) { e.Records[0].Data = json.RawMessage(`{`) }},
	}
	for _, tt := range tests {
		e := sample()
		tt.mutate(e)
		if _, err := Encode(e, false); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err = %v, want ErrMalformed", tt.name, err)
		}
	}
	for _, p := range []string{"", "null", "[]", `{"v":1}`, "\x28\xb5\x2f\xfdgarbage"} {
		if _, err := Decode([]byte(p)); !errors.Is(err, ErrMalformed) {
			t.Errorf("Decode(%q) err = %v, want ErrMalformed", p, err)
		}
	}
}

func FuzzDecode(f *testing.F) {
	good, _ := Encode(sample(), false)
	zgood, _ := Encode(sample(), true)
	f.Add(good)
	f.Add(zgood)
	f.Add([]byte(`{"v":1,"device":"d","stream":"s","records":[{"seq":1,"event_time":"2026-01-01T00:00:00Z","data":1}]}`))
	f.Fuzz(func(t *testing.T, payload []byte) {
		// The acker's header decoder sees the same payloads: it must not
		// panic either.
		if _, err := DecodeHeader(payload); err != nil && !errors.Is(err, ErrMalformed) {
			t.Fatalf("header error does not wrap ErrMalformed: %v", err)
		}
		e, err := Decode(payload)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error does not wrap ErrMalformed: %v", err)
			}
			return
		}
		// Whatever decodes must re-encode and decode to the same records.
		b, err := Encode(e, false)
		if err != nil {
			t.Fatalf("decoded envelope does not re-encode: %v", err)
		}
		back, err := Decode(b)
		if err != nil || len(back.Records) != len(e.Records) || back.Last() != e.Last() {
			t.Fatalf("round trip changed the envelope: %v", err)
		}
	})
}

// benchDecode decodes an envelope of 500 window-sized records b.N times.
func benchDecode(b *testing.B, decode func([]byte) error) {
	e := &Envelope{V: Version, Device: "d1", Stream: "windows"}
	t0 := time.Now().UTC()
	for i := 1; i <= 500; i++ {
		e.Records = append(e.Records, Record{Seq: uint64(i), EventTime: t0, Data: json.RawMessage(`{"key":"s1","mean":1.25,"count":10}`)})
	}
	payload, _ := Encode(e, false)
	b.SetBytes(int64(len(payload)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := decode(payload); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*len(e.Records))/b.Elapsed().Seconds(), "records/s")
}

func BenchmarkDecode(b *testing.B) {
	benchDecode(b, func(p []byte) error { _, err := Decode(p); return err })
}

func env(floor, prev uint64, seqs ...uint64) *Envelope {
	e := &Envelope{V: Version, Device: "d", Stream: "s", Floor: floor, Prev: prev}
	for _, s := range seqs {
		e.Records = append(e.Records, Record{Seq: s, EventTime: time.Unix(1, 0), Data: json.RawMessage("1")})
	}
	return e
}

func TestWatermarks(t *testing.T) {
	steps := []struct {
		name  string
		e     *Envelope
		ok    bool
		fresh []uint64
		hw    uint64
	}{
		{"first batch", env(0, 0, 1, 2, 3), true, []uint64{1, 2, 3}, 3},
		{"gap: batch after a lost one", env(0, 5, 6, 7), false, nil, 3},
		{"contiguous with eviction gap in seqs", env(0, 3, 5), true, []uint64{5}, 5},
		{"whole resend", env(0, 0, 1, 2, 3), true, nil, 5},
		{"overlapping resend", env(3, 3, 5, 6), true, []uint64{6}, 6},
		{"gap above the floor", env(20, 25, 26), false, nil, 6},
		{"floor bridges lost state", env(25, 25, 26), true, []uint64{26}, 26},
	}
	w := Watermarks{}
	for _, s := range steps {
		fresh, ok := w.Accept(s.e)
		var got []uint64
		for _, r := range fresh {
			got = append(got, r.Seq)
		}
		if ok != s.ok || len(got) != len(s.fresh) || w.Get("d", "", "s") != s.hw {
			t.Fatalf("%s: ok=%v fresh=%v hw=%d; want ok=%v fresh=%v hw=%d", s.name, ok, got, w.Get("d", "", "s"), s.ok, s.fresh, s.hw)
		}
		for i := range got {
			if got[i] != s.fresh[i] {
				t.Fatalf("%s: fresh=%v want %v", s.name, got, s.fresh)
			}
		}
	}
}

func TestDecodeHeaderAgreesWithDecode(t *testing.T) {
	e := env(3, 5, 6, 7, 9)
	e.Device, e.Stream = "pump-7", "windows"
	payload, err := Encode(e, true)
	if err != nil {
		t.Fatal(err)
	}
	h, err := DecodeHeader(payload)
	if err != nil {
		t.Fatal(err)
	}
	if h != e.Header() || h.Last != 9 || h.Records != 3 {
		t.Errorf("header %+v, want %+v", h, e.Header())
	}
	for name, bad := range map[string]string{
		"not json":     `{"v":1,`,
		"version":      `{"v":2,"device":"d","stream":"s","records":[{"seq":1}]}`,
		"no records":   `{"v":1,"device":"d","stream":"s","records":[]}`,
		"seq order":    `{"v":1,"device":"d","stream":"s","prev":4,"records":[{"seq":5},{"seq":5}]}`,
		"seq not prev": `{"v":1,"device":"d","stream":"s","prev":4,"records":[{"seq":4}]}`,
		"floor":        `{"v":1,"device":"d","stream":"s","floor":5,"prev":4,"records":[{"seq":6}]}`,
		"no device":    `{"v":1,"stream":"s","records":[{"seq":1}]}`,
	} {
		if _, err := DecodeHeader([]byte(bad)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err %v, want ErrMalformed", name, err)
		}
	}
}

func BenchmarkDecodeHeader(b *testing.B) {
	benchDecode(b, func(p []byte) error { _, err := DecodeHeader(p); return err })
}

// BenchmarkDecodeRead is the hub's path: one Read gives the header and the
// envelope.
func BenchmarkDecodeRead(b *testing.B) {
	d := NewDecoder(DefaultMaxDecoded)
	benchDecode(b, func(p []byte) error { return d.Read(p).Err })
}

// A replaced board starts its seqs again under a new epoch: none of its
// records is a duplicate of its predecessor's, and the old epoch keeps
// deduplicating the old board's resends.
func TestWatermarksEpochs(t *testing.T) {
	w := Watermarks{}
	old := env(0, 0, 1, 2, 3)
	old.Epoch = "a1"
	if fresh, ok := w.Accept(old); !ok || len(fresh) != 3 {
		t.Fatalf("old board: ok=%v fresh=%d", ok, len(fresh))
	}
	board := env(0, 0, 1, 2)
	board.Epoch = "b2"
	if fresh, ok := w.Accept(board); !ok || len(fresh) != 2 {
		t.Fatalf("new board: ok=%v fresh=%d, want all 2 records fresh", ok, len(fresh))
	}
	if fresh, ok := w.Accept(old); !ok || len(fresh) != 0 {
		t.Fatalf("old board's resend: ok=%v fresh=%d, want 0", ok, len(fresh))
	}
	if got := w.Streams("d", "a1")["s"]; got != 3 {
		t.Fatalf("old epoch mark %d, want 3", got)
	}
	// Beyond MaxEpochs the least recently used epoch is forgotten.
	for i := 0; i < MaxEpochs; i++ {
		e := env(0, 0, 1)
		e.Epoch = fmt.Sprintf("e%d", i)
		w.Accept(e)
		if i == 0 {
			w.Accept(old) // keeps a1 recent
		}
	}
	if len(w["d"].Epochs) != MaxEpochs || w.Streams("d", "b2") != nil || w.Streams("d", "a1") == nil {
		t.Fatalf("after %d more epochs: %d kept, b2 kept=%v, a1 kept=%v", MaxEpochs, len(w["d"].Epochs), w.Streams("d", "b2") != nil, w.Streams("d", "a1") != nil)
	}
}

func TestWatermarksCheckpointRoundTrip(t *testing.T) {
	w := Watermarks{}
	e := env(0, 0, 4, 9)
	e.Epoch = "x"
	w.Accept(e)
	w.Accept(env(0, 0, 7))
	b, err := w.MarshalDevice("d")
	if err != nil {
		t.Fatal(err)
	}
	back := Watermarks{}
	if err := back.UnmarshalDevice("d", b); err != nil {
		t.Fatal(err)
	}
	if back.Get("d", "x", "s") != 9 || back.Get("d", "", "s") != 7 || back["d"].Clock != 2 {
		t.Fatalf("round trip: %s -> %+v", b, back["d"])
	}
	// A checkpoint written before epochs: {stream: seq}.
	if err := back.UnmarshalDevice("old", []byte(`{"windows":12,"events":3}`)); err != nil {
		t.Fatal(err)
	}
	if back.Get("old", "", "windows") != 12 || back.Get("old", "", "events") != 3 {
		t.Fatalf("legacy marks: %+v", back["old"])
	}
	if err := back.UnmarshalDevice("bad", []byte(`[1]`)); err == nil {
		t.Fatal("malformed marks accepted")
	}
}

func TestEpochValidation(t *testing.T) {
	for _, bad := range []string{"A", "a-b", "a b", strings.Repeat("a", MaxEpochLen+1), "é"} {
		e := sample()
		e.Epoch = bad
		if _, err := Encode(e, false); !errors.Is(err, ErrMalformed) {
			t.Errorf("epoch %q: err %v, want ErrMalformed", bad, err)
		}
		payload := fmt.Sprintf(`{"v":1,"device":"d","epoch":%q,"stream":"s","records":[{"seq":1}]}`, bad)
		if _, err := DecodeHeader([]byte(payload)); !errors.Is(err, ErrMalformed) {
			t.Errorf("header epoch %q: err %v, want ErrMalformed", bad, err)
		}
	}
	e := sample()
	e.Epoch = "0f3a9c"
	b, _ := Encode(e, true)
	h, err := DecodeHeader(b)
	if err != nil || h.Epoch != "0f3a9c" {
		t.Fatalf("header epoch %q, %v", h.Epoch, err)
	}
}

// A zstd bomb, kilobytes that inflate to 1 GiB, is refused after inflating
// at most the decoder's bound: a storm of them costs the hub that bound per
// core, not gigabytes.
func TestZstdBombIsBounded(t *testing.T) {
	zeros := make([]byte, 64<<20)
	enc, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedBestCompression))
	var bomb []byte
	for i := 0; i < 16; i++ { // 16 frames of 64 MiB: 1 GiB
		bomb = enc.EncodeAll(zeros, bomb)
	}
	if len(bomb) > 64<<10 {
		t.Fatalf("bomb is %d bytes", len(bomb))
	}
	d := NewDecoder(1 << 20)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := 0; i < 20; i++ {
		if _, err := d.Decode(bomb); !errors.Is(err, ErrMalformed) {
			t.Fatalf("bomb: err %v, want ErrMalformed", err)
		}
		if _, err := d.DecodeHeader(bomb); !errors.Is(err, ErrMalformed) {
			t.Fatalf("bomb header: err %v, want ErrMalformed", err)
		}
	}
	runtime.ReadMemStats(&after)
	// 40 decodes; each may allocate up to the 1 MiB bound (and the zstd
	// window it needs).
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 40*(4<<20) {
		t.Fatalf("40 bomb decodes allocated %d MiB", alloc>>20)
	}
	// The default bound is InflateFactor × the hub's default max_payload.
	if _, err := Decode(bomb); !errors.Is(err, ErrMalformed) {
		t.Fatalf("default decoder: %v", err)
	}
}

// The validator Validate checks records' data with accepts exactly what
// the standard library's does.
func FuzzValidJSONAgreesWithStdlib(f *testing.F) {
	for _, s := range []string{`{"a":1}`, `[1,2,{"b":"c"}]`, `{"":8,"":"0","st\`, `{""}`, `"\u00zz"`, `1e5`, `-0.1`,
		"{\"a\":\"\x01\"}", "\"\xff\"", `[1,]`, `{"a":1,}`, ` true `, `nul`, `01`, `1.`, `.1`, `"\ud800"`, "\"\x16\\b\""} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if got, want := validJSON(b), json.Valid(b); got != want {
			t.Fatalf("validJSON %v, encoding/json %v on %q", got, want, b)
		}
	})
}

// windowEnvelope is a batch as an agent's uplink sends it: 500 window
// results of different sensors, each with its own figures.
func windowEnvelope() *Envelope {
	rng := rand.New(rand.NewPCG(19, 7))
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	e := &Envelope{V: Version, Device: "bench-1", Epoch: "a1", Stream: "windows"}
	for i := 1; i <= 500; i++ {
		mean, spread := 15+15*rng.Float64(), 0.2+2*rng.Float64()
		data := fmt.Appendf(nil, `{"key":"sensor-%03d","window":"%s/PT10S","count":%d,"mean":%.3f,"min":%.2f,"max":%.2f,"std":%.3f}`,
			i, t0.Format(time.RFC3339), 90+rng.IntN(21), mean, mean-spread, mean+spread, spread/3)
		e.Records = append(e.Records, Record{Seq: uint64(i), EventTime: t0.Add(10 * time.Second), Data: data})
	}
	return e
}

// BenchmarkEncode: what an agent spends on a batch, plain and with
// uplink.compress (zstd at its fastest level), and the bytes it sends.
func BenchmarkEncode(b *testing.B) {
	e := windowEnvelope()
	plain, err := Encode(e, false)
	if err != nil {
		b.Fatal(err)
	}
	for _, compress := range []bool{false, true} {
		b.Run(fmt.Sprintf("compress=%t", compress), func(b *testing.B) {
			var out []byte
			for b.Loop() {
				if out, err = Encode(e, compress); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(e.Records)), "ns/record")
			b.ReportMetric(float64(len(out))/float64(len(e.Records)), "bytes/record")
			b.ReportMetric(float64(len(plain))/float64(len(out)), "ratio")
		})
	}
}

// TestCompressionHoldsLittleMemory: an agent that compresses its uplink
// keeps the encoder for its lifetime, so what the encoder holds after a
// batch is resident for good. zstd's defaults held 17 MiB.
func TestCompressionHoldsLittleMemory(t *testing.T) {
	plain, err := json.Marshal(windowEnvelope())
	if err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	enc := newEncoder()
	out := enc.EncodeAll(plain, nil)
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(enc)
	if grew := int64(after.HeapAlloc) - int64(before.HeapAlloc); grew > 4<<20 {
		t.Fatalf("the encoder holds %.1f MiB after one batch, want at most 4", float64(grew)/(1<<20))
	}
	if ratio := float64(len(plain)) / float64(len(out)); ratio < 4 {
		t.Fatalf("a batch of window records compressed %.1fx, want at least 4x", ratio)
	}
	if got, err := Decode(out); err != nil || len(got.Records) != 500 {
		t.Fatalf("decode the compressed batch: %v", err)
	}
}
