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
	"strings"
	"time"
	"unicode/utf8"

	"github.com/tidwall/gjson"
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
	// roles maps a JSON key to the values it fills (see role): one pass
	// over a line's keys finds them all, with no map per line.
	roles map[string][]int
}

// Roles of a line's values: the key, time and watermark fields, then
// each configured field.
const (
	roleKey = iota
	roleTime
	roleWatermark
	roleFields
)

// value is one field of a line: a string (CSV cells, JSON strings), a
// JSON number's literal, or another JSON value.
type value struct {
	kind byte // 's' string, 'n' number, 'x' anything else
	s    string
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
	d := &Decoder{cfg: cfg, source: source, roles: map[string][]int{}}
	for role, name := range append([]string{cfg.KeyField, cfg.TimeField, cfg.WatermarkField}, cfg.Fields...) {
		if name != "" {
			d.roles[name] = append(d.roles[name], role)
		}
	}
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
	var vals [roleFields + 8]value // on the stack for up to 8 fields
	var ok [roleFields + 8]bool
	n := roleFields + len(d.cfg.Fields)
	vs, found := vals[:], ok[:]
	if n > len(vals) {
		vs, found = make([]value, n), make([]bool, n)
	}
	if rej := d.fields(line, vs[:n], found[:n]); rej != nil {
		return Reading{}, rej
	}
	get := func(role int) (value, bool) { return vs[role], found[role] }
	r := Reading{Key: d.source, Time: now, Values: make([]float64, len(d.cfg.Fields))}
	if d.cfg.KeyField != "" {
		k, ok := get(roleKey)
		if !ok {
			return Reading{}, d.reject(line, "missing key field "+d.cfg.KeyField)
		}
		s := k.s
		if k.kind != 's' || s == "" {
			return Reading{}, d.reject(line, "key field "+d.cfg.KeyField+" is not a non-empty string")
		}
		r.Key = s
	}
	if d.cfg.TimeField != "" {
		v, ok := get(roleTime)
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
		if v, ok := get(roleWatermark); ok {
			t, err := parseTime(v)
			if err != nil {
				return Reading{}, d.reject(line, "watermark field: "+err.Error())
			}
			r.Watermark = t
		}
	}
	for i, f := range d.cfg.Fields {
		v, ok := get(roleFields + i)
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

// fields fills vals (and found) by role from the line's fields.
func (d *Decoder) fields(line []byte, vals []value, found []bool) *Reject {
	if d.cfg.Format == CSV {
		rec, err := csv.NewReader(bytes.NewReader(line)).Read()
		if err != nil {
			return d.reject(line, "csv: "+err.Error())
		}
		if len(rec) != len(d.cfg.Columns) {
			return d.reject(line, fmt.Sprintf("csv: %d columns, want %d", len(rec), len(d.cfg.Columns)))
		}
		for name, roles := range d.roles {
			for _, r := range roles {
				vals[r], found[r] = value{kind: 's', s: rec[d.colIndex[name]]}, true
			}
		}
		return nil
	}
	// Lines with very many brackets (hostile nesting: gjson validates
	// recursively, with no depth limit) go to encoding/json, which stops
	// at 10,000 levels.
	if bytes.Count(line, []byte{'{'})+bytes.Count(line, []byte{'['}) > maxBrackets {
		return d.fieldsStdlib(line, vals, found)
	}
	// One pass over the object's own keys (gjson: no map, no value for the
	// keys no role wants), after checking that the line's first value is
	// a valid JSON object; what follows it is ignored, as encoding/json's
	// Decoder does (a sensor writing `{...},` lines of an array). A key
	// given twice counts with its last value, as encoding/json has it.
	if line[0] != '{' {
		return d.reject(line, "not a JSON object")
	}
	line = line[:objectEnd(line)]
	if !gjson.ValidBytes(line) {
		return d.reject(line, "not a JSON object")
	}
	gjson.ParseBytes(line).ForEach(func(key, v gjson.Result) bool {
		roles, ok := d.roles[key.Str]
		if !ok {
			return true
		}
		x := value{kind: 'x'}
		switch v.Type {
		case gjson.String:
			x = value{kind: 's', s: validUTF8(v.Str)}
		case gjson.Number:
			x = value{kind: 'n', s: v.Raw}
		}
		for _, r := range roles {
			vals[r], found[r] = x, true
		}
		return true
	})
	return nil
}

// objectEnd is where the object line starts with ends: after the brace
// that closes it, strings skipped; the whole line when it never closes
// (the validator then says why).
func objectEnd(line []byte) int {
	depth, inString, escaped := 0, false, false
	for i, c := range line {
		switch {
		case inString:
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
		case c == '"':
			inString = true
		case c == '{' || c == '[':
			depth++
		case c == '}' || c == ']':
			if depth--; depth == 0 {
				return i + 1
			}
		}
	}
	return len(line)
}

// maxBrackets is how many '{' and '[' a line may hold for the fast path.
const maxBrackets = 10000

// validUTF8 replaces each byte of invalid UTF-8 with U+FFFD, as
// encoding/json decodes strings (gjson keeps the bytes).
func validUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b.WriteString("\uFFFD")
		} else {
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// fieldsStdlib is fields through encoding/json, for lines the fast path
// leaves alone.
func (d *Decoder) fieldsStdlib(line []byte, vals []value, found []bool) *Reject {
	var m map[string]json.RawMessage
	if err := json.NewDecoder(bytes.NewReader(line)).Decode(&m); err != nil || m == nil {
		return d.reject(line, "not a JSON object")
	}
	for name, roles := range d.roles {
		raw, ok := m[name]
		if !ok {
			continue
		}
		x := value{kind: 'x'}
		var str string
		switch {
		case json.Unmarshal(raw, &str) == nil && len(raw) > 0 && raw[0] == '"':
			x = value{kind: 's', s: str}
		case len(raw) > 0 && (raw[0] == '-' || raw[0] >= '0' && raw[0] <= '9'):
			x = value{kind: 'n', s: string(raw)}
		}
		for _, r := range roles {
			vals[r], found[r] = x, true
		}
	}
	return nil
}

func (d *Decoder) reject(line []byte, reason string) *Reject {
	const keep = 1024 // enough to debug, bounded for hostile input
	if len(line) > keep {
		line = line[:keep]
	}
	return &Reject{Reason: reason, Line: append([]byte(nil), line...)}
}

// number reads a JSON number, or a string holding one (CSV cells, JSON
// numbers sent as strings).
func number(v value) (float64, error) {
	if v.kind == 'x' {
		return 0, fmt.Errorf("not a number")
	}
	return strconv.ParseFloat(v.s, 64)
}

// parseTime accepts RFC 3339 strings, and Unix seconds or milliseconds
// (a number above 1e11 is taken as milliseconds).
func parseTime(v value) (time.Time, error) {
	if v.kind == 's' {
		if t, err := time.Parse(time.RFC3339Nano, v.s); err == nil {
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
