// Package ingest turns raw sensor input (JSON or CSV lines from MQTT,
// stdin, a tailed file, HTTP pushes or the simulator) into validated
// readings. Nothing it is given crashes it: a bad line becomes a Reject
// with the reason, which the pipeline sends to the dead stream.
package ingest

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"time"
)

// Reading is one decoded, validated input: a key, an event time and the
// configured numeric fields in order.
type Reading struct {
	Key    string
	Time   time.Time
	Values []float64
	// Watermark is set when the line carries a punctuation field.
	Watermark time.Time
}

// Format of input lines.
const (
	JSON = "json"
	CSV  = "csv"
)

// DecodeConfig says how to read a line.
type DecodeConfig struct {
	Format         string        `yaml:"format"`          // json (default) or csv
	KeyField       string        `yaml:"key_field"`       // field holding the key; empty: the source's name
	TimeField      string        `yaml:"time_field"`      // RFC 3339 string or Unix seconds/milliseconds; empty: arrival time
	WatermarkField string        `yaml:"watermark_field"` // optional punctuation field
	Fields         []string      `yaml:"fields"`          // numeric fields, in the order windows aggregate them
	Columns        []string      `yaml:"columns"`         // csv: the column names, in order
	MaxSkew        time.Duration `yaml:"max_skew"`        // reject event times further than this from arrival (0: no check)
}

// Reject says why a line was refused.
type Reject struct {
	Reason string
	Line   []byte
}

func (r *Reject) Error() string { return r.Reason }

// Decoder reads lines with one config.
type Decoder struct {
	cfg      DecodeConfig
	source   string
	colIndex map[string]int
}

// NewDecoder checks cfg.
func NewDecoder(cfg DecodeConfig, source string) (*Decoder, error) {
	if cfg.Format == "" {
		cfg.Format = JSON
	}
	if cfg.Format != JSON && cfg.Format != CSV {
		return nil, fmt.Errorf("%w: format %q (json or csv)", ErrConfig, cfg.Format)
	}
	if len(cfg.Fields) == 0 {
		return nil, fmt.Errorf("%w: at least one field", ErrConfig)
	}
	d := &Decoder{cfg: cfg, source: source}
	if cfg.Format == CSV {
		if len(cfg.Columns) == 0 {
			return nil, fmt.Errorf("%w: csv needs columns", ErrConfig)
		}
		d.colIndex = map[string]int{}
		for i, c := range cfg.Columns {
			d.colIndex[c] = i
		}
		for _, f := range append(append([]string{}, cfg.Fields...), cfg.KeyField, cfg.TimeField, cfg.WatermarkField) {
			if _, ok := d.colIndex[f]; f != "" && !ok {
				return nil, fmt.Errorf("%w: field %q is not a csv column", ErrConfig, f)
			}
		}
	}
	return d, nil
}

// Decode reads one line that arrived at now.
func (d *Decoder) Decode(line []byte, now time.Time) (Reading, *Reject) {
	line = bytes.TrimSpace(line)
	if len(line) == 0 {
		return Reading{}, d.reject(line, "empty line")
	}
	get, rej := d.fields(line)
	if rej != nil {
		return Reading{}, rej
	}
	r := Reading{Key: d.source, Time: now, Values: make([]float64, len(d.cfg.Fields))}
	if d.cfg.KeyField != "" {
		k, ok := get(d.cfg.KeyField)
		if !ok {
			return Reading{}, d.reject(line, "missing key field "+d.cfg.KeyField)
		}
		s, isStr := k.(string)
		if !isStr || s == "" {
			return Reading{}, d.reject(line, "key field "+d.cfg.KeyField+" is not a non-empty string")
		}
		r.Key = s
	}
	if d.cfg.TimeField != "" {
		v, ok := get(d.cfg.TimeField)
		if !ok {
			return Reading{}, d.reject(line, "missing time field "+d.cfg.TimeField)
		}
		t, err := parseTime(v)
		if err != nil {
			return Reading{}, d.reject(line, "time field "+d.cfg.TimeField+": "+err.Error())
		}
		if d.cfg.MaxSkew > 0 && (t.Sub(now) > d.cfg.MaxSkew || now.Sub(t) > d.cfg.MaxSkew) {
			return Reading{}, d.reject(line, fmt.Sprintf("event time %s is more than %s from arrival", t.Format(time.RFC3339Nano), d.cfg.MaxSkew))
		}
		r.Time = t
	}
	if d.cfg.WatermarkField != "" {
		if v, ok := get(d.cfg.WatermarkField); ok {
			t, err := parseTime(v)
			if err != nil {
				return Reading{}, d.reject(line, "watermark field: "+err.Error())
			}
			r.Watermark = t
		}
	}
	for i, f := range d.cfg.Fields {
		v, ok := get(f)
		if !ok {
			return Reading{}, d.reject(line, "missing field "+f)
		}
		x, err := number(v)
		if err != nil {
			return Reading{}, d.reject(line, "field "+f+": "+err.Error())
		}
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return Reading{}, d.reject(line, "field "+f+" is NaN or Inf")
		}
		r.Values[i] = x
	}
	return r, nil
}

// fields returns a getter over the line's fields.
func (d *Decoder) fields(line []byte) (func(string) (any, bool), *Reject) {
	if d.cfg.Format == CSV {
		rec, err := csv.NewReader(bytes.NewReader(line)).Read()
		if err != nil {
			return nil, d.reject(line, "csv: "+err.Error())
		}
		if len(rec) != len(d.cfg.Columns) {
			return nil, d.reject(line, fmt.Sprintf("csv: %d columns, want %d", len(rec), len(d.cfg.Columns)))
		}
		return func(name string) (any, bool) {
			i, ok := d.colIndex[name]
			if !ok {
				return nil, false
			}
			return rec[i], true
		}, nil
	}
	var m map[string]any
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil || m == nil {
		return nil, d.reject(line, "not a JSON object")
	}
	return func(name string) (any, bool) { v, ok := m[name]; return v, ok }, nil
}

func (d *Decoder) reject(line []byte, reason string) *Reject {
	const keep = 1024 // enough to debug, bounded for hostile input
	if len(line) > keep {
		line = line[:keep]
	}
	return &Reject{Reason: reason, Line: append([]byte(nil), line...)}
}

func number(v any) (float64, error) {
	switch x := v.(type) {
	case json.Number:
		return strconv.ParseFloat(string(x), 64)
	case string: // csv, or JSON numbers sent as strings
		return strconv.ParseFloat(x, 64)
	case bool, nil, map[string]any, []any:
		return 0, fmt.Errorf("not a number")
	}
	return 0, fmt.Errorf("not a number")
}

// parseTime accepts RFC 3339 strings, and Unix seconds or milliseconds
// (a number above 1e11 is taken as milliseconds).
func parseTime(v any) (time.Time, error) {
	if s, ok := v.(string); ok {
		if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
			return t, nil
		}
	}
	x, err := number(v)
	if err != nil || math.IsNaN(x) || math.IsInf(x, 0) || x < 0 || x > 1e14 {
		return time.Time{}, fmt.Errorf("not an RFC 3339 time or Unix timestamp")
	}
	if x > 1e11 {
		return time.UnixMilli(int64(x)).UTC(), nil
	}
	sec, frac := math.Modf(x)
	return time.Unix(int64(sec), int64(frac*1e9)).UTC(), nil
}
