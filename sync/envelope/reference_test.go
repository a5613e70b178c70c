package envelope

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	gojson "github.com/goccy/go-json"
)

// The reference decoders are encoding/json's Unmarshal into the envelope's
// structs followed by the checks decoding has always made: the parser must
// agree with them on every input (FuzzDecoderAgreesWithReference).

// wireHeader is what the header decoder used to unmarshal into.
type wireHeader struct {
	V       int    `json:"v"`
	Device  string `json:"device"`
	Epoch   string `json:"epoch"`
	Stream  string `json:"stream"`
	Floor   uint64 `json:"floor"`
	Prev    uint64 `json:"prev"`
	Records []struct {
		Seq uint64 `json:"seq"`
	} `json:"records"`
}

// check is decodeHeaderRaw's checks as they were before the parser.
func (w *wireHeader) check() (Header, error) {
	switch {
	case w.V != Version:
		return Header{}, fmt.Errorf("%w: version %d, want %d", ErrMalformed, w.V, Version)
	case w.Device == "" || w.Stream == "":
		return Header{}, fmt.Errorf("%w: device or stream is empty", ErrMalformed)
	case !ValidEpoch(w.Epoch):
		return Header{}, fmt.Errorf("%w: epoch %.40q is not 1 to %d lowercase letters and digits", ErrMalformed, w.Epoch, MaxEpochLen)
	case len(w.Records) == 0 || len(w.Records) > MaxRecords:
		return Header{}, fmt.Errorf("%w: %d records, want 1 to %d", ErrMalformed, len(w.Records), MaxRecords)
	case w.Floor > w.Prev:
		return Header{}, fmt.Errorf("%w: floor %d above prev %d", ErrMalformed, w.Floor, w.Prev)
	}
	prev := w.Prev
	for i, r := range w.Records {
		if r.Seq <= prev {
			return Header{}, fmt.Errorf("%w: record %d has seq %d, not above %d", ErrMalformed, i, r.Seq, prev)
		}
		prev = r.Seq
	}
	return Header{Device: w.Device, Epoch: w.Epoch, Stream: w.Stream, Floor: w.Floor, Prev: w.Prev, Last: prev, Records: len(w.Records)}, nil
}

func refDecode(payload []byte) (*Envelope, error) {
	var e Envelope
	if err := json.Unmarshal(payload, &e); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if err := e.validate(false); err != nil {
		return nil, err
	}
	return &e, nil
}

func refDecodeHeader(payload []byte) (Header, error) {
	var w wireHeader
	if err := json.Unmarshal(payload, &w); err != nil {
		return Header{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return w.check()
}

// goccyDecode and goccyDecodeHeader are the decoders the parser replaced
// (gjson's validator, then goccy's Unmarshal), for comparison.
func goccyDecode(payload []byte) (*Envelope, error) {
	if !validJSON(payload) {
		return nil, fmt.Errorf("%w: not JSON", ErrMalformed)
	}
	var e Envelope
	if err := goccyUnmarshal(payload, &e); err != nil {
		return nil, err
	}
	if err := e.validate(false); err != nil {
		return nil, err
	}
	return &e, nil
}

func goccyDecodeHeader(payload []byte) (Header, error) {
	var w wireHeader
	if err := goccyUnmarshal(payload, &w); err != nil {
		return Header{}, err
	}
	return w.check()
}

func goccyUnmarshal(payload []byte, v any) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: decoder: %v", ErrMalformed, r)
		}
	}()
	if err := gojson.Unmarshal(payload, v); err != nil {
		return fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return nil
}

// sameEnvelope says how got differs from want, "" if it does not. Times
// are equal if they are the same instant in the same zone.
func sameEnvelope(got, want *Envelope) string {
	if got == nil || want == nil || len(got.Records) != len(want.Records) {
		return fmt.Sprintf("got %+v, want %+v", got, want)
	}
	g, w := *got, *want
	g.Records, w.Records = nil, nil
	if !reflect.DeepEqual(g, w) {
		return fmt.Sprintf("got header fields %+v, want %+v", g, w)
	}
	for i := range got.Records {
		gr, wr := got.Records[i], want.Records[i]
		gn, gOff := gr.EventTime.Zone()
		wn, wo := wr.EventTime.Zone()
		if !gr.EventTime.Equal(wr.EventTime) || gn != wn || gOff != wo || (gr.EventTime.Location() == time.UTC) != (wr.EventTime.Location() == time.UTC) {
			return fmt.Sprintf("record %d: event_time %v, want %v", i, gr.EventTime, wr.EventTime)
		}
		if gr.Seq != wr.Seq || !bytes.Equal(gr.Data, wr.Data) {
			return fmt.Sprintf("record %d: got %d %q, want %d %q", i, gr.Seq, gr.Data, wr.Seq, wr.Data)
		}
		if cap(gr.Data) != len(gr.Data) {
			return fmt.Sprintf("record %d: data has capacity %d past its length %d", i, cap(gr.Data), len(gr.Data))
		}
	}
	return ""
}

