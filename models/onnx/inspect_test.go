package onnx

import (
	"errors"
	"testing"
)

func TestInspectMLP(t *testing.T) {
	d := func(in, out int) Dense {
		l := Dense{B: make([]float32, out)}
		for range out {
			l.W = append(l.W, make([]float32, in))
		}
		return l
	}
	model, err := MLP([]Dense{d(4, 8), d(8, 3)}, MLPOptions{Hidden: Relu, Output: Softmax, MatMul: true})
	if err != nil {
		t.Fatal(err)
	}
	info, err := Inspect(model)
	if err != nil {
		t.Fatal(err)
	}
	if len(info.Inputs) != 1 || info.Inputs[0].Name != "features" || info.Inputs[0].Type != "FLOAT" ||
		len(info.Inputs[0].Shape) != 2 || info.Inputs[0].Shape[0] != "N" || info.Inputs[0].Shape[1] != "4" {
		t.Errorf("inputs %+v", info.Inputs)
	}
	if len(info.Outputs) != 1 || info.Outputs[0].Name != "scores" || info.Outputs[0].Shape[1] != "3" {
		t.Errorf("outputs %+v", info.Outputs)
	}
	if want := int64(4*8 + 8 + 8*3 + 3); info.Parameters != want || info.ParamBytes != 4*want {
		t.Errorf("parameters %d (%d bytes), want %d", info.Parameters, info.ParamBytes, want)
	}
	if info.Ops["MatMul"] != 2 || info.Ops["Add"] != 2 || info.Ops["Relu"] != 1 || info.Ops["Softmax"] != 1 || info.Nodes != 6 {
		t.Errorf("ops %v, %d nodes", info.Ops, info.Nodes)
	}
	if info.Opsets[""] != Opset || info.IRVersion != IRVersion || info.Size != len(model) {
		t.Errorf("opsets %v ir %d size %d", info.Opsets, info.IRVersion, info.Size)
	}
}

func TestInspectRefusesCorruptAndTruncated(t *testing.T) {
	model, err := Logistic([][]float32{{1, 2, 3}}, []float32{0.5})
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{
		"empty":     nil,
		"truncated": model[:len(model)/2],
		"garbage":   []byte("this is not an onnx file at all"),
	} {
		if _, err := Inspect(data); !errors.Is(err, ErrModel) {
			t.Errorf("%s: err %v, want ErrModel", name, err)
		}
	}
}

// FuzzInspect: no input makes Inspect panic; what it accepts has inputs
// and outputs.
func FuzzInspect(f *testing.F) {
	model, _ := Logistic([][]float32{{1, 2}}, []float32{0})
	f.Add(model)
	f.Add(model[:len(model)-3])
	f.Add([]byte{0x08, 0x08, 0x12, 0x00})
	f.Fuzz(func(t *testing.T, data []byte) {
		info, err := Inspect(data)
		if err == nil && (len(info.Inputs) == 0 || len(info.Outputs) == 0) {
			t.Fatalf("accepted a model without inputs or outputs: %+v", info)
		}
	})
}
