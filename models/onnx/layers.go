package onnx

import (
	"encoding/binary"
	"fmt"
	"math"

	"google.golang.org/protobuf/proto"

	"github.com/outpost-edge/outpost/models/onnx/onnxpb"
)

// Layers reads back a feed-forward stack of dense layers: Gemm, or MatMul
// then Add, each optionally followed by Relu, Tanh, Sigmoid or Softmax,
// the hidden layers sharing one activation. That is what MLP and Logistic
// write and what exporters write (skl2onnx's MLP adds a Cast to float and
// an Identity, which change nothing); the hub's trainer warm-starts from
// a production model this way. Only the nodes the scores output
// (ScoresOutput) depends on count, so an exporter's label branch is
// ignored. Other graphs are ErrUnsupported.
func Layers(model []byte) ([]Dense, MLPOptions, error) {
	l, o, ae, err := layers(model)
	if err == nil && ae {
		err = fmt.Errorf("%w: an autoencoder (use AutoencoderLayers)", ErrUnsupported)
	}
	return l, o, err
}

// AutoencoderLayers reads back what Autoencoder writes: the dense stack,
// split into encoder and decoder halves, and the hidden activation.
func AutoencoderLayers(model []byte) (encoder, decoder []Dense, hidden Activation, err error) {
	l, o, ae, err := layers(model)
	if err != nil {
		return nil, nil, "", err
	}
	if !ae || len(l) < 2 || o.Output != Identity {
		return nil, nil, "", fmt.Errorf("%w: not an autoencoder", ErrUnsupported)
	}
	return l[:len(l)/2], l[len(l)/2:], o.Hidden, nil
}

// layers reads the dense stack; ae reports the reconstruction-error tail
// (Sub, Mul, ReduceMean) that Autoencoder adds.
func layers(model []byte) ([]Dense, MLPOptions, bool, error) {
	ae := false
	var m onnxpb.ModelProto
	if err := proto.Unmarshal(model, &m); err != nil {
		return nil, MLPOptions{}, false, fmt.Errorf("%w: %w", ErrModel, err)
	}
	g := m.GetGraph()
	info, err := Inspect(model)
	if err != nil {
		return nil, MLPOptions{}, false, err
	}
	scores, err := ScoresOutput(info.Outputs, "")
	if err != nil {
		return nil, MLPOptions{}, false, fmt.Errorf("%w: %w", ErrUnsupported, err)
	}
	inits := map[string]*onnxpb.TensorProto{}
	for _, t := range g.GetInitializer() {
		inits[t.GetName()] = t
	}
	var layers []Dense
	var acts []Activation
	var o MLPOptions
	pendingMatMul := -1 // layer index waiting for its Add
	for _, n := range Feeding(g.GetNode(), scores.Name) {
		in := n.GetInput()
		switch n.GetOpType() {
		case "Identity":
		case "Cast":
			for _, a := range n.GetAttribute() {
				if a.GetName() == "to" && a.GetI() != int64(onnxpb.TensorProto_FLOAT) {
					return nil, o, false, fmt.Errorf("%w: Cast to %s", ErrUnsupported, onnxpb.TensorProto_DataType(a.GetI()))
				}
			}
		case "Gemm":
			if len(in) != 3 {
				return nil, o, false, fmt.Errorf("%w: Gemm without a bias", ErrUnsupported)
			}
			transB := false
			for _, a := range n.GetAttribute() {
				switch a.GetName() {
				case "transB":
					transB = a.GetI() == 1
				case "transA":
					if a.GetI() != 0 {
						return nil, o, false, fmt.Errorf("%w: Gemm with transA", ErrUnsupported)
					}
				case "alpha", "beta":
					if a.GetF() != 1 {
						return nil, o, false, fmt.Errorf("%w: Gemm with %s %g", ErrUnsupported, a.GetName(), a.GetF())
					}
				}
			}
			d, err := dense(inits, in[1], in[2], transB)
			if err != nil {
				return nil, o, false, err
			}
			layers, acts = append(layers, d), append(acts, Identity)
		case "MatMul":
			d, err := dense(inits, in[1], "", false)
			if err != nil {
				return nil, o, false, err
			}
			layers, acts = append(layers, d), append(acts, Identity)
			pendingMatMul = len(layers) - 1
		case "Add":
			if pendingMatMul < 0 {
				return nil, o, false, fmt.Errorf("%w: Add without a MatMul before it", ErrUnsupported)
			}
			b, _, err := floats(inits, in[1])
			if err != nil || len(b) != len(layers[pendingMatMul].B) {
				return nil, o, false, fmt.Errorf("%w: bias %s", ErrUnsupported, in[1])
			}
			layers[pendingMatMul].B = b
			o.MatMul, pendingMatMul = true, -1
		case string(Relu), string(Tanh), string(Sigmoid), string(Softmax):
			if len(layers) == 0 || acts[len(acts)-1] != Identity {
				return nil, o, false, fmt.Errorf("%w: %s not after a dense layer", ErrUnsupported, n.GetOpType())
			}
			acts[len(acts)-1] = Activation(n.GetOpType())
		case "Sub", "Mul", "ReduceMean":
			ae = true // the reconstruction error Autoencoder appends
		default:
			return nil, o, false, fmt.Errorf("%w: op %s", ErrUnsupported, n.GetOpType())
		}
	}
	if len(layers) == 0 {
		return nil, o, false, fmt.Errorf("%w: no dense layers", ErrUnsupported)
	}
	o.Output = acts[len(acts)-1]
	if len(acts) > 1 {
		o.Hidden = acts[0]
		for _, a := range acts[1 : len(acts)-1] {
			if a != o.Hidden {
				return nil, o, false, fmt.Errorf("%w: hidden layers with different activations", ErrUnsupported)
			}
		}
	}
	return layers, o, ae, nil
}

