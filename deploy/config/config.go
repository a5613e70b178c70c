// Package config loads a daemon's typed configuration in one fixed order:
// defaults → YAML file → environment → flags. Every field of the config
// struct is addressable by the same dotted path in all three layers, so an
// operator never has to learn two names for one setting.
package config

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Loader binds one config struct to its environment prefix and flags.
type Loader struct {
	// EnvPrefix prefixes every environment variable, e.g. OUTPOST_HUB.
	EnvPrefix string
	fields    []field
	set       map[string]string // flag path → raw value, for flags seen on the command line
}

// field is one leaf of the config struct.
type field struct {
	path  string // dotted YAML path, e.g. mqtt.port
	usage string
	index []int
}

// NewLoader walks cfg (a pointer to a struct with yaml tags) and registers
// one flag per leaf on fs, named after its dotted path.
func NewLoader(envPrefix string, cfg any, fs *flag.FlagSet) *Loader {
	l := &Loader{EnvPrefix: envPrefix, set: map[string]string{}}
	t := reflect.TypeOf(cfg).Elem()
	l.walk(t, nil, "")
	defaults := reflect.ValueOf(cfg).Elem()
	for _, f := range l.fields {
		def := formatValue(defaults.FieldByIndex(f.index))
		usage := f.usage
		if usage == "" {
			usage = f.path
		}
		usage += " (env " + l.EnvName(f.path) + ")"
		isBool := defaults.FieldByIndex(f.index).Kind() == reflect.Bool
		fs.Var(&rawFlag{path: f.path, set: l.set, def: def, isBool: isBool}, f.path, usage)
	}
	return l
}

func (l *Loader) walk(t reflect.Type, index []int, prefix string) {
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		if !sf.IsExported() {
			continue
		}
		name := strings.Split(sf.Tag.Get("yaml"), ",")[0]
		if name == "-" {
			continue
		}
		if name == "" {
			name = strings.ToLower(sf.Name)
		}
		path := name
		if prefix != "" {
			path = prefix + "." + name
		}
		idx := append(append([]int(nil), index...), i)
		ft := sf.Type
		if ft.Kind() == reflect.Struct && ft != reflect.TypeOf(time.Duration(0)) {
			l.walk(ft, idx, path)
			continue
		}
		if !settable(ft) {
			// Lists of structs (pipelines, ...) only come from the file.
			continue
		}
		l.fields = append(l.fields, field{path: path, usage: sf.Tag.Get("usage"), index: idx})
	}
}

func settable(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.String, reflect.Bool, reflect.Int, reflect.Int32, reflect.Int64, reflect.Uint16, reflect.Uint32, reflect.Float64:
		return true
	case reflect.Slice:
		return t.Elem().Kind() == reflect.String
	}
	return false
}

// EnvName is the environment variable for a dotted path:
// mqtt.port → PREFIX_MQTT_PORT.
func (l *Loader) EnvName(path string) string {
	r := strings.NewReplacer(".", "_", "-", "_")
	return l.EnvPrefix + "_" + strings.ToUpper(r.Replace(path))
}

// Load applies the file (if path is not empty), the environment and the flags
// already parsed into the loader, in that order, on top of cfg's defaults.
func (l *Loader) Load(cfg any, path string, environ []string) error {
	var errs Errors
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("config: read %s: %w", path, err)
		}
		if err := DecodeYAML(data, cfg); err != nil {
			// Field errors leave the rest of the file read: go on, so that
			// one round names every mistake. A syntax error stops here.
			if !errors.As(err, &errs) {
				return fmt.Errorf("config: %s: %w", path, err)
			}
		}
	}
	env := map[string]string{}
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	root := reflect.ValueOf(cfg).Elem()
	for _, f := range l.fields {
		if v, ok := env[l.EnvName(f.path)]; ok {
			if err := setValue(root.FieldByIndex(f.index), v); err != nil {
				errs = append(errs, FieldError{Path: f.path, Reason: fmt.Sprintf("env %s: %v", l.EnvName(f.path), err)})
			}
		}
	}
	for _, f := range l.fields {
		if v, ok := l.set[f.path]; ok {
			if err := setValue(root.FieldByIndex(f.index), v); err != nil {
				errs = append(errs, FieldError{Path: f.path, Reason: fmt.Sprintf("flag --%s: %v", f.path, err)})
			}
		}
	}
	return errs.Err()
}

// DecodeYAML decodes strictly: an unknown key is an error, so a typo in a
// field name never silently falls back to a default. Unknown keys and
// values of the wrong type come back together as Errors, each named by
// its dotted path; everything else in the file is decoded all the same.
func DecodeYAML(data []byte, cfg any) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
		if te, ok := asTypeError(err); ok {
			return yamlFieldErrors(data, te)
		}
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return nil
}

// Paths lists every dotted path the loader knows, sorted; the README's
// configuration reference is checked against it.
func (l *Loader) Paths() []string {
	out := make([]string, 0, len(l.fields))
	for _, f := range l.fields {
		out = append(out, f.path)
	}
	sort.Strings(out)
	return out
}

type rawFlag struct {
	path   string
	def    string
	set    map[string]string
	isBool bool
}

// IsBoolFlag lets `--broker.sync_always` stand alone, as with flag.Bool.
func (r *rawFlag) IsBoolFlag() bool { return r.isBool }

func (r *rawFlag) String() string {
	if r == nil || r.set == nil {
		return ""
	}
	if v, ok := r.set[r.path]; ok {
		return v
	}
	return r.def
}

func (r *rawFlag) Set(v string) error { r.set[r.path] = v; return nil }

var durationType = reflect.TypeOf(time.Duration(0))

func setValue(v reflect.Value, s string) error {
	if v.Type() == durationType {
		d, err := time.ParseDuration(s)
		if err != nil {
			return err
		}
		v.SetInt(int64(d))
		return nil
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(s)
	case reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return err
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int32, reflect.Int64:
		n, err := strconv.ParseInt(s, 10, v.Type().Bits())
		if err != nil {
			return err
		}
		v.SetInt(n)
	case reflect.Uint16, reflect.Uint32:
		n, err := strconv.ParseUint(s, 10, v.Type().Bits())
		if err != nil {
			return err
		}
		v.SetUint(n)
	case reflect.Float64:
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return err
		}
		v.SetFloat(f)
	case reflect.Slice:
		var parts []string
		for _, p := range strings.Split(s, ",") {
			if p = strings.TrimSpace(p); p != "" {
				parts = append(parts, p)
			}
		}
		v.Set(reflect.ValueOf(parts))
	default:
		return fmt.Errorf("unsupported kind %s", v.Kind())
	}
	return nil
}

func formatValue(v reflect.Value) string {
	if v.Type() == durationType {
		return time.Duration(v.Int()).String()
	}
	if v.Kind() == reflect.Slice {
		parts := make([]string, v.Len())
		for i := range parts {
			parts[i] = v.Index(i).String()
		}
		return strings.Join(parts, ",")
	}
	return fmt.Sprint(v.Interface())
}
