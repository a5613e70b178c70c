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
	for _, v2 := range v2Examples() {
		v2.SHA256 = Digest([]byte("x"))
		raw, _ := json.Marshal(v2)
		f.Add(raw)
	}
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

// v2Examples are one valid manifest per input kind, and one with two
// window inputs.
func v2Examples() map[string]*Manifest {
	golden := func(n int) []Golden {
		return []Golden{{Input: make([]float32, n), Output: []float32{0.5}, Tolerance: 1e-5}}
	}
	base := func(ins []Input, width int) *Manifest {
		return &Manifest{Name: "m", Version: 1, Task: "anomaly", Inputs: ins, Golden: golden(width)}
	}
	seq := &SequenceSpec{Fields: []string{"ax", "ay", "az"}, Steps: 200, Layout: "NCT", Normalize: []Norm{{0, 1}, {0, 1}, {9.8, 1}}}
	spec := &SpectrumSpec{Fields: []string{"ax"}, Points: 256, Bands: 8, Log: true}
	return map[string]*Manifest{
		"aggregates": base([]Input{{Kind: Aggregates, Features: []Feature{{Field: "t", Agg: "mean", Std: 1}}}}, 1),
		"sequence":   base([]Input{{Name: "x", Kind: Sequence, Sequence: seq}}, 600),
		"spectrum":   base([]Input{{Kind: Spectrum, Spectrum: spec}}, 18),
		"image":      base([]Input{{Name: "frame", Kind: Image, Image: &ImageSpec{Width: 32, Height: 24, Channels: "RGB", Layout: "NHWC"}}}, 32*24*3),
		"two inputs": base([]Input{{Name: "wave", Kind: Sequence, Sequence: seq}, {Name: "stats", Kind: Aggregates, Features: []Feature{{Field: "t", Agg: "max"}}}}, 601),
	}
}

func TestV2InputKinds(t *testing.T) {
	for name, m := range v2Examples() {
		m.SHA256 = Digest([]byte("x"))
		raw, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Parse(raw)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got.RowWidth() != len(m.Golden[0].Input) {
			t.Fatalf("%s: row width %d, want %d", name, got.RowWidth(), len(m.Golden[0].Input))
		}
	}
	ex := v2Examples()
	if d := ex["sequence"].Inputs[0].Dims(); d[0] != 3 || d[1] != 200 {
		t.Fatalf("NCT sequence dims %v, want [3 200]", d)
	}
	if d := ex["image"].Inputs[0].Dims(); d[0] != 24 || d[1] != 32 || d[2] != 3 {
		t.Fatalf("NHWC image dims %v, want [24 32 3]", d)
	}
	if got := ex["two inputs"].RawFields(); strings.Join(got, ",") != "ax,ay,az" {
		t.Fatalf("raw fields %v", got)
	}
	if !ex["aggregates"].Aggregated() || ex["spectrum"].Aggregated() || !valid().Aggregated() {
		t.Fatal("Aggregated is wrong")
	}
}

// TestV2Refusals: every wrong v2 input is refused with its path.
func TestV2Refusals(t *testing.T) {
	for _, c := range []struct {
		name, want string
		edit       func(m *Manifest)
	}{
		{"unknown kind", "inputs[0]: kind \"audio\"", func(m *Manifest) { m.Inputs[0].Kind = "audio" }},
		{"kind without its section", "kind image needs an image section", func(m *Manifest) { m.Inputs[0].Kind = Image }},
		{"bad layout", "inputs[0]: sequence.layout \"TNC\"", func(m *Manifest) { m.Inputs[0].Sequence.Layout = "TNC" }},
		{"one step", "sequence.steps 1", func(m *Manifest) { m.Inputs[0].Sequence.Steps = 1 }},
		{"huge steps", "sequence.steps", func(m *Manifest) { m.Inputs[0].Sequence.Steps = 1 << 30 }},
		{"norms", "sequence.normalize: 3 entries, want 2", func(m *Manifest) {
			m.Inputs[0].Sequence.Fields = m.Inputs[0].Sequence.Fields[:2]
		}},
		{"repeated field", "sequence.fields[1]", func(m *Manifest) { m.Inputs[0].Sequence.Fields[1] = "ax" }},
		{"both v1 and v2", "both set", func(m *Manifest) { m.Features = []Feature{{Field: "t", Agg: "mean"}} }},
		{"unnamed second input", "inputs[1]: name the graph input", func(m *Manifest) { m.Inputs[1].Name = "" }},
		{"fed twice", "fed twice", func(m *Manifest) { m.Inputs[1].Name = "wave" }},
		{"image beside a window", "only input", func(m *Manifest) {
			m.Inputs[1] = Input{Name: "f", Kind: Image, Image: &ImageSpec{Width: 1, Height: 1, Channels: "RGB"}}
		}},
		{"golden width", "golden vector 0: 600 input values for a row of 601", func(m *Manifest) { m.Golden[0].Input = m.Golden[0].Input[:600] }},
	} {
		m := v2Examples()["two inputs"]
		m.SHA256 = Digest([]byte("x"))
		c.edit(m)
		err := m.Validate()
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want ErrInvalid with %q", c.name, err, c.want)
		}
	}
	for _, c := range []struct {
		name, want string
		im         ImageSpec
	}{
		{"uint8 with scale", "no scale or normalize", ImageSpec{Width: 2, Height: 2, Channels: "RGB", Type: "uint8", Scale: 1}},
		{"channels", "image.channels \"RGBA\"", ImageSpec{Width: 2, Height: 2, Channels: "RGBA"}},
		{"pixels", "pixels", ImageSpec{Width: 1 << 13, Height: 1 << 13, Channels: "RGB"}},
	} {
		m := v2Examples()["image"]
		m.SHA256 = Digest([]byte("x"))
		m.Inputs[0].Image = &c.im
		if err := m.Validate(); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}
	m := v2Examples()["spectrum"]
	m.SHA256 = Digest([]byte("x"))
	m.Inputs[0].Spectrum.Bands = 200
	if err := m.Validate(); err == nil || !strings.Contains(err.Error(), "spectrum.bands 200") {
		t.Errorf("too many bands: %v", err)
	}
}
