package envelope

import (
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
)

func mustEncode(t *testing.T, e *Envelope, compress bool) []byte {
	t.Helper()
	p, err := Encode(e, compress)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Read gives what Decode and DecodeHeader give, from one inflation.
func TestReadAgreesWithDecodeAndDecodeHeader(t *testing.T) {
	d := NewDecoder(1 << 20)
	good := mustEncode(t, sample(), true)
	cases := map[string][]byte{
		"good":       good,
		"bad record": []byte(`{"v":1,"device":"d","epoch":"e1","stream":"s","prev":4,"records":[{"seq":5,"event_time":"x","data":{}}]}`),
		"no data":    []byte(`{"v":1,"device":"d","epoch":"e1","stream":"s","prev":4,"records":[{"seq":5,"event_time":"2026-01-01T00:00:00Z"}]}`),
		"not json":   []byte(`{"v":1,`),
		"bad zstd":   append(append([]byte{}, zstdMagic...), 1, 2, 3),
	}
	for name, p := range cases {
		r := d.Read(p)
		e, err := d.Decode(p)
		h, herr := d.DecodeHeader(p)
		if (r.Err == nil) != (err == nil) || (r.HeaderErr == nil) != (herr == nil) {
			t.Errorf("%s: Read errors (%v, %v), Decode %v, DecodeHeader %v", name, r.Err, r.HeaderErr, err, herr)
			continue
		}
		if err == nil && !reflect.DeepEqual(r.Envelope, e) {
			t.Errorf("%s: Read's envelope %+v, Decode's %+v", name, r.Envelope, e)
		}
		if herr == nil && r.Header != h {
			t.Errorf("%s: Read's header %+v, DecodeHeader's %+v", name, r.Header, h)
		}
	}
	if r := d.Read(cases["bad record"]); r.Err == nil || r.HeaderErr != nil {
		t.Errorf("a sound header over a bad record: errors (%v, %v), want the envelope's alone", r.Err, r.HeaderErr)
	}
}

// The second reader takes the first's decoding; nothing is held after.
func TestSharedDecodesOnce(t *testing.T) {
	s := NewShared(NewDecoder(1<<20), 1<<20)
	p := mustEncode(t, sample(), true)
	a := s.Read(0, 1, p)
	if n, _ := s.Held(); n != 1 {
		t.Fatalf("after the first reader %d decodings held, want 1", n)
	}
	b := s.Read(1, 1, p)
	if a.Envelope == nil || a.Envelope != b.Envelope {
		t.Fatalf("the second reader got another decoding (%p, %p)", a.Envelope, b.Envelope)
	}
	if s.Hits.Load() != 1 {
		t.Fatalf("hits %d, want 1", s.Hits.Load())
	}
	if n, bytes := s.Held(); n != 0 || bytes != 0 {
		t.Fatalf("after both readers %d decodings (%d bytes) held, want none", n, bytes)
	}
	// Either reader may come first.
	s.Read(1, 2, p)
	s.Read(0, 2, p)
	if s.Hits.Load() != 2 {
		t.Fatalf("hits %d, want 2", s.Hits.Load())
	}
}

// What the other reader has passed, or read twice by one reader, is not
// kept: nobody would take it.
func TestSharedKeepsOnlyWhatTheOtherWillRead(t *testing.T) {
	s := NewShared(NewDecoder(1<<20), 1<<20)
	p := mustEncode(t, sample(), false)
	s.Read(1, 10, p) // the bridge is at 10
	s.Read(0, 3, p)  // the acker replays 3 after a restart
	s.Read(0, 10, p) // and takes 10
	s.Read(0, 11, p)
	s.Read(0, 11, p) // redelivered
	if n, _ := s.Held(); n != 1 {
		t.Fatalf("%d decodings held, want 1 (seq 11, for the bridge)", n)
	}
}

// A stream recreated under the same sequences never hands one payload's
// decoding to another's reader.
func TestSharedChecksThePayload(t *testing.T) {
	s := NewShared(NewDecoder(1<<20), 1<<20)
	e := sample()
	s.Read(0, 1, mustEncode(t, e, false))
	e.Device = "d2"
	got := s.Read(1, 1, mustEncode(t, e, false))
	if got.Err != nil || got.Envelope.Device != "d2" {
		t.Fatalf("decoded %+v (%v), want device d2", got.Envelope, got.Err)
	}
}

// A reader far ahead of the other leaves at most maxBytes behind it: the
// oldest, which the late reader comes to first. Past that it keeps
// nothing, and the late reader decodes the rest itself. (Dropping the
// oldest for the newest, as before, threw away decodings faster than the
// late reader could take any: in BenchmarkHubToKafka's 2000-message burst
// 1,808 of 2,020 were decoded twice.)
func TestSharedIsBounded(t *testing.T) {
	const max = 64 << 10
	s := NewShared(NewDecoder(1<<20), max)
	var ps [][]byte
	for i := range 200 {
		e := sample()
		e.Device = fmt.Sprintf("d%d", i)
		ps = append(ps, mustEncode(t, e, true))
		s.Read(0, uint64(i+1), ps[i])
		if _, b := s.Held(); b > max {
			t.Fatalf("after %d readings %d bytes held, bound %d", i+1, b, max)
		}
	}
	if s.Full.Load() == 0 {
		t.Fatal("the bound never kept a decoding out")
	}
	for i, p := range ps {
		got := s.Read(1, uint64(i+1), p)
		if got.Err != nil || got.Envelope.Device != fmt.Sprintf("d%d", i) {
			t.Fatalf("seq %d: %+v (%v)", i+1, got.Envelope, got.Err)
		}
		if i == 0 && s.Hits.Load() != 1 {
			t.Fatal("the oldest decoding was not kept for the late reader")
		}
	}
	if n, _ := s.Held(); n != 0 {
		t.Fatalf("%d decodings held after both readers passed", n)
	}
	if s.Hits.Load() == 0 || s.Evicted.Load() != 0 || s.Hits.Load()+s.Full.Load() != 200 {
		t.Fatalf("hits %d, evicted %d, full %d; want hits and full to make 200, none evicted", s.Hits.Load(), s.Evicted.Load(), s.Full.Load())
	}
}

// ReadHeader gives the header that DecodeHeader and Read give, whether it
// takes the other reader's decoding, keeps one for it, or, with the bound
// reached, parses the header alone and keeps nothing.
func TestReadHeaderAgreesWithRead(t *testing.T) {
	d := NewDecoder(1 << 20)
	good := mustEncode(t, sample(), true)
	bad := []byte(`{"v":1,"device":"d","epoch":"e1","stream":"s","prev":4,"records":[{"seq":4,"event_time":"2026-01-01T00:00:00Z","data":{}}]}`)
	for name, max := range map[string]int{"room": 1 << 20, "full": 0} {
		s := NewShared(d, max)
		for i, p := range [][]byte{good, bad} {
			want, werr := d.DecodeHeader(p)
			h, err := s.ReadHeader(0, uint64(i+1), p)
			if h != want || (err == nil) != (werr == nil) {
				t.Errorf("%s, payload %d: ReadHeader %+v (%v), DecodeHeader %+v (%v)", name, i, h, err, want, werr)
			}
			r := s.Read(1, uint64(i+1), p)
			if r.Header != want || (r.HeaderErr == nil) != (werr == nil) {
				t.Errorf("%s, payload %d: the other reader's header %+v (%v), want %+v (%v)", name, i, r.Header, r.HeaderErr, want, werr)
			}
		}
		if n, _ := s.Held(); n != 0 {
			t.Errorf("%s: %d decodings held", name, n)
		}
		if name == "full" && (s.Full.Load() != 2 || s.Hits.Load() != 0) {
			t.Errorf("full: %d readings kept nothing and %d hit, want 2 (the first reader's) and 0", s.Full.Load(), s.Hits.Load())
		}
		if name == "room" && s.Hits.Load() != 2 {
			t.Errorf("room: %d hits, want 2", s.Hits.Load())
		}
	}
}

// Both readers at once (as the acker and the bridge's decoding workers
// run): each gets its payload's decoding, bombs included.
func TestSharedConcurrentReaders(t *testing.T) {
	s := NewShared(NewDecoder(1<<20), 256<<10)
	const n = 2000
	ps := make([][]byte, n)
	for i := range ps {
		e := sample()
		e.Device = fmt.Sprintf("d%d", i)
		ps[i] = mustEncode(t, e, i%2 == 0)
		if i%97 == 0 {
			ps[i] = append(append([]byte{}, zstdMagic...), 9, 9, 9)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for reader := range 2 {
		for w := range 2 {
			wg.Go(func() {
				for i := w; i < n; i += 2 {
					got := s.Read(reader, uint64(i+1), ps[i])
					switch {
					case i%97 == 0:
						if !errors.Is(got.Err, ErrMalformed) || !errors.Is(got.HeaderErr, ErrMalformed) {
							errs <- fmt.Errorf("seq %d: a bad frame decoded: %v, %v", i+1, got.Err, got.HeaderErr)
							return
						}
					case got.Err != nil || got.Envelope.Device != fmt.Sprintf("d%d", i):
						errs <- fmt.Errorf("reader %d seq %d: %+v (%v)", reader, i+1, got.Envelope, got.Err)
						return
					}
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if _, b := s.Held(); b > 256<<10+8<<10 {
		t.Fatalf("%d bytes held, bound 256 KiB", b)
	}
}

// Inflated buffers are reused: what a decoding keeps must be its own
// copy, or the next payload would overwrite it.
func TestDecodingsOutliveTheirBuffer(t *testing.T) {
	d := NewDecoder(1 << 20)
	a, b := sample(), sample()
	b.Device, b.Records[0].Data = "other-device", []byte(`{"mean":99999}`)
	first := d.Read(mustEncode(t, a, true))
	for range 10 {
		d.Read(mustEncode(t, b, true))
		d.Decode(mustEncode(t, b, true))
		d.DecodeHeader(mustEncode(t, b, true))
	}
	if first.Err != nil || !reflect.DeepEqual(first.Envelope, a) || first.Header != a.Header() {
		t.Fatalf("after later decodings the first reads %+v (%v), want %+v", first.Envelope, first.Err, a)
	}
}
