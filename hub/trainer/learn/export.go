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
	case *Autoencoder:
		return t.export()
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

// FromPackage warm-starts a learner from a production package: an
// autoencoder (its anomaly threshold from the manifest), or what FromONNX
// reads.
func FromPackage(threshold float64, model []byte, opt Optimizer) (Model, error) {
	enc, dec, hidden, err := onnx.AutoencoderLayers(model)
	if err != nil {
		return FromONNX(model, opt)
	}
	if len(enc) != 1 || len(dec) != 1 || hidden != onnx.Relu {
		return nil, fmt.Errorf("learn: autoencoder of %d+%d layers with %q: the trainer takes one ReLU hidden layer", len(enc), len(dec), hidden)
	}
	w1, b1 := flat64(enc[0])
	w2, b2 := flat64(dec[0])
	return NewAutoencoder(len(enc[0].W[0]), len(enc[0].W), w1, b1, w2, b2, threshold, opt, 0)
}

// FromONNX warm-starts a learner from a production model: one dense layer
// (Sigmoid: two classes; Softmax: more) is a Linear model, two with a
// ReLU between them an MLP. Other graphs cannot be trained here.
func FromONNX(model []byte, opt Optimizer) (Model, error) {
	layers, o, err := onnx.Layers(model)
	if err != nil {
		return nil, fmt.Errorf("learn: %w", err)
	}
	classes := func(out int) (int, error) {
		switch {
		case out == 1 && o.Output == onnx.Sigmoid:
			return 2, nil
		case out > 1 && o.Output == onnx.Softmax:
			return out, nil
		}
		return 0, fmt.Errorf("learn: %d outputs with %q: not a classifier this trainer takes", out, o.Output)
	}
	switch {
	case len(layers) == 1:
		d, k := len(layers[0].W[0]), len(layers[0].W)
		c, err := classes(k)
		if err != nil {
			return nil, err
		}
		w, b := flat64(layers[0])
		return NewLinear(d, c, w, b, opt)
	case len(layers) == 2 && o.Hidden == onnx.Relu:
		d, h, k := len(layers[0].W[0]), len(layers[0].W), len(layers[1].W)
		c, err := classes(k)
		if err != nil {
			return nil, err
		}
		w1, b1 := flat64(layers[0])
		w2, b2 := flat64(layers[1])
		return NewMLP(d, h, c, w1, b1, w2, b2, opt, 0)
	}
	return nil, fmt.Errorf("learn: %d layers with %q hidden activations: not a model this trainer takes", len(layers), o.Hidden)
}

// flat64 is dense32's inverse: [out][in] to row-major in×out.
func flat64(d onnx.Dense) (w, b []float64) {
	out, in := len(d.W), len(d.W[0])
	w = make([]float64, in*out)
	for o := 0; o < out; o++ {
		for i := 0; i < in; i++ {
			w[i*out+o] = float64(d.W[o][i])
		}
	}
	for _, v := range d.B {
		b = append(b, float64(v))
	}
	return w, b
}
