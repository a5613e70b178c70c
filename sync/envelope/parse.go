package envelope

import (
	"fmt"
	"sync"
	"time"
	"unicode/utf16"
	"unicode/utf8"
)

// parser is a single-pass decoder of the envelope schema: it checks the
// JSON grammar as it goes (no validator pass first) and keeps only what
// the schema names. It decodes as encoding/json's Unmarshal into Envelope
// (or wireHeader) does, FuzzDecoderAgreesWithReference holding it to that:
//
//   - keys match their fields case-insensitively; unknown keys are skipped,
//     but their values must be valid JSON;
//   - a duplicate key overwrites, and null leaves a field as it was (null
//     records clears the slice);
//   - a second records array decodes into the first one's elements, as
//     encoding/json reuses a slice's backing array: fields it does not set
//     keep the earlier values;
//   - numbers into uint64 and int must be integers in range, strings are
//     unquoted as encoding/json does (invalid UTF-8 and lone surrogates
//     become U+FFFD), event_time is time.Time.UnmarshalJSON's;
//   - containers nest at most maxDepth deep, encoding/json's limit.
//
// One difference is accepted: keys are folded in ASCII only, where
// encoding/json also folds 'ſ' (U+017F) to 's' and 'K' (U+212A, Kelvin) to
// 'k', so it takes "ſeq" for seq and this parser skips it. goccy, the
// decoder before this one, folded in ASCII too.
type parser struct {
	b    []byte
	i    int  // the next byte to read
	full bool // decode event_time and data, not only the header and seqs

	v                     int
	device, epoch, stream string
	floor, prev           uint64

	recs []rec // the records array, up to MaxRecords; reused across payloads
	n    int   // elements in the last records array (past MaxRecords too)
	// written is how many of recs this payload has written: a records
	// array decodes into those as they are, into the rest zeroed.
	written int
	// cur is the record being decoded, -1 outside records, for errors.
	cur int
	// recErr is a record's bad event_time: the envelope is malformed, the
	// header may still be sound.
	recErr error

	tmp []byte // unquoting
}

// rec is a decoded record; its data is still in the payload.
type rec struct {
	seq            uint64
	t              time.Time
	dataAt, dataTo int
}

// maxDepth is encoding/json's limit on nesting.
const maxDepth = 10000

var parsers = sync.Pool{New: func() any { return new(parser) }}

// parse decodes b into a parser from the pool, which the caller returns
// with release. A non-nil error means b is not JSON or does not fit the
// schema's types: neither the header nor the envelope is sound.
func parse(b []byte, full bool) (*parser, error) {
	p := parsers.Get().(*parser)
	*p = parser{b: b, full: full, recs: p.recs[:0], tmp: p.tmp[:0], cur: -1}
	return p, p.top()
}

func (p *parser) release() {
	if cap(p.recs) > 1<<14 || cap(p.tmp) > 1<<16 {
		return // a rare huge payload: let the collector have it
	}
	p.b, p.recErr = nil, nil
	parsers.Put(p)
}

func (p *parser) errorf(format string, args ...any) error {
	if p.cur >= 0 {
		return fmt.Errorf("%w: record %d: offset %d: %s", ErrMalformed, p.cur, p.i, fmt.Sprintf(format, args...))
	}
	return fmt.Errorf("%w: offset %d: %s", ErrMalformed, p.i, fmt.Sprintf(format, args...))
}

// ws skips JSON whitespace.
func (p *parser) ws() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

// peek returns the next byte, 0 at the end.
func (p *parser) peek() byte {
	if p.i < len(p.b) {
		return p.b[p.i]
	}
	return 0
}

