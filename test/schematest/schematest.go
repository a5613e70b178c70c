// Package schematest compiles the published JSON Schemas of the Kafka
// records (hub/bridge/schemas) and validates records against them, so
// tests hold what real agents and hubs write to the schemas cloud teams
// are given.
package schematest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"sync"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/outpost-edge/outpost/hub/bridge/schemas"
)

// Streams are the device streams that have a data schema,
// data/{stream}.schema.json.
var Streams = []string{"windows", "inferences", "telemetry", "events", "late", "dead", "labels", "drift"}

// Set is every published schema, compiled.
type Set struct {
	// Record is record.schema.json: the envelope and, by stream, its data.
	Record *jsonschema.Schema
	// Envelope is record.schema.json without its per-stream data rules:
	// for records whose data is not an agent's (synthetic test devices).
	Envelope *jsonschema.Schema
	// DeadLetter is deadletter.schema.json, Label label.schema.json.
	DeadLetter, Label *jsonschema.Schema
	// Data holds data/{stream}.schema.json by stream.
	Data map[string]*jsonschema.Schema
	// Files maps each schema file to its $id.
	Files map[string]string
}

// Compile compiles every schema in fsys (schemas.FS when nil), each
// registered under its $id so that their $refs resolve.
func Compile(fsys fs.FS) (*Set, error) {
	if fsys == nil {
		fsys = schemas.FS
	}
	files, err := fs.Glob(fsys, "*.schema.json")
	if err != nil {
		return nil, fmt.Errorf("schematest: %w", err)
	}
	data, err := fs.Glob(fsys, "data/*.schema.json")
	if err != nil {
		return nil, fmt.Errorf("schematest: %w", err)
	}
	files = append(files, data...)
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	c.AssertContent()
	s := &Set{Data: map[string]*jsonschema.Schema{}, Files: map[string]string{}}
	var envelope any
	for _, name := range files {
		raw, err := fs.ReadFile(fsys, name)
		if err != nil {
			return nil, fmt.Errorf("schematest: %w", err)
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
		if err != nil {
			return nil, fmt.Errorf("schematest: %s: %w", name, err)
		}
		m, _ := doc.(map[string]any)
		id, _ := m["$id"].(string)
		if id == "" {
			return nil, fmt.Errorf("schematest: %s has no $id", name)
		}
		if err := c.AddResource(id, doc); err != nil {
			return nil, fmt.Errorf("schematest: %s: %w", name, err)
		}
		s.Files[name] = id
		if name == "record.schema.json" {
			// A copy without the data rules, under its own id.
			env := map[string]any{}
			for k, v := range m {
				env[k] = v
			}
			delete(env, "allOf")
			env["$id"] = strings.TrimSuffix(id, ".json") + ".envelope.json"
			envelope = env
		}
	}
	if envelope == nil {
		return nil, errors.New("schematest: no record.schema.json")
	}
	envID := envelope.(map[string]any)["$id"].(string)
	if err := c.AddResource(envID, envelope); err != nil {
		return nil, fmt.Errorf("schematest: envelope: %w", err)
	}
	compile := func(name, id string) (*jsonschema.Schema, error) {
		sch, err := c.Compile(id)
		if err != nil {
			return nil, fmt.Errorf("schematest: compile %s: %w", name, err)
		}
		return sch, nil
	}
	for name, id := range s.Files {
		sch, err := compile(name, id)
		if err != nil {
			return nil, err
		}
		switch stream, ok := strings.CutPrefix(strings.TrimSuffix(name, ".schema.json"), "data/"); {
		case ok:
			s.Data[stream] = sch
		case name == "record.schema.json":
			s.Record = sch
		case name == "deadletter.schema.json":
			s.DeadLetter = sch
		case name == "label.schema.json":
			s.Label = sch
		}
	}
	if s.Envelope, err = compile("envelope", envID); err != nil {
		return nil, err
	}
	for _, st := range Streams {
		if s.Data[st] == nil {
			return nil, fmt.Errorf("schematest: no data/%s.schema.json", st)
		}
	}
	if s.DeadLetter == nil || s.Label == nil {
		return nil, errors.New("schematest: deadletter.schema.json or label.schema.json missing")
	}
	return s, nil
}

// Validate checks one JSON value against sch; the error names the path
// of every violation.
func Validate(sch *jsonschema.Schema, value []byte) error {
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(value))
	if err != nil {
		return fmt.Errorf("not JSON: %w", err)
	}
	if err := sch.Validate(v); err != nil {
		return fmt.Errorf("violates %s: %w", sch.Location, err)
	}
	return nil
}

// CheckRecord validates a device record's value (as the bridge writes it
// in JSON) against record.schema.json, and its data again against its
// stream's data schema on its own, so that a failure names the stream's
// schema as well.
func (s *Set) CheckRecord(value []byte) error {
	if err := Validate(s.Record, value); err != nil {
		return err
	}
	var rec struct {
		Stream string          `json:"stream"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(value, &rec); err != nil {
		return fmt.Errorf("record: %w", err)
	}
	sch := s.Data[rec.Stream]
	if sch == nil {
		return fmt.Errorf("record of stream %q: no data schema", rec.Stream)
	}
	if err := Validate(sch, rec.Data); err != nil {
		return fmt.Errorf("data of stream %s: %w", rec.Stream, err)
	}
	return nil
}

var (
	once    sync.Once
	shared  *Set
	loadErr error
)

// Shared is the published schemas, compiled once per test binary.
func Shared(t testing.TB) *Set {
	t.Helper()
	once.Do(func() { shared, loadErr = Compile(nil) })
	if loadErr != nil {
		t.Fatal(loadErr)
	}
	return shared
}

// maxReported is how many violations one test reports in full; the rest
// are counted, so a schema broken for every record stays readable.
const maxReported = 5

var (
	violMu     sync.Mutex
	violations = map[testing.TB]int{}
)

// Check fails t (without stopping it) when value, a record read from
// topic, violates record.schema.json or its stream's data schema. The
// first violations of a test are reported with their paths and the
// record; the test's total is reported when it ends.
func Check(t testing.TB, topic string, value []byte) {
	t.Helper()
	err := Shared(t).CheckRecord(value)
	if err == nil {
		return
	}
	violMu.Lock()
	violations[t]++
	n := violations[t]
	violMu.Unlock()
	if n == 1 {
		t.Cleanup(func() {
			violMu.Lock()
			total := violations[t]
			delete(violations, t)
			violMu.Unlock()
			if total > maxReported {
				t.Errorf("%d records violated the published schemas (the first %d shown)", total, maxReported)
			}
		})
	}
	if n <= maxReported {
		t.Errorf("record in %s violates the published schema: %v\n%s", topic, err, value)
	} else {
		t.Fail()
	}
}