// disagreement says how the parser's decodings of payload differ from the
// reference's, "" if they do not.
func disagreement(payload []byte) string {
	// Decode a copy and overwrite it after: nothing decoded may alias it.
	in := bytes.Clone(payload)
	e, err := decodeRaw(in)
	h, herr := decodeHeaderRaw(in)
	var r Decoded
	read := !bytes.HasPrefix(payload, zstdMagic) // Read would inflate it
	if read {
		r = defaultDecoder.Read(in)
	}
	for i := range in {
		in[i] = 'x'
	}

	we, werr := refDecode(payload)
	wh, wherr := refDecodeHeader(payload)
	for _, err := range []error{err, herr, r.Err, r.HeaderErr} {
		if err != nil && !errors.Is(err, ErrMalformed) {
			return fmt.Sprintf("error does not wrap ErrMalformed: %v", err)
		}
	}
	switch {
	case (err == nil) != (werr == nil):
		return fmt.Sprintf("decode: error %v, reference %v", err, werr)
	case err == nil && sameEnvelope(e, we) != "":
		return "decode: " + sameEnvelope(e, we)
	case (herr == nil) != (wherr == nil):
		return fmt.Sprintf("header: error %v, reference %v", herr, wherr)
	case h != wh:
		return fmt.Sprintf("header: %+v, reference %+v", h, wh)
	case !read:
		return ""
	case (r.Err == nil) != (werr == nil) || (r.Err == nil) != (r.Envelope != nil):
		return fmt.Sprintf("Read: envelope %v error %v, reference %v", r.Envelope, r.Err, werr)
	case r.Err == nil && sameEnvelope(r.Envelope, we) != "":
		return "Read: " + sameEnvelope(r.Envelope, we)
	case (r.HeaderErr == nil) != (wherr == nil) || r.Header != wh:
		return fmt.Sprintf("Read: header %+v error %v, reference %+v %v", r.Header, r.HeaderErr, wh, wherr)
	}
	return ""
}

// unicodeFolds rewrites the two non-ASCII runes encoding/json folds onto
// ASCII letters of the schema's keys (the one difference the parser
// accepts: it folds ASCII only), raw or escaped.
var unicodeFolds = strings.NewReplacer("ſ", "s", "K", "k", `\u017f`, "s", `\u017F`, "s", `\u212a`, "k", `\u212A`, "k")

// corpus returns the inputs of a fuzz test's stored corpus.
func corpus(tb testing.TB, fuzzName string) [][]byte {
	files, _ := filepath.Glob(filepath.Join("testdata", "fuzz", fuzzName, "*"))
	var out [][]byte
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			tb.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		if len(lines) != 2 || !strings.HasPrefix(lines[1], "[]byte(") {
			tb.Fatalf("%s: not a one-[]byte corpus file", f)
		}
		s, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[1], "[]byte("), ")"))
		if err != nil {
			tb.Fatalf("%s: %v", f, err)
		}
		out = append(out, []byte(s))
	}
	return out
}

