package onnx

import (
	"fmt"
	"strconv"
)

// Dense is one fully connected layer, y = x·Wᵀ + B, with W as [out][in].
type Dense struct {
	W [][]float32
	B []float32
}

func (d Dense) in() int  { return len(d.W[0]) }
func (d Dense) out() int { return len(d.W) }

// Activation names the ONNX op applied after a layer; "" is none.
type Activation string

// Activations the builders and both engines support.
const (
	Identity Activation = ""
	Relu     Activation = "Relu"
	Tanh     Activation = "Tanh"
	Sigmoid  Activation = "Sigmoid"
	Softmax  Activation = "Softmax"
)

// MLPOptions shape an MLP graph.
type MLPOptions struct {
	Hidden Activation // after every layer but the last
	Output Activation // after the last layer
	// MatMul builds MatMul plus Add instead of Gemm (the weights are
	// stored transposed, [in][out]): the form many exporters write.
	MatMul bool
}

// MLP builds a multilayer perceptron over x of shape [N, features]; the
// output "scores" is [N, out of the last layer]. One layer with a Sigmoid
// output is logistic regression; with Softmax, softmax regression.
func MLP(layers []Dense, o MLPOptions) ([]byte, error) {
	g := NewGraph("mlp")
	if err := stack(g, "features", "scores", layers, o); err != nil {
		return nil, err
	}
	return g.Output("scores", "N", layers[len(layers)-1].out()).Model("outpost")
}

// stack adds input x and the layers, naming the last value out.
func stack(g *Graph, x, out string, layers []Dense, o MLPOptions) error {
	if len(layers) == 0 {
		return fmt.Errorf("%w: no layers", ErrShape)
	}
	for i, l := range layers {
		if err := checkDense(l, i); err != nil {
			return err
		}
		if i > 0 && l.in() != layers[i-1].out() {
			return fmt.Errorf("%w: layer %d takes %d inputs, layer %d gives %d", ErrShape, i, l.in(), i-1, layers[i-1].out())
		}
	}
	g.Input(x, "N", layers[0].in())
	cur := x
	for i, l := range layers {
		id := strconv.Itoa(i)
		w, b, y := "W"+id, "B"+id, "h"+id
		last := i == len(layers)-1
		if o.MatMul {
			g.Initializer(w, transpose(l.W), int64(l.in()), int64(l.out())).
				Initializer(b, l.B, int64(l.out())).
				Node("MatMul", []string{cur, w}, []string{y + "_mm"}).
				Node("Add", []string{y + "_mm", b}, []string{y})
		} else {
			g.Initializer(w, flatten(l.W), int64(l.out()), int64(l.in())).
				Initializer(b, l.B, int64(l.out())).
				Node("Gemm", []string{cur, w, b}, []string{y}, Attr{"transB", int64(1)})
		}
		act := o.Hidden
		if last {
			act = o.Output
		}
		if act != Identity {
			g.Node(string(act), []string{y}, []string{y + "_act"})
			y += "_act"
		}
		cur = y
	}
	g.rename(cur, out)
	return nil
}

// Autoencoder builds a dense autoencoder whose output "scores" [N, 1] is
// the anomaly score: the mean squared reconstruction error of each row.
// The last decoder layer must give back as many values as the input has.
func Autoencoder(encoder, decoder []Dense, hidden Activation) ([]byte, error) {
	if len(encoder) == 0 || len(decoder) == 0 {
		return nil, fmt.Errorf("%w: an autoencoder needs encoder and decoder layers", ErrShape)
	}
	layers := append(append([]Dense{}, encoder...), decoder...)
	if err := checkDense(layers[0], 0); err != nil {
		return nil, err
	}
	if got, want := layers[len(layers)-1].out(), layers[0].in(); got != want {
		return nil, fmt.Errorf("%w: decoder gives %d values for %d inputs", ErrShape, got, want)
	}
	g := NewGraph("autoencoder")
	if err := stack(g, "features", "recon", layers, MLPOptions{Hidden: hidden}); err != nil {
		return nil, err
	}
	return g.Node("Sub", []string{"recon", "features"}, []string{"err"}).
		Node("Mul", []string{"err", "err"}, []string{"sq"}).
		Node("ReduceMean", []string{"sq"}, []string{"scores"}, Attr{"axes", []int64{1}}, Attr{"keepdims", int64(1)}).
		Output("scores", "N", 1).
		Model("outpost")
}

func checkDense(l Dense, i int) error {
	if len(l.W) == 0 || len(l.W[0]) == 0 || len(l.W) != len(l.B) {
		return fmt.Errorf("%w: layer %d has %d weight rows for %d biases", ErrShape, i, len(l.W), len(l.B))
	}
	for r, row := range l.W {
		if len(row) != len(l.W[0]) {
			return fmt.Errorf("%w: layer %d weight row %d has %d values, want %d", ErrShape, i, r, len(row), len(l.W[0]))
		}
	}
	return nil
}

func flatten(w [][]float32) []float32 {
	out := make([]float32, 0, len(w)*len(w[0]))
	for _, row := range w {
		out = append(out, row...)
	}
	return out
}

func transpose(w [][]float32) []float32 {
	rows, cols := len(w), len(w[0])
	out := make([]float32, rows*cols)
	for r := range w {
		for c := range w[r] {
			out[c*rows+r] = w[r][c]
		}
	}
	return out
}