// top decodes the whole payload: one object and nothing after it.
func (p *parser) top() error {
	p.ws()
	if p.peek() != '{' {
		// encoding/json refuses anything else, or (null) leaves an
		// envelope that fails validation.
		return p.errorf("not a JSON object")
	}
	err := p.object(1, func(key []byte) error {
		switch {
		case eqFold(key, "v"):
			return p.int(&p.v, "v")
		case eqFold(key, "device"):
			return p.string(&p.device, "device")
		case eqFold(key, "epoch"):
			return p.string(&p.epoch, "epoch")
		case eqFold(key, "stream"):
			return p.string(&p.stream, "stream")
		case eqFold(key, "floor"):
			return p.uint(&p.floor, "floor")
		case eqFold(key, "prev"):
			return p.uint(&p.prev, "prev")
		case eqFold(key, "records"):
			return p.records()
		}
		return p.skip(2)
	})
	if err != nil {
		return err
	}
	p.ws()
	if p.i != len(p.b) {
		return p.errorf("data after the object")
	}
	return nil
}

// object decodes the object at p.i, at nesting depth, calling field with
// each key (unquoted) to decode its value.
func (p *parser) object(depth int, field func(key []byte) error) error {
	if depth > maxDepth {
		return p.errorf("nested more than %d deep", maxDepth)
	}
	p.i++ // {
	p.ws()
	if p.peek() == '}' {
		p.i++
		return nil
	}
	for {
		if p.peek() != '"' {
			return p.errorf("want a key")
		}
		key, err := p.key()
		if err != nil {
			return err
		}
		p.ws()
		if p.peek() != ':' {
			return p.errorf("want : after a key")
		}
		p.i++
		p.ws()
		if err := field(key); err != nil {
			return err
		}
		p.ws()
		switch p.peek() {
		case ',':
			p.i++
			p.ws()
		case '}':
			p.i++
			return nil
		default:
			return p.errorf("want , or } in an object")
		}
	}
}

// records decodes the records value.
func (p *parser) records() error {
	switch p.peek() {
	case 'n':
		// encoding/json sets the slice to nil: nothing earlier is kept.
		p.n, p.written = 0, 0
		return p.literal("null")
	case '[':
	default:
		return p.errorf("records is not an array")
	}
	p.i++
	p.ws()
	n := 0
	var spare rec // what records past MaxRecords decode into
	if p.peek() != ']' {
		for {
			r := &spare
			if n < MaxRecords {
				if n == len(p.recs) {
					p.recs = append(p.recs, rec{})
				}
				r = &p.recs[n]
				if n >= p.written {
					*r = rec{}
					p.written = n + 1
				}
			} else {
				spare = rec{}
			}
			p.cur = n
			if err := p.record(n, r); err != nil {
				return err
			}
			p.cur = -1
			n++
			p.ws()
			if p.peek() == ',' {
				p.i++
				p.ws()
				continue
			}
			if p.peek() != ']' {
				return p.errorf("want , or ] in records")
			}
			break
		}
	}
	p.i++ // ]
	p.n = n
	if n == 0 {
		// encoding/json makes a new empty slice.
		p.written = 0
	}
	return nil
}

// record decodes records[i] into r.
func (p *parser) record(i int, r *rec) error {
	switch p.peek() {
	case 'n':
		return p.literal("null") // leaves r as it is
	case '{':
	default:
		return p.errorf("not an object")
	}
	return p.object(3, func(key []byte) error {
		switch {
		case eqFold(key, "seq"):
			return p.uint(&r.seq, "seq")
		case p.full && eqFold(key, "event_time"):
			return p.eventTime(i, r)
		case p.full && eqFold(key, "data"):
			at := p.i
			if err := p.skip(4); err != nil {
				return err
			}
			r.dataAt, r.dataTo = at, p.i
			return nil
		}
		return p.skip(4)
	})
}

// eventTime decodes an event_time as time.Time.UnmarshalJSON does: null
// leaves it, a string is parsed as RFC 3339 without unquoting (that method
// does not unquote), anything else is an error. An error marks the
// envelope bad but not the header, so the parse goes on.
func (p *parser) eventTime(i int, r *rec) error {
	at := p.i
	if err := p.skip(4); err != nil {
		return err
	}
	if p.recErr != nil {
		return nil // the envelope is bad already
	}
	if err := r.t.UnmarshalJSON(p.b[at:p.i]); err != nil {
		p.recErr = fmt.Errorf("%w: record %d: event_time: %w", ErrMalformed, i, err)
	}
	return nil
}

