package hub

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
)

type genInner struct {
	N int `json:"n"`
}

type genEmbedded struct {
	Promoted string `json:"promoted"`
}

type genOuter struct {
	genEmbedded
	Name     string            `json:"name"`
	Optional string            `json:"optional,omitempty"`
	When     time.Time         `json:"when"`
	Later    time.Time         `json:"later,omitzero"`
	Tags     []string          `json:"tags"`
	Labels   map[string]string `json:"labels,omitempty"`
	Inner    *genInner         `json:"inner"`
	Skipped  int               `json:"-"`
	hidden   int
	Blob     []byte `json:"blob,omitempty"`
}

// hidden is unexported: encoding/json, and so the schema, skip it.
var _ = genOuter{hidden: 1}

type genSelfEncoding struct{}

func (genSelfEncoding) MarshalJSON() ([]byte, error) { return []byte(`"x"`), nil }

// The schemas follow encoding/json: keys from tags, embedded fields
// promoted, omitempty and omitzero optional, a nil slice or pointer null,
// and no other key.
func TestSchemaGenFollowsEncodingJSON(t *testing.T) {
	g := newSchemaGen(map[reflect.Type]string{reflect.TypeFor[genOuter](): "Outer", reflect.TypeFor[genInner](): "Inner"})
	if _, err := g.of(reflect.TypeFor[genOuter](), output); err != nil {
		t.Fatal(err)
	}
	got, _ := json.Marshal(g.components["Outer"])
	want := `{"type":"object","properties":{"blob":{"type":"string","format":"byte"},` +
		`"inner":{"nullable":true,"allOf":[{"$ref":"#/components/schemas/Inner"}]},` +
		`"labels":{"type":"object","additionalProperties":{"type":"string"}},"later":{"type":"string","format":"date-time"},` +
		`"name":{"type":"string"},"optional":{"type":"string"},"promoted":{"type":"string"},` +
		`"tags":{"type":"array","nullable":true,"items":{"type":"string"}},"when":{"type":"string","format":"date-time"}},` +
		`"required":["inner","name","promoted","tags","when"],"additionalProperties":false}`
	if string(got) != want {
		t.Fatalf("schema\n%s\nwant\n%s", got, want)
	}
}

// A request's struct requires nothing (encoding/json fills what is left
// out); a type that is both an answer's and a request's gets two names.
func TestSchemaGenInputs(t *testing.T) {
	g := newSchemaGen(map[reflect.Type]string{reflect.TypeFor[genInner](): "Inner"})
	for _, mode := range []schemaMode{output, input} {
		if _, err := g.of(reflect.TypeFor[genInner](), mode); err != nil {
			t.Fatal(err)
		}
	}
	if r := g.components["Inner"].Required; len(r) != 1 {
		t.Fatalf("answer requires %v, want n", r)
	}
	if r := g.components["InnerInput"].Required; len(r) != 0 {
		t.Fatalf("request requires %v, want nothing", r)
	}
}

// What the generator cannot describe truthfully is an error, not a guess.
func TestSchemaGenRefusesWhatItCannotDescribe(t *testing.T) {
	for _, c := range []struct {
		t    reflect.Type
		want string
	}{
		{reflect.TypeFor[genSelfEncoding](), "encodes itself"},
		{reflect.TypeFor[map[int]string](), "only maps keyed by strings"},
		{reflect.TypeFor[struct{ C chan int }](), "no exported name"},
		{reflect.TypeFor[func()](), "no JSON schema"},
	} {
		_, err := newSchemaGen(nil).of(c.t, output)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.t, err, c.want)
		}
	}
}
