package ingest

import (
	"errors"
	"strings"
	"testing"
	"time"
)

var now = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func TestDecodeJSON(t *testing.T) {
	d, err := NewDecoder(DecodeConfig{KeyField: "sensor", TimeField: "ts", Fields: []string{"temp", "vib"}, MaxSkew: time.Hour}, "src")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		line   string
		reason string // empty: accepted
		key    string
		at     time.Time
		vals   []float64
	}{
		{`{"sensor":"s1","ts":"2026-11-25T11:59:00Z","temp":21.5,"vib":0.25}`, "", "s1", now.Add(-time.Minute), []float64{21.5, 0.25}},
		{`{"sensor":"s2","ts":1795607940,"temp":"22","vib":1}`, "", "s2", time.Unix(1795607940, 0).UTC(), []float64{22, 1}},
		{`{"sensor":"s2","ts":1795607940500,"temp":1,"vib":1}`, "", "s2", time.UnixMilli(1795607940500).UTC(), []float64{1, 1}},
		{`not json`, "not a JSON object", "", time.Time{}, nil},
		{`[1,2]`, "not a JSON object", "", time.Time{}, nil},
		{`{"ts":"2026-11-25T12:00:00Z","temp":1,"vib":1}`, "missing key field", "", time.Time{}, nil},
		{`{"sensor":"s","ts":"2026-11-25T12:00:00Z","vib":1}`, "missing field temp", "", time.Time{}, nil},
		{`{"sensor":"s","ts":"2026-11-25T12:00:00Z","temp":"hot","vib":1}`, "field temp", "", time.Time{}, nil},
		{`{"sensor":"s","ts":"2026-11-25T12:00:00Z","temp":"NaN","vib":1}`, "NaN or Inf", "", time.Time{}, nil},
		{`{"sensor":"s","ts":"2026-11-25T12:00:00Z","temp":1e999,"vib":1}`, "field temp", "", time.Time{}, nil},
		{`{"sensor":"s","ts":"yesterday","temp":1,"vib":1}`, "time field ts", "", time.Time{}, nil},
		{`{"sensor":"s","ts":"2026-11-25T14:00:00Z","temp":1,"vib":1}`, "more than 1h0m0s from arrival", "", time.Time{}, nil},
		{`{"sensor":5,"ts":"2026-11-25T12:00:00Z","temp":1,"vib":1}`, "not a non-empty string", "", time.Time{}, nil},
		{``, "empty line", "", time.Time{}, nil},
	}
	for _, tt := range tests {
		r, rej := d.Decode([]byte(tt.line), now)
		if tt.reason != "" {
			if rej == nil || !strings.Contains(rej.Reason, tt.reason) {
				t.Errorf("%s: reject = %v, want %q", tt.line, rej, tt.reason)
			}
			continue
		}
		if rej != nil {
			t.Errorf("%s: rejected: %v", tt.line, rej.Reason)
			continue
		}
		if r.Key != tt.key || !r.Time.Equal(tt.at) || r.Values[0] != tt.vals[0] || r.Values[1] != tt.vals[1] {
			t.Errorf("%s: got %+v", tt.line, r)
		}
	}
}

func TestDecodeCSVAndArrivalTime(t *testing.T) {
	d, err := NewDecoder(DecodeConfig{Format: CSV, Columns: []string{"id", "temp"}, KeyField: "id", Fields: []string{"temp"}}, "src")
	if err != nil {
		t.Fatal(err)
	}
	r, rej := d.Decode([]byte("pump-1,20.5"), now)
	if rej != nil || r.Key != "pump-1" || r.Values[0] != 20.5 || !r.Time.Equal(now) {
		t.Fatalf("got %+v %v", r, rej)
	}
	for _, bad := range []string{"pump-1", "pump-1,x", `"unterminated,1`} {
		if _, rej := d.Decode([]byte(bad), now); rej == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if _, err := NewDecoder(DecodeConfig{Format: CSV, Columns: []string{"a"}, Fields: []string{"b"}}, "s"); !errors.Is(err, ErrConfig) {
		t.Fatalf("unknown column accepted: %v", err)
	}
	if _, err := NewDecoder(DecodeConfig{Format: "xml", Fields: []string{"b"}}, "s"); !errors.Is(err, ErrConfig) {
		t.Fatalf("xml accepted: %v", err)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"sensor":"s1","ts":"2026-11-25T11:59:00Z","temp":21.5,"vib":0.25}`))
	f.Add([]byte(`{"sensor":"s1","ts":1795607940,"temp":"1","vib":null}`))
	f.Add([]byte(`s1,1,2`))
	jd, _ := NewDecoder(DecodeConfig{KeyField: "sensor", TimeField: "ts", Fields: []string{"temp", "vib"}, MaxSkew: time.Hour}, "src")
	cd, _ := NewDecoder(DecodeConfig{Format: CSV, Columns: []string{"sensor", "temp", "vib"}, KeyField: "sensor", Fields: []string{"temp", "vib"}}, "src")
	f.Fuzz(func(t *testing.T, line []byte) {
		for _, d := range []*Decoder{jd, cd} {
			r, rej := d.Decode(line, now)
			if rej != nil {
				if rej.Reason == "" || len(rej.Line) > 1024 {
					t.Fatalf("bad reject %+v", rej)
				}
				continue
			}
			if r.Key == "" || len(r.Values) != 2 {
				t.Fatalf("accepted reading without key or values: %+v", r)
			}
		}
	})
}