// int decodes an integer into an int, as encoding/json does: null leaves
// it, anything but an integer in range is an error.
func (p *parser) int(v *int, name string) error {
	if c := p.peek(); c == 'n' {
		return p.literal("null")
	} else if c != '-' && (c < '0' || c > '9') {
		return p.errorf("%s is not a number", name)
	}
	at := p.i
	isInt, err := p.number()
	if err != nil {
		return err
	}
	s := p.b[at:p.i]
	neg := s[0] == '-'
	if neg {
		s = s[1:]
	}
	u, ok := parseUint(s)
	switch {
	case !isInt || !ok:
	case !neg && u <= 1<<63-1 && int64(int(u)) == int64(u):
		*v = int(u)
		return nil
	case neg && u <= 1<<63 && int64(int(-int64(u))) == -int64(u):
		*v = int(-int64(u))
		return nil
	}
	return p.errorf("%s %s is not an int", name, p.b[at:p.i])
}

// uint decodes an integer into a uint64, as encoding/json does: null
// leaves it, anything but an integer in range is an error.
func (p *parser) uint(v *uint64, name string) error {
	if c := p.peek(); c == 'n' {
		return p.literal("null")
	} else if c != '-' && (c < '0' || c > '9') {
		return p.errorf("%s is not a number", name)
	}
	at := p.i
	isInt, err := p.number()
	if err != nil {
		return err
	}
	if u, ok := parseUint(p.b[at:p.i]); isInt && ok {
		*v = u
		return nil
	}
	return p.errorf("%s %s is not a uint64", name, p.b[at:p.i])
}

// parseUint parses decimal digits (no sign), false on anything else or
// overflow.
func parseUint(s []byte) (uint64, bool) {
	var u uint64
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if u > (1<<64-1-d)/10 {
			return 0, false
		}
		u = u*10 + d
	}
	return u, len(s) > 0
}

// number skips a JSON number, reporting whether it has neither fraction
// nor exponent.
func (p *parser) number() (isInt bool, err error) {
	b, i := p.b, p.i
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && '1' <= b[i] && b[i] <= '9':
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
		}
	default:
		return false, p.errorf("not a JSON value")
	}
	isInt = true
	if i < len(b) && b[i] == '.' {
		isInt = false
		i++
		if i >= len(b) || b[i] < '0' || b[i] > '9' {
			p.i = i
			return false, p.errorf("no digits after the decimal point")
		}
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		isInt = false
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i >= len(b) || b[i] < '0' || b[i] > '9' {
			p.i = i
			return false, p.errorf("no digits in the exponent")
		}
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
		}
	}
	p.i = i
	return isInt, nil
}

// literal skips true, false or null.
func (p *parser) literal(lit string) error {
	if len(p.b)-p.i < len(lit) || string(p.b[p.i:p.i+len(lit)]) != lit {
		return p.errorf("not a JSON value")
	}
	p.i += len(lit)
	return nil
}

// string decodes a string into *s: null leaves it, anything else but a
// string is an error.
func (p *parser) string(s *string, name string) error {
	switch p.peek() {
	case 'n':
		return p.literal("null")
	case '"':
	default:
		return p.errorf("%s is not a string", name)
	}
	at, to, plain, err := p.str()
	if err != nil {
		return err
	}
	if plain {
		*s = string(p.b[at:to])
		return nil
	}
	p.tmp = unquote(p.tmp[:0], p.b[at:to])
	*s = string(p.tmp)
	return nil
}

// key reads an object's key, unquoted. It may be p.tmp, valid until the
// next unquoting.
func (p *parser) key() ([]byte, error) {
	at, to, plain, err := p.str()
	if err != nil {
		return nil, err
	}
	if plain {
		return p.b[at:to], nil
	}
	p.tmp = unquote(p.tmp[:0], p.b[at:to])
	return p.tmp, nil
}