// Feeding keeps the nodes the outputs depend on, in graph order: what
// an engine serving only those outputs runs.
func Feeding(nodes []*onnxpb.NodeProto, outputs ...string) []*onnxpb.NodeProto {
	want := map[string]bool{}
	for _, o := range outputs {
		want[o] = true
	}
	keep := make([]bool, len(nodes))
	for i := len(nodes) - 1; i >= 0; i-- {
		for _, o := range nodes[i].GetOutput() {
			keep[i] = keep[i] || want[o]
		}
		if keep[i] {
			for _, in := range nodes[i].GetInput() {
				want[in] = true
			}
		}
	}
	var out []*onnxpb.NodeProto
	for i, n := range nodes {
		if keep[i] {
			out = append(out, n)
		}
	}
	return out
}

// dense reads weights (and a bias, if named) into [out][in] form; the
// weights are [out, in] when transposed, [in, out] otherwise.
func dense(inits map[string]*onnxpb.TensorProto, w, b string, transposed bool) (Dense, error) {
	data, dims, err := floats(inits, w)
	if err != nil || len(dims) != 2 {
		return Dense{}, fmt.Errorf("%w: weights %s", ErrUnsupported, w)
	}
	out, in := int(dims[1]), int(dims[0])
	if transposed {
		out, in = in, out
	}
	d := Dense{W: make([][]float32, out), B: make([]float32, out)}
	for o := 0; o < out; o++ {
		d.W[o] = make([]float32, in)
		for i := 0; i < in; i++ {
			if transposed {
				d.W[o][i] = data[o*in+i]
			} else {
				d.W[o][i] = data[i*out+o]
			}
		}
	}
	if b != "" {
		bias, _, err := floats(inits, b)
		if err != nil || len(bias) != out {
			return Dense{}, fmt.Errorf("%w: bias %s", ErrUnsupported, b)
		}
		d.B = bias
	}
	return d, nil
}

func floats(inits map[string]*onnxpb.TensorProto, name string) ([]float32, []int64, error) {
	t, ok := inits[name]
	if !ok || t.GetDataType() != int32(onnxpb.TensorProto_FLOAT) {
		return nil, nil, fmt.Errorf("%w: %s is not a float initializer", ErrUnsupported, name)
	}
	if raw := t.GetRawData(); len(raw) > 0 {
		out := make([]float32, len(raw)/4)
		for i := range out {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
		}
		return out, t.GetDims(), nil
	}
	return t.GetFloatData(), t.GetDims(), nil
}
