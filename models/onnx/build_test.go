package onnx

import (
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/outpost-edge/outpost/models/onnx/onnxpb"
)

func TestLogisticGraph(t *testing.T) {
	data, err := Logistic([][]float32{{1, 2, 3}}, []float32{0.5})
	if err != nil {
		t.Fatal(err)
	}
	var m onnxpb.ModelProto
	if err := proto.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	if m.GetIrVersion() != IRVersion || m.GetOpsetImport()[0].GetVersion() != Opset {
		t.Fatalf("ir %d opset %d", m.GetIrVersion(), m.GetOpsetImport()[0].GetVersion())
	}
	g := m.GetGraph()
	var ops []string
	for _, n := range g.GetNode() {
		ops = append(ops, n.GetOpType())
	}
	if len(ops) != 2 || ops[0] != "Gemm" || ops[1] != "Sigmoid" {
		t.Fatalf("ops = %v", ops)
	}
	w := g.GetInitializer()[0]
	if got := w.GetDims(); len(got) != 2 || got[0] != 1 || got[1] != 3 {
		t.Fatalf("W dims = %v", got)
	}
	in := g.GetInput()[0].GetType().GetTensorType().GetShape().GetDim()
	if in[0].GetDimParam() != "N" || in[1].GetDimValue() != 3 {
		t.Fatalf("input shape = %v", in)
	}
}

func TestBuilderErrors(t *testing.T) {
	tests := []struct {
		name  string
		build func() ([]byte, error)
		want  error
	}{
		{"ragged weights", func() ([]byte, error) { return Logistic([][]float32{{1, 2}, {3}}, []float32{0, 0}) }, ErrShape},
		{"bias count", func() ([]byte, error) { return Logistic([][]float32{{1, 2}}, []float32{0, 0}) }, ErrShape},
		{"initializer size", func() ([]byte, error) {
			return NewGraph("g").Initializer("w", []float32{1, 2, 3}, 2, 2).Model("t")
		}, ErrShape},
		{"attribute type", func() ([]byte, error) {
			return NewGraph("g").Node("Relu", []string{"a"}, []string{"b"}, Attr{"x", 3.5}).Model("t")
		}, ErrUnsupported},
	}
	for _, tt := range tests {
		if _, err := tt.build(); !errors.Is(err, tt.want) {
			t.Errorf("%s: err = %v, want %v", tt.name, err, tt.want)
		}
	}
}
