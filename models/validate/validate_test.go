package validate_test

import (
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/outpost-edge/outpost/models/goengine"
	"github.com/outpost-edge/outpost/models/manifest"
	"github.com/outpost-edge/outpost/models/onnx"
	"github.com/outpost-edge/outpost/models/onnx/onnxpb"
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

// withOutputs rewrites a package's model: an int64 label output (ArgMax of
// the scores) before the scores, as skl2onnx writes classifiers, plus
// whatever extra declares.
func withOutputs(extra ...*onnxpb.ValueInfoProto) func(*manifest.Manifest, *[]byte) {
	return func(_ *manifest.Manifest, model *[]byte) {
		var m onnxpb.ModelProto
		if err := proto.Unmarshal(*model, &m); err != nil {
			panic(err)
		}
		g := m.Graph
		g.Node = append(g.Node, &onnxpb.NodeProto{OpType: proto.String("ArgMax"), Input: []string{"scores"}, Output: []string{"label"},
			Attribute: []*onnxpb.AttributeProto{{Name: proto.String("axis"), Type: onnxpb.AttributeProto_INT.Enum(), I: proto.Int64(1)},
				{Name: proto.String("keepdims"), Type: onnxpb.AttributeProto_INT.Enum(), I: proto.Int64(0)}}})
		label := &onnxpb.ValueInfoProto{Name: proto.String("label"), Type: &onnxpb.TypeProto{Value: &onnxpb.TypeProto_TensorType{
			TensorType: &onnxpb.TypeProto_Tensor{ElemType: proto.Int32(int32(onnxpb.TensorProto_INT64)),
				Shape: &onnxpb.TensorShapeProto{Dim: []*onnxpb.TensorShapeProto_Dimension{{Value: &onnxpb.TensorShapeProto_Dimension_DimParam{DimParam: "N"}}}}}}}}
		g.Output = append(append([]*onnxpb.ValueInfoProto{label}, g.Output...), extra...)
		b, err := proto.Marshal(&m)
		if err != nil {
			panic(err)
		}
		*model = b
	}
}

// TestOutputsByRole: an exporter's classifier (label, then probabilities)
// validates unmodified, by default or by name; a ZipMap output is refused
// with how to export without it; wrong roles are refused.
func TestOutputsByRole(t *testing.T) {
	open := openORT(t)
	zipmap := &onnxpb.ValueInfoProto{Name: proto.String("output_probability"), Type: &onnxpb.TypeProto{Value: &onnxpb.TypeProto_SequenceType{
		SequenceType: &onnxpb.TypeProto_Sequence{ElemType: &onnxpb.TypeProto{Value: &onnxpb.TypeProto_MapType{MapType: &onnxpb.TypeProto_Map{
			KeyType: proto.Int32(int32(onnxpb.TensorProto_INT64)), ValueType: &onnxpb.TypeProto{Value: &onnxpb.TypeProto_TensorType{
				TensorType: &onnxpb.TypeProto_Tensor{ElemType: proto.Int32(int32(onnxpb.TensorProto_FLOAT))}}}}}}}}}}
	roles := func(scores, label, embedding string) func(*manifest.Manifest, *[]byte) {
		return func(m *manifest.Manifest, model *[]byte) {
			withOutputs()(m, model)
			m.Outputs.Scores, m.Outputs.Label, m.Outputs.Embedding = scores, label, embedding
		}
	}
	cases := []struct {
		name   string
		mutate func(*manifest.Manifest, *[]byte)
		want   error
		says   string
	}{
		{"label then scores, no names", withOutputs(), nil, ""},
		{"named roles", roles("scores", "label", ""), nil, ""},
		{"zipmap", withOutputs(zipmap), validate.ErrMismatch, "zipmap"},
		{"scores names no output", roles("probabilities", "", ""), validate.ErrMismatch, "probabilities"},
		{"scores names the label", roles("label", "", ""), validate.ErrMismatch, "INT64"},
		{"label names the scores", roles("", "scores", ""), validate.ErrMismatch, "FLOAT"},
		{"embedding names the label", roles("scores", "", "label"), validate.ErrMismatch, "embedding"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := validate.Package(pkg(t, c.mutate), open)
			if !errors.Is(err, c.want) || (c.want == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
			if err != nil && !strings.Contains(strings.ToLower(err.Error()), strings.ToLower(c.says)) {
				t.Fatalf("err = %v, want it to say %q", err, c.says)
			}
		})
	}
	// Two float outputs need a name; with one the package validates on an
	// engine that selects it.
	second := &onnxpb.ValueInfoProto{Name: proto.String("hidden")}
	twoFloats := func(m *manifest.Manifest, model *[]byte) {
		var mp onnxpb.ModelProto
		proto.Unmarshal(*model, &mp)
		second.Type = mp.Graph.Output[0].Type
		mp.Graph.Output = append(mp.Graph.Output, second)
		mp.Graph.Node = append(mp.Graph.Node, &onnxpb.NodeProto{OpType: proto.String("Identity"), Input: []string{"scores"}, Output: []string{"hidden"}})
		*model, _ = proto.Marshal(&mp)
	}
	if _, err := validate.Package(pkg(t, twoFloats), open); !errors.Is(err, validate.ErrMismatch) {
		t.Fatalf("two float outputs, no name: %v", err)
	}
	named := pkg(t, func(m *manifest.Manifest, model *[]byte) { twoFloats(m, model); m.Outputs.Scores = "scores" })
	if _, err := validate.Package(named, open); !errors.Is(err, validate.ErrMismatch) {
		t.Fatalf("named, on an engine that cannot select: %v", err)
	}
	for name, eng := range map[string]func([]byte, string) (validate.Runner, error){
		"onnxruntime": func(b []byte, s string) (validate.Runner, error) {
			return ort.NewSessionWith(b, ort.Options{Output: s})
		},
		"go": func(b []byte, s string) (validate.Runner, error) {
			return goengine.LoadWith(b, goengine.Options{Output: s})
		},
	} {
		if _, err := validate.PackageFor(named, eng); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
}
