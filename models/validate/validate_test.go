package validate_test

import (
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/outpost-edge/outpost/models/goengine"
	"github.com/outpost-edge/outpost/models/manifest"
	"github.com/outpost-edge/outpost/models/onnx"
	"github.com/outpost-edge/outpost/models/ort"
	"github.com/outpost-edge/outpost/models/validate"
	"github.com/outpost-edge/outpost/test/testenv"
)

func openORT(t *testing.T) func([]byte) (validate.Runner, error) {
	t.Helper()
	if err := ort.Init(testenv.ORTLibrary(t)); err != nil {
		t.Fatal(err)
	}
	return func(m []byte) (validate.Runner, error) { return ort.NewSession(m) }
}

// pkg writes a 3-class MLP over 4 features with golden vectors computed by
// the pure-Go engine, then lets mutate spoil it.
func pkg(t *testing.T, mutate func(m *manifest.Manifest, model *[]byte)) string {
	t.Helper()
	rng := rand.New(rand.NewPCG(1, 2))
	layer := func(in, out int) onnx.Dense {
		d := onnx.Dense{B: make([]float32, out)}
		for range out {
			row := make([]float32, in)
			for i := range row {
				row[i] = rng.Float32() - 0.5
			}
			d.W = append(d.W, row)
		}
		return d
	}
	model, err := onnx.MLP([]onnx.Dense{layer(4, 8), layer(8, 3)}, onnx.MLPOptions{Hidden: onnx.Relu, Output: onnx.Softmax})
	if err != nil {
		t.Fatal(err)
	}
	eng, err := goengine.Load(model)
	if err != nil {
		t.Fatal(err)
	}
	m := &manifest.Manifest{Name: "pump-health", Version: 3, Task: "classification",
		Outputs: manifest.Outputs{Labels: []string{"ok", "worn", "broken"}}}
	for _, f := range []string{"rms", "max", "std", "slope"} {
		m.Features = append(m.Features, manifest.Feature{Field: "vib", Agg: f, Std: 1})
	}
	for i := 0; i < 3; i++ {
		in := []float32{float32(i), 0.5, -0.25, 1}
		out, err := eng.Run(in, 4)
		if err != nil {
			t.Fatal(err)
		}
		m.Golden = append(m.Golden, manifest.Golden{Input: in, Output: out, Tolerance: 1e-5})
	}
	dir := t.TempDir()
	if mutate != nil {
		mutate(m, &model)
	}
	if err := manifest.Write(dir, m, model); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestValidPackage(t *testing.T) {
	rep, err := validate.Package(pkg(t, nil), openORT(t))
	if err != nil {
		t.Fatal(err)
	}
	if rep.Model.Parameters != 4*8+8+8*3+3 || rep.MaxAbsError > 1e-5 {
		t.Errorf("report %+v", rep)
	}
}

func TestPackagesThatDoNotFitAreRefused(t *testing.T) {
	open := openORT(t)
	cases := map[string]struct {
		mutate func(m *manifest.Manifest, model *[]byte)
		want   error
	}{
		"feature count": {func(m *manifest.Manifest, _ *[]byte) {
			m.Features = m.Features[:3]
			for i := range m.Golden {
				m.Golden[i].Input = m.Golden[i].Input[:3]
			}
		}, validate.ErrMismatch},
		"labels":       {func(m *manifest.Manifest, _ *[]byte) { m.Outputs.Labels = []string{"ok", "bad"} }, validate.ErrMismatch},
		"golden width": {func(m *manifest.Manifest, _ *[]byte) { m.Golden[1].Output = m.Golden[1].Output[:2] }, validate.ErrMismatch},
		"golden value": {func(m *manifest.Manifest, _ *[]byte) { m.Golden[2].Output[0] += 0.01 }, manifest.ErrGolden},
		"corrupt onnx": {func(_ *manifest.Manifest, model *[]byte) { *model = []byte("definitely not protobuf") }, onnx.ErrModel},
		"truncated onnx": {func(_ *manifest.Manifest, model *[]byte) {
			*model = (*model)[:len(*model)/3]
		}, onnx.ErrModel},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := validate.Package(pkg(t, c.mutate), open)
			if !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
			t.Log(err)
		})
	}
}

func TestTamperedModelFailsItsChecksum(t *testing.T) {
	dir := pkg(t, nil)
	model, _ := os.ReadFile(filepath.Join(dir, manifest.ModelFile))
	model[len(model)-1] ^= 1
	os.WriteFile(filepath.Join(dir, manifest.ModelFile), model, 0o644)
	if _, err := validate.Package(dir, openORT(t)); !errors.Is(err, manifest.ErrChecksum) {
		t.Fatalf("err = %v, want ErrChecksum", err)
	}
}
