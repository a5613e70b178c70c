package ingest

import (
	"bytes"
	"encoding/json"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"
)

// refDecode is the JSON decoding the decoder had before it read lines in
// one gjson pass: encoding/json into a map (UseNumber), the whole line one
// value. It says whether the line is accepted, and the reading.
func refDecode(d *Decoder, line []byte, now time.Time) (Reading, bool) {
	line = bytes.TrimSpace(line)
	var m map[string]any
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil || m == nil { // what follows the object is not read
		return Reading{}, false
	}
	num := func(v any) (float64, bool) {
		var s string
		switch x := v.(type) {
		case json.Number:
			s = string(x)
		case string:
			s = x
		default:
			return 0, false
		}
		f, err := strconv.ParseFloat(s, 64)
		return f, err == nil
	}
	tm := func(v any) (time.Time, bool) {
		if s, ok := v.(string); ok {
			if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
				return t, true
			}
		}
		x, ok := num(v)
		if !ok || math.IsNaN(x) || math.IsInf(x, 0) || x < 0 || x > 1e14 {
			return time.Time{}, false
		}
		if x > 1e11 {
			return time.UnixMilli(int64(x)).UTC(), true
		}
		sec, frac := math.Modf(x)
		return time.Unix(int64(sec), int64(frac*1e9)).UTC(), true
	}
	r := Reading{Key: d.source, Time: now, Values: make([]float64, len(d.cfg.Fields))}
	if f := d.cfg.KeyField; f != "" {
		s, ok := m[f].(string)
		if !ok || s == "" {
			return Reading{}, false
		}
		r.Key = s
	}
	if f := d.cfg.TimeField; f != "" {
		v, ok := m[f]
		if !ok {
			return Reading{}, false
		}
		t, ok := tm(v)
		if !ok || d.cfg.MaxSkew > 0 && (t.Sub(now) > d.cfg.MaxSkew || now.Sub(t) > d.cfg.MaxSkew) {
			return Reading{}, false
		}
		r.Time = t
	}
	for i, f := range d.cfg.Fields {
		v, ok := m[f]
		if !ok {
			return Reading{}, false
		}
		x, ok := num(v)
		if !ok || math.IsNaN(x) || math.IsInf(x, 0) {
			return Reading{}, false
		}
		r.Values[i] = x
	}
	return r, true
}

// FuzzDecodeAgreesWithStdlib: the one-pass decoder accepts exactly the
// lines encoding/json's map decoding accepts, with the same reading:
// escaped keys, duplicate keys (the last counts), numbers as strings,
// nesting (deep nesting too), trailing data and broken UTF-8 alike.
func FuzzDecodeAgreesWithStdlib(f *testing.F) {
	for _, s := range []string{
		`{"sensor":"s1","ts":"2026-11-25T11:59:00Z","temp":21.5,"vib":0.25}`,
		`{"sensor":"s1","ts":1795607940,"temp":"1","vib":2,"temp":3}`,
		`{"sens\u006fr":"s\"1","ts":1795607940.5,"temp":-0.0,"vib":1e3,"extra":{"temp":9}}`,
		`{"sensor":"s1","ts":1795607940,"temp":1,"vib":2} {}`,
		"{\"sensor\":\"s\xff\xfe\",\"ts\":1795607940,\"temp\":1,\"vib\":2}",
		`{"sensor":"s1","ts":1795607940,"temp":1,"vib":2},`,
		strings.Repeat("[", 10001) + strings.Repeat("]", 10001),
		`{"sensor":"s1","ts":1795607940,"temp":1,"vib":2,"deep":` + strings.Repeat("[", 6000) + strings.Repeat("]", 6000) + `}`,
		`{"sensor":"s1","ts":null,"temp":[1],"vib":true}`,
		` {"sensor":"s1","ts":1795607940,"temp":1,"vib":2}` + "\n",
	} {
		f.Add([]byte(s))
	}
	d, err := NewDecoder(DecodeConfig{KeyField: "sensor", TimeField: "ts", Fields: []string{"temp", "vib"}, MaxSkew: 100000 * time.Hour}, "src")
	if err != nil {
		f.Fatal(err)
	}
	at := time.Unix(1795607940, 0).UTC()
	f.Fuzz(func(t *testing.T, line []byte) {
		got, rej := d.Decode(line, at)
		want, ok := refDecode(d, line, at)
		if (rej == nil) != ok {
			t.Fatalf("%q: decoder rejects=%v (%v), encoding/json accepts=%v", line, rej != nil, rej, ok)
		}
		if ok && (got.Key != want.Key || !got.Time.Equal(want.Time) || got.Values[0] != want.Values[0] || got.Values[1] != want.Values[1]) {
			t.Fatalf("%q: decoder %+v, encoding/json %+v", line, got, want)
		}
	})
}

// BenchmarkDecodeJSON: one sensor reading per line, the decoder against
// encoding/json's map decoding (its old way) in the same run.
func BenchmarkDecodeJSON(b *testing.B) {
	d, err := NewDecoder(DecodeConfig{KeyField: "sensor", TimeField: "ts", Fields: []string{"temp", "vib"}}, "src")
	if err != nil {
		b.Fatal(err)
	}
	line := []byte(`{"sensor":"pump-0042","ts":"2026-11-25T11:59:00.125Z","temp":21.5,"vib":0.25,"site":"north"}`)
	b.Run("gjson", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, rej := d.Decode(line, now); rej != nil {
				b.Fatal(rej)
			}
		}
	})
	b.Run("stdlib-map", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, ok := refDecode(d, line, now); !ok {
				b.Fatal("rejected")
			}
		}
	})
}