// str checks the string at p.i and skips it, returning where its
// contents lie and whether they are plain: ASCII without escapes, so
// they need no unquoting.
func (p *parser) str() (at, to int, plain bool, err error) {
	b := p.b
	i := p.i + 1 // "
	at, plain = i, true
	for {
		for i < len(b) && plainByte[b[i]] {
			i++
		}
		if i >= len(b) {
			break
		}
		switch c := b[i]; {
		case c == '"':
			p.i = i + 1
			return at, i, plain, nil
		case c == '\\':
			plain = false
			i++
			if i >= len(b) {
				break
			}
			switch b[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i++
			case 'u':
				if len(b)-i < 5 || hex4(b[i+1:i+5]) < 0 {
					p.i = i
					return 0, 0, false, p.errorf("bad \\u escape in a string")
				}
				i += 5
			default:
				p.i = i
				return 0, 0, false, p.errorf("bad escape in a string")
			}
		case c < ' ':
			p.i = i
			return 0, 0, false, p.errorf("control character in a string")
		default:
			// The grammar takes any byte; unquote replaces invalid
			// UTF-8, as encoding/json does.
			plain = false
			i++
		}
	}
	p.i = len(b)
	return 0, 0, false, p.errorf("unterminated string")
}

// plainByte is true for the bytes a string holds as they are: ASCII but
// for control characters, " and \.
var plainByte = func() (t [256]bool) {
	for c := ' '; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// hex4 is the value of four hex digits, -1 if they are not.
func hex4(s []byte) rune {
	var r rune
	for _, c := range s[:4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			c = c - 'A' + 10
		default:
			return -1
		}
		r = r<<4 | rune(c)
	}
	return r
}

// unquote appends the string contents s, already checked by str, to dst
// decoded as encoding/json's unquote does: escapes resolved, a surrogate
// pair joined, a lone surrogate and each byte of invalid UTF-8 replaced
// by U+FFFD.
func unquote(dst, s []byte) []byte {
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '\\':
			i++
			switch s[i] {
			case 'b':
				dst = append(dst, '\b')
			case 'f':
				dst = append(dst, '\f')
			case 'n':
				dst = append(dst, '\n')
			case 'r':
				dst = append(dst, '\r')
			case 't':
				dst = append(dst, '\t')
			case 'u':
				r := hex4(s[i+1:])
				i += 5
				if utf16.IsSurrogate(r) {
					r2 := rune(-1)
					if len(s)-i >= 6 && s[i] == '\\' && s[i+1] == 'u' {
						r2 = hex4(s[i+2:])
					}
					if pair := utf16.DecodeRune(r, r2); pair != utf8.RuneError {
						dst = utf8.AppendRune(dst, pair)
						i += 6
						continue
					}
					r = utf8.RuneError
				}
				dst = utf8.AppendRune(dst, r)
				continue
			default: // " \ /
				dst = append(dst, s[i])
			}
			i++
		case c < utf8.RuneSelf:
			dst = append(dst, c)
			i++
		default:
			r, size := utf8.DecodeRune(s[i:])
			dst = utf8.AppendRune(dst, r)
			i += size
		}
	}
	return dst
}

// skip checks the value at p.i, at nesting depth, and skips it.
func (p *parser) skip(depth int) error {
	switch p.peek() {
	case '"':
		_, _, _, err := p.str()
		return err
	case '{':
		return p.object(depth, func([]byte) error { return p.skip(depth + 1) })
	case '[':
		return p.array(depth)
	case 't':
		return p.literal("true")
	case 'f':
		return p.literal("false")
	case 'n':
		return p.literal("null")
	}
	_, err := p.number()
	return err
}

// array checks the array at p.i, at nesting depth, and skips it.
func (p *parser) array(depth int) error {
	if depth > maxDepth {
		return p.errorf("nested more than %d deep", maxDepth)
	}
	p.i++ // [
	p.ws()
	if p.peek() == ']' {
		p.i++
		return nil
	}
	for {
		if err := p.skip(depth + 1); err != nil {
			return err
		}
		p.ws()
		switch p.peek() {
		case ',':
			p.i++
			p.ws()
		case ']':
			p.i++
			return nil
		default:
			return p.errorf("want , or ] in an array")
		}
	}
}

