package manifest

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func valid() *Manifest {
	return &Manifest{Name: "m", Version: 1, Task: "anomaly",
		Features: []Feature{{Field: "t", Agg: "mean", Mean: 20, Std: 5}, {Field: "t", Agg: "max", Mean: 0, Std: 0}},
		Golden:   []Golden{{Input: []float32{0, 0}, Output: []float32{0.5}, Tolerance: 1e-6}}}
}

func TestWriteLoadAndChecksum(t *testing.T) {
	dir := t.TempDir()
	if err := Write(dir, valid(), []byte("onnx-bytes")); err != nil {
		t.Fatal(err)
	}
	m, model, err := Load(dir)
	if err != nil || string(model) != "onnx-bytes" || m.SHA256 != Digest([]byte("onnx-bytes")) {
		t.Fatalf("load = %+v, %q, %v", m, model, err)
	}
	os.WriteFile(filepath.Join(dir, ModelFile), []byte("other"), 0o644)
	if _, _, err := Load(dir); !errors.Is(err, ErrChecksum) {
		t.Fatalf("err = %v, want ErrChecksum", err)
	}
	os.WriteFile(filepath.Join(dir, ManifestFile), []byte("{"), 0o644)
	if _, _, err := Load(dir); !errors.Is(err, ErrInvalid) {
		t.Fatalf("err = %v, want ErrInvalid", err)
	}
}

func TestValidate(t *testing.T) {
	tests := []func(*Manifest){
		func(m *Manifest) { m.Name = "" },
		func(m *Manifest) { m.Version = 0 },
		func(m *Manifest) { m.Task = "magic" },
		func(m *Manifest) { m.Features = nil },
		func(m *Manifest) { m.Features[0].Std = -1 },
		func(m *Manifest) { m.Golden = nil },
		func(m *Manifest) { m.Golden[0].Input = []float32{1} },
		func(m *Manifest) { m.Outputs.Scores, m.Outputs.Label = "y", "y" },
		func(m *Manifest) { m.Outputs.Label, m.Outputs.Embedding = "e", "e" },
	}
	for i, mutate := range tests {
		m := valid()
		m.SHA256 = Digest(nil)
		mutate(m)
		if err := m.Validate(); !errors.Is(err, ErrInvalid) {
			t.Errorf("case %d: err = %v", i, err)
		}
	}
}

func TestVector(t *testing.T) {
	m := valid()
	vals := map[string]float64{"t.mean": 30, "t.max": 7}
	got, err := m.Vector(func(f, a string) (float64, bool) { v, ok := vals[f+"."+a]; return v, ok }, nil)
	// (30-20)/5 = 2; std 0 means no scaling: 7.
	if err != nil || len(got) != 2 || got[0] != 2 || got[1] != 7 {
		t.Fatalf("vector = %v, %v", got, err)
	}
	delete(vals, "t.max")
	if _, err := m.Vector(func(f, a string) (float64, bool) { v, ok := vals[f+"."+a]; return v, ok }, nil); !errors.Is(err, ErrFeature) {
		t.Fatalf("missing feature: %v", err)
	}
}

func TestParseRefusesUnknownAndTrailing(t *testing.T) {
	m := valid()
	m.SHA256 = Digest([]byte("x"))
	good, _ := json.Marshal(m)
	if _, err := Parse(good); err != nil {
		t.Fatal(err)
	}
	for name, raw := range map[string]string{
		"unknown key": strings.Replace(string(good), `"name"`, `"nmae":"x","name"`, 1),
		"trailing":    string(good) + `{}`,
		"truncated":   string(good[:len(good)/2]),
	} {
		if _, err := Parse([]byte(raw)); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: err %v, want ErrInvalid", name, err)
		}
	}
}

// FuzzParse: no input panics Parse, and what it accepts is valid.
func FuzzParse(f *testing.F) {
	m := valid()
	m.SHA256 = Digest([]byte("x"))
	good, _ := json.Marshal(m)
	f.Add(good)
	f.Add([]byte(`{"name":"m","version":1}`))
	m.Outputs = Outputs{Scores: "probabilities", Label: "label", Embedding: "hidden", Labels: []string{"a", "b"}}
	roles, _ := json.Marshal(m)
	f.Add(roles)
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		m, err := Parse(raw)
		if err == nil {
			if verr := m.Validate(); verr != nil {
				t.Fatalf("accepted an invalid manifest: %v", verr)
			}
		}
	})
}

// TestGoldenRunsAsBatchAndRowByRow: a graph that works only one row at a
// time (no broadcasting over the batch), or whose rows change each other's
// answers, fails the golden check; one that is right both ways passes.
func TestGoldenRunsAsBatchAndRowByRow(t *testing.T) {
	m := valid()
	m.Golden = []Golden{
		{Input: []float32{1, 2}, Output: []float32{3}, Tolerance: 1e-6},
		{Input: []float32{4, 5}, Output: []float32{9}, Tolerance: 1e-6},
		{Input: []float32{-1, 1}, Output: []float32{0}, Tolerance: 1e-6},
	}
	sum := func(x []float32, features int) []float32 {
		var out []float32
		for r := 0; r+features <= len(x); r += features {
			out = append(out, x[r]+x[r+1])
		}
		return out
	}
	tests := []struct {
		name string
		run  func(x []float32, features int) ([]float32, error)
		ok   bool
	}{
		{"right both ways", func(x []float32, f int) ([]float32, error) { return sum(x, f), nil }, true},
		{"one row at a time only", func(x []float32, f int) ([]float32, error) {
			if len(x) > f {
				return nil, errors.New("Sub of [3,2] and [1,2]")
			}
			return sum(x, f), nil
		}, false},
		{"rows leak into each other", func(x []float32, f int) ([]float32, error) {
			out := sum(x, f)
			for i := range out {
				out[i] += float32(len(out) - 1) // batch statistics instead of per-row values
			}
			return out, nil
		}, false},
		{"batch only", func(x []float32, f int) ([]float32, error) {
			if len(x) == f {
				return nil, errors.New("needs a batch")
			}
			return sum(x, f), nil
		}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := m.CheckGolden(tc.run)
			if tc.ok && err != nil {
				t.Fatal(err)
			}
			if !tc.ok && !errors.Is(err, ErrGolden) {
				t.Fatalf("err = %v, want ErrGolden", err)
			}
		})
	}
}