// referenceSeeds are envelopes good and bad in the ways the parser must
// judge as encoding/json does.
var referenceSeeds = []string{
	`{"v":1,"device":"d","stream":"s","records":[{"seq":1,"event_time":"2026-01-01T00:00:00Z","data":1}]}`,
	` { "v" : 1 , "device" : "d" , "epoch" : "e1" , "stream" : "s" , "floor" : 2 , "prev" : 3 , "records" : [ { "seq" : 4 , "event_time" : "2026-01-01T00:00:00.5+02:00" , "data" : { "a" : [ 1 , 2.5e3 , -0 ] } } , { "seq" : 5 , "event_time" : "2026-01-01T00:00:01Z" , "data" : "x" } ] } ` + "\n\t\r",
	// escapes, surrogates, invalid UTF-8
	`{"v":1,"device":"d\u00e9\ud83d\ude00\n\"\\\/","stream":"\ud800x\udc00\ud800\u0041","records":[{"seq":1,"event_time":"2026-01-01T00:00:00Z","data":"\u00e9"}]}`,
	`{"v":1,"device":"d","stream":"s","records":[{"seq":1,"event_time":"2026-01-01T00:00:00Z","data":"\u00zz"}]}`,
	"{\"v\":1,\"device\":\"\xc3(\",\"stream\":\"\xed\xa0\x80\",\"records\":[{\"seq\":1,\"event_time\":\"2026-01-01T00:00:00Z\",\"data\":1}]}",
	"{\"v\":1,\"device\":\"\xff\xed\xa0\x80é\",\"stream\":\"s\",\"records\":[{\"seq\":1,\"event_time\":\"2026-01-01T00:00:00Z\",\"data\":\"\xff\"}]}",
	`{"\u0076":1,"dev\u0069ce":"d","STREAM":"s","Records":[{"SEQ":1,"Event_Time":"2026-01-01T00:00:00Z","DATA":null}]}`,
	`{"v":1,"device":"d","stream":"s","records":[{"seq":1,"event_time":"2026-01-01T00:00:00\u005a","data":1}]}`,
	// unknown keys, nested unknown values
	`{"x":{"y":[1,{"z":null}],"w":"\t"},"v":1,"device":"d","stream":"s","records":[{"q":[[[]]],"seq":1,"event_time":"2026-01-01T00:00:00Z","data":[true,false,null]}],"t":true}`,
	`{"x":[1,],"v":1,"device":"d","stream":"s","records":[{"seq":1,"event_time":"2026-01-01T00:00:00Z","data":1}]}`,
	`{"v":1,"device":"d","stream":"s","records":[{"seq":1,"event_time":"2026-01-01T00:00:00Z","data":{"a":1,}}]}`,
	// duplicate keys and nulls
	`{"v":2,"v":1,"device":"a","device":null,"stream":"s","records":[{"seq":1,"seq":2,"event_time":"2026-01-01T00:00:00Z","data":1,"data":[2]}]}`,
	`{"v":1,"device":"d","stream":"s","records":[{"seq":1,"event_time":"2026-01-01T00:00:00Z","data":1},{"seq":2,"event_time":"2026-01-01T00:00:00Z","data":2}],"records":[{"seq":3}]}`,
	`{"v":1,"device":"d","stream":"s","records":[{"seq":1,"event_time":"2026-01-01T00:00:00Z","data":1},{"seq":2,"event_time":"2026-01-01T00:00:00Z","data":2}],"records":[{"seq":3}],"records":[null,{"seq":4}]}`,
	`{"v":1,"device":"d","stream":"s","records":[{"seq":1,"event_time":"2026-01-01T00:00:00Z","data":1}],"records":[],"records":[null]}`,
	`{"v":1,"device":"d","stream":"s","records":[{"seq":1,"event_time":"2026-01-01T00:00:00Z","data":1}],"records":null,"records":[null]}`,
	`{"v":1,"device":"d","stream":"s","records":[{"seq":1,"event_time":"2026-01-01T00:00:00Z","data":null,"event_time":null}]}`,
	`{"v":null,"device":"d","stream":"s","records":[{"seq":1,"event_time":"2026-01-01T00:00:00Z","data":1}]}`,
	// bad times
	`{"v":1,"device":"d","stream":"s","records":[{"seq":1,"event_time":"2026-01-01 00:00:00Z","data":1}]}`,
	`{"v":1,"device":"d","stream":"s","records":[{"seq":1,"event_time":"0000-01-01T00:00:00Z","data":1}]}`,
	`{"v":1,"device":"d","stream":"s","records":[{"seq":1,"event_time":"2026-01-01T00:00:00+24:00","data":1}]}`,
	`{"v":1,"device":"d","stream":"s","records":[{"seq":1,"event_time":12,"data":1}]}`,
	`{"v":1,"device":"d","stream":"s","records":[{"seq":1,"event_time":{"t":1},"data":1}]}`,
	`{"v":1,"device":"d","stream":"s","records":[{"seq":1,"data":1}]}`,
	// bad numbers
	`{"v":1.0,"device":"d","stream":"s","records":[{"seq":1,"event_time":"2026-01-01T00:00:00Z","data":1}]}`,
	`{"v":1,"device":"d","stream":"s","records":[{"seq":1e3,"event_time":"2026-01-01T00:00:00Z","data":1}]}`,
	`{"v":1,"device":"d","stream":"s","prev":-1,"records":[{"seq":1,"event_time":"2026-01-01T00:00:00Z","data":1}]}`,
	`{"v":1,"device":"d","stream":"s","prev":-0,"records":[{"seq":1,"event_time":"2026-01-01T00:00:00Z","data":1}]}`,
	`{"v":1,"device":"d","stream":"s","records":[{"seq":18446744073709551615,"event_time":"2026-01-01T00:00:00Z","data":1}]}`,
	`{"v":1,"device":"d","stream":"s","records":[{"seq":18446744073709551616,"event_time":"2026-01-01T00:00:00Z","data":1}]}`,
	`{"v":-9223372036854775808,"device":"d","stream":"s","records":[{"seq":1}]}`,
	`{"v":9223372036854775808,"device":"d","stream":"s","records":[{"seq":1}]}`,
	`{"v":01,"device":"d","stream":"s","records":[{"seq":1}]}`,
	`{"v":"1","device":"d","stream":"s","records":[{"seq":1}]}`,
	// wrong types
	`{"v":1,"device":1,"stream":"s","records":[{"seq":1}]}`,
	`{"v":1,"device":"d","stream":"s","records":{"seq":1}}`,
	`{"v":1,"device":"d","stream":"s","records":[1]}`,
	// not one object
	`null`, `[]`, `"x"`, `{}`, `{"v":1} {}`, `{"v":1,`, `{"v":1,}`, `{"v" 1}`, `{'v':1}`,
	// Unicode folding, the accepted difference
	`{"v":1,"device":"d","ſtream":"s","records":[{"ſeq":1,"event_time":"2026-01-01T00:00:00Z","data":1}]}`,
}

