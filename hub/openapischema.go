package hub

import (
	"encoding"
	"encoding/json"
	"fmt"
	"go/ast"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/outpost-edge/outpost/hub/api"
)

// schema is the part of an OpenAPI 3.0 Schema Object the hub's document
// uses.
type schema struct {
	Ref         string   `json:"$ref,omitempty"`
	Type        string   `json:"type,omitempty"`
	Format      string   `json:"format,omitempty"`
	Description string   `json:"description,omitempty"`
	Nullable    bool     `json:"nullable,omitempty"`
	Enum        []string `json:"enum,omitempty"`
	Pattern     string   `json:"pattern,omitempty"`
	Minimum     *float64 `json:"minimum,omitempty"`
	Maximum     *float64 `json:"maximum,omitempty"`
	// Properties is never omitted on an object from a struct: an empty
	// struct has no keys, not any.
	Properties map[string]*schema `json:"properties,omitempty"`
	Required   []string           `json:"required,omitempty"`
	// AdditionalProperties is false (a struct: exactly its keys) or the
	// schema of a map's values.
	AdditionalProperties any       `json:"additionalProperties,omitempty"`
	Items                *schema   `json:"items,omitempty"`
	AllOf                []*schema `json:"allOf,omitempty"`
	OneOf                []*schema `json:"oneOf,omitempty"`
}

func bound(f float64) *float64 { return &f }

// schemaMode: an answer's struct requires every key it always writes (no
// omitempty); a request's requires none, since encoding/json fills what a
// request leaves out and the handlers say what they need.
type schemaMode int

const (
	output schemaMode = iota
	input
)

// schemaGen derives component schemas from Go types by the rules of
// encoding/json, so the document says what the handlers really encode:
// json tags name the keys, omitempty and omitzero keys are optional,
// time.Time is a date-time string, maps have additionalProperties and
// slices are arrays. A struct's object allows no other key, so a field
// added without its description fails the conformance test.
type schemaGen struct {
	components map[string]*schema
	names      [2]map[reflect.Type]string
	taken      map[string]reflect.Type
	// rename names components whose Go names collide or are unexported.
	rename map[reflect.Type]string
}

func newSchemaGen(rename map[reflect.Type]string) *schemaGen {
	return &schemaGen{
		components: map[string]*schema{},
		names:      [2]map[reflect.Type]string{{}, {}},
		taken:      map[string]reflect.Type{},
		rename:     rename,
	}
}

// special are the types that encode themselves.
var special = map[reflect.Type]func() *schema{
	reflect.TypeFor[time.Time](): func() *schema { return &schema{Type: "string", Format: "date-time"} },
	reflect.TypeFor[api.Duration](): func() *schema {
		return &schema{Type: "string", Description: `a Go duration: "90s", "1h30m"`, Pattern: `^[-+]?((([0-9]+(\.[0-9]*)?)|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h))+$|^[-+]?0$`}
	},
	reflect.TypeFor[json.RawMessage](): func() *schema { return &schema{Description: "a JSON document"} },
}

var (
	marshaler     = reflect.TypeFor[json.Marshaler]()
	textMarshaler = reflect.TypeFor[encoding.TextMarshaler]()
)

