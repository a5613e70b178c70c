package learn

import (
	"fmt"

	"github.com/outpost-edge/outpost/models/onnx"
)

// Export writes a trained model as ONNX with the graph builders the rest
// of the system uses (Gemm layers; a Sigmoid output with one score, the
// positive class's probability, for two classes; Softmax otherwise), so
// the agent's engines, the validator and the quantizer take it as they
// take any package.
func Export(m Model) ([]byte, error) {
	switch t := m.(type) {
	case *Linear:
		w, b := t.Weights()
		return onnx.MLP([]onnx.Dense{dense32(w, b, t.d, t.k)}, onnx.MLPOptions{Output: outAct(t.k)})
	case *MLP:
		w1, b1, w2, b2 := t.Weights()
		return onnx.MLP([]onnx.Dense{dense32(w1, b1, t.d, t.h), dense32(w2, b2, t.h, t.k)},
			onnx.MLPOptions{Hidden: onnx.Relu, Output: outAct(t.k)})
	default:
		return nil, fmt.Errorf("learn: cannot export %T", m)
	}
}

func outAct(k int) onnx.Activation {
	if k == 1 {
		return onnx.Sigmoid
	}
	return onnx.Softmax
}

// dense32 turns row-major in×out weights into the builders' [out][in].
func dense32(w, b []float64, in, out int) onnx.Dense {
	d := onnx.Dense{W: make([][]float32, out), B: make([]float32, out)}
	for o := 0; o < out; o++ {
		d.W[o] = make([]float32, in)
		for i := 0; i < in; i++ {
			d.W[o][i] = float32(w[i*out+o])
		}
		d.B[o] = float32(b[o])
	}
	return d
}