// eqFold reports whether key is name, a lowercase ASCII field name, in
// any ASCII case.
func eqFold(key []byte, name string) bool {
	if len(key) != len(name) {
		return false
	}
	for i := range len(key) {
		c := key[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != name[i] {
			return false
		}
	}
	return true
}

// header checks the header invariants, as decodeHeaderRaw always has.
func (p *parser) header() (Header, error) {
	switch {
	case p.v != Version:
		return Header{}, fmt.Errorf("%w: version %d, want %d", ErrMalformed, p.v, Version)
	case p.device == "" || p.stream == "":
		return Header{}, fmt.Errorf("%w: device or stream is empty", ErrMalformed)
	case !ValidEpoch(p.epoch):
		return Header{}, fmt.Errorf("%w: epoch %.40q is not 1 to %d lowercase letters and digits", ErrMalformed, p.epoch, MaxEpochLen)
	case p.n == 0 || p.n > MaxRecords:
		return Header{}, fmt.Errorf("%w: %d records, want 1 to %d", ErrMalformed, p.n, MaxRecords)
	case p.floor > p.prev:
		return Header{}, fmt.Errorf("%w: floor %d above prev %d", ErrMalformed, p.floor, p.prev)
	}
	prev := p.prev
	for i, r := range p.recs[:p.n] {
		if r.seq <= prev {
			return Header{}, fmt.Errorf("%w: record %d has seq %d, not above %d", ErrMalformed, i, r.seq, prev)
		}
		prev = r.seq
	}
	return Header{Device: p.device, Epoch: p.epoch, Stream: p.stream, Floor: p.floor, Prev: p.prev, Last: prev, Records: p.n}, nil
}

// envelope checks what validate(false) checks and builds the envelope of
// a full parse. Its records' data are copied into one slab, so nothing
// aliases the payload (inflated payloads are pooled).
func (p *parser) envelope() (*Envelope, error) {
	if p.recErr != nil {
		return nil, p.recErr
	}
	e := &Envelope{V: p.v, Device: p.device, Epoch: p.epoch, Stream: p.stream, Floor: p.floor, Prev: p.prev}
	switch {
	case e.V != Version:
		return nil, fmt.Errorf("%w: version %d, want %d", ErrMalformed, e.V, Version)
	case e.Device == "":
		return nil, fmt.Errorf("%w: device is empty", ErrMalformed)
	case e.Stream == "":
		return nil, fmt.Errorf("%w: stream is empty", ErrMalformed)
	case !ValidEpoch(e.Epoch):
		return nil, fmt.Errorf("%w: epoch %.40q is not 1 to %d lowercase letters and digits", ErrMalformed, e.Epoch, MaxEpochLen)
	case p.n == 0:
		return nil, fmt.Errorf("%w: no records", ErrMalformed)
	case p.n > MaxRecords:
		return nil, fmt.Errorf("%w: %d records, limit %d", ErrMalformed, p.n, MaxRecords)
	case e.Floor > e.Prev:
		return nil, fmt.Errorf("%w: floor %d above prev %d", ErrMalformed, e.Floor, e.Prev)
	}
	recs := p.recs[:p.n]
	prev, size := e.Prev, 0
	for i, r := range recs {
		switch {
		case r.seq <= prev:
			return nil, fmt.Errorf("%w: record %d has seq %d, not above %d", ErrMalformed, i, r.seq, prev)
		case r.t.IsZero():
			return nil, fmt.Errorf("%w: record %d (seq %d) has no event_time", ErrMalformed, i, r.seq)
		case r.dataTo == r.dataAt:
			return nil, fmt.Errorf("%w: record %d (seq %d) data is not JSON", ErrMalformed, i, r.seq)
		}
		prev = r.seq
		size += r.dataTo - r.dataAt
	}
	slab := make([]byte, 0, size)
	e.Records = make([]Record, len(recs))
	for i, r := range recs {
		at := len(slab)
		slab = append(slab, p.b[r.dataAt:r.dataTo]...)
		e.Records[i] = Record{Seq: r.seq, EventTime: r.t, Data: slab[at:len(slab):len(slab)]}
	}
	return e, nil
}