// of is the schema of a value of type t.
func (g *schemaGen) of(t reflect.Type, mode schemaMode) (*schema, error) {
	if f, ok := special[t]; ok {
		return f(), nil
	}
	for _, x := range []reflect.Type{t, reflect.PointerTo(t)} {
		if t.Kind() != reflect.Pointer && (x.Implements(marshaler) || x.Implements(textMarshaler)) {
			return nil, fmt.Errorf("openapi: %s encodes itself: describe it in special", t)
		}
	}
	switch t.Kind() {
	case reflect.Pointer:
		return g.of(t.Elem(), mode)
	case reflect.Bool:
		return &schema{Type: "boolean"}, nil
	case reflect.String:
		return &schema{Type: "string"}, nil
	case reflect.Int, reflect.Int64:
		return &schema{Type: "integer", Format: "int64"}, nil
	case reflect.Int8, reflect.Int16, reflect.Int32:
		return &schema{Type: "integer", Format: "int32"}, nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return &schema{Type: "integer", Minimum: bound(0)}, nil
	case reflect.Float32, reflect.Float64:
		return &schema{Type: "number"}, nil
	case reflect.Interface:
		return &schema{}, nil
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 {
			return &schema{Type: "string", Format: "byte"}, nil // base64
		}
		items, err := g.of(t.Elem(), mode)
		if err != nil {
			return nil, err
		}
		return &schema{Type: "array", Items: items}, nil
	case reflect.Map:
		if t.Key().Kind() != reflect.String {
			return nil, fmt.Errorf("openapi: %s: only maps keyed by strings are described", t)
		}
		values, err := g.of(t.Elem(), mode)
		if err != nil {
			return nil, err
		}
		return &schema{Type: "object", AdditionalProperties: values}, nil
	case reflect.Struct:
		name, err := g.component(t, mode)
		if err != nil {
			return nil, err
		}
		return &schema{Ref: "#/components/schemas/" + name}, nil
	}
	return nil, fmt.Errorf("openapi: %s: no JSON schema for a %s", t, t.Kind())
}

// component names struct t's schema and adds it to the components once.
// Requests are described after answers: a request type that is also an
// answer's (a rollout's spec) gets a second component, named ...Input.
func (g *schemaGen) component(t reflect.Type, mode schemaMode) (string, error) {
	if name, ok := g.names[mode][t]; ok {
		return name, nil
	}
	name := g.rename[t]
	if name == "" {
		if t.Name() == "" || !ast.IsExported(t.Name()) {
			return "", fmt.Errorf("openapi: %s has no exported name: give it one in the renames", t)
		}
		name = t.Name()
	}
	if other, ok := g.taken[name]; ok {
		if other != t || mode == output {
			return "", fmt.Errorf("openapi: %s and %s are both named %s: rename one", other, t, name)
		}
		name += "Input"
		if _, ok := g.taken[name]; ok {
			return "", fmt.Errorf("openapi: %s: %s is taken", t, name)
		}
	}
	g.names[mode][t], g.taken[name] = name, t
	s := &schema{Type: "object", Properties: map[string]*schema{}, AdditionalProperties: false}
	g.components[name] = s // before the fields, for recursive types
	if err := g.fields(s, t, mode); err != nil {
		return "", err
	}
	slices.Sort(s.Required)
	return name, nil
}

// fields adds t's JSON keys to s, promoting those of embedded structs as
// encoding/json does.
func (g *schemaGen) fields(s *schema, t reflect.Type, mode schemaMode) error {
	for f := range t.Fields() {
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		key, opts, _ := strings.Cut(tag, ",")
		ft := f.Type
		if f.Anonymous && key == "" {
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				if err := g.fields(s, ft, mode); err != nil {
					return err
				}
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if key == "" {
			key = f.Name
		}
		optional := false
		for o := range strings.SplitSeq(opts, ",") {
			switch o {
			case "omitempty", "omitzero":
				optional = true
			case "string":
				return fmt.Errorf("openapi: %s.%s: the string option is not described", t, f.Name)
			}
		}
		if _, dup := s.Properties[key]; dup {
			return fmt.Errorf("openapi: %s: key %q twice", t, key)
		}
		fs, err := g.of(ft, mode)
		if err != nil {
			return fmt.Errorf("%s.%s: %w", t, f.Name, err)
		}
		// A nil slice, map or pointer that is not omitted is null.
		if k := ft.Kind(); !optional && (k == reflect.Slice || k == reflect.Map || k == reflect.Pointer) {
			if fs.Ref != "" {
				fs = &schema{AllOf: []*schema{fs}}
			}
			fs.Nullable = true
		}
		s.Properties[key] = fs
		if !optional && mode == output {
			s.Required = append(s.Required, key)
		}
	}
	return nil
}