func FuzzDecoderAgreesWithReference(f *testing.F) {
	for _, s := range referenceSeeds {
		f.Add([]byte(s))
	}
	for _, b := range corpus(f, "FuzzDecode") {
		f.Add(b)
	}
	good, _ := Encode(sample(), false)
	f.Add(good)
	f.Fuzz(func(t *testing.T, payload []byte) {
		diff := disagreement(payload)
		if diff == "" {
			return
		}
		if folded := []byte(unicodeFolds.Replace(string(payload))); !bytes.Equal(folded, payload) && disagreement(folded) == "" {
			return // encoding/json folded 'ſ' or 'K' onto a key
		}
		t.Fatalf("%s\non %q", diff, payload)
	})
}

func TestDecoderAgreesWithReferenceDeepNesting(t *testing.T) {
	for _, depth := range []int{maxDepth - 4, maxDepth - 3, maxDepth - 2, maxDepth} {
		data := strings.Repeat("[", depth) + strings.Repeat("]", depth)
		p := `{"v":1,"device":"d","stream":"s","records":[{"seq":1,"event_time":"2026-01-01T00:00:00Z","data":` + data + `}]}`
		if diff := disagreement([]byte(p)); diff != "" {
			t.Errorf("data nested %d deep: %s", depth, diff)
		}
	}
}

// BenchmarkDecodeGoccy is the decoder before the parser, for comparison.
func BenchmarkDecodeGoccy(b *testing.B) {
	benchDecode(b, func(p []byte) error { _, err := goccyDecode(p); return err })
}

func BenchmarkDecodeHeaderGoccy(b *testing.B) {
	benchDecode(b, func(p []byte) error { _, err := goccyDecodeHeader(p); return err })
}

// The one accepted difference from encoding/json: it folds 'ſ' and 'K'
// onto ASCII keys, the parser does not.
func TestUnicodeFoldingIsTheAcceptedDifference(t *testing.T) {
	p := []byte(`{"v":1,"device":"d","ſtream":"s","records":[{"ſeq":1,"event_time":"2026-01-01T00:00:00Z","data":1}]}`)
	if disagreement(p) == "" {
		t.Fatal("encoding/json no longer folds ſ onto s: drop the tolerance")
	}
	if diff := disagreement([]byte(unicodeFolds.Replace(string(p)))); diff != "" {
		t.Fatal(diff)
	}
}
