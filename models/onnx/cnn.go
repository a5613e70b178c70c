package onnx

import (
	"fmt"
	"math/rand/v2"

	"google.golang.org/protobuf/proto"

	"github.com/outpost-edge/outpost/models/onnx/onnxpb"
)

// CNN1D builds an exporter-style 1-D CNN for windows of raw samples:
// input [N, channels, steps] → Conv(filters, kernel, stride 2) → Relu →
// GlobalAveragePool → Flatten → Gemm → Sigmoid, a score [N, 1]. Weights
// are drawn from seed: the demo's and the tests' vibration model.
func CNN1D(input string, channels, steps, filters, kernel int, seed uint64) ([]byte, error) {
	rng := rand.New(rand.NewPCG(seed, seed+1))
	w := make([]float32, filters*channels*kernel)
	for i := range w {
		w[i] = float32(rng.NormFloat64() / float64(channels*kernel))
	}
	b := make([]float32, filters)
	g := make([]float32, filters)
	for i := range g {
		g[i] = float32(rng.NormFloat64())
	}
	return NewGraph("vibration_cnn1d").
		Input(input, "N", channels, steps).
		Initializer("conv_w", w, int64(filters), int64(channels), int64(kernel)).
		Initializer("conv_b", b, int64(filters)).
		Initializer("fc_w", g, 1, int64(filters)).
		Initializer("fc_b", []float32{0}, 1).
		Node("Conv", []string{input, "conv_w", "conv_b"}, []string{"c"}, Attr{"kernel_shape", []int64{int64(kernel)}}, Attr{"strides", []int64{2}}).
		Node("Relu", []string{"c"}, []string{"r"}).
		Node("GlobalAveragePool", []string{"r"}, []string{"p"}).
		Node("Flatten", []string{"p"}, []string{"f"}).
		Node("Gemm", []string{"f", "fc_w", "fc_b"}, []string{"z"}, Attr{"transB", int64(1)}).
		Node("Sigmoid", []string{"z"}, []string{"score"}).
		Output("score", "N", 1).
		Model("outpost")
}

// CNN2D builds an exporter-style image CNN: input [N, 3, size, size]
// floats → Conv(filters, 3×3, stride 2, pads 1) → Relu → MaxPool(2) →
// GlobalAveragePool → Flatten → Gemm → Softmax over classes.
func CNN2D(input string, size, filters, classes int, seed uint64) ([]byte, error) {
	rng := rand.New(rand.NewPCG(seed, seed+1))
	w := make([]float32, filters*3*9)
	for i := range w {
		w[i] = float32(rng.NormFloat64() / 5)
	}
	g := make([]float32, classes*filters)
	for i := range g {
		g[i] = float32(rng.NormFloat64())
	}
	return NewGraph("image_cnn2d").
		Input(input, "N", 3, size, size).
		Initializer("conv_w", w, int64(filters), 3, 3, 3).
		Initializer("conv_b", make([]float32, filters), int64(filters)).
		Initializer("fc_w", g, int64(classes), int64(filters)).
		Initializer("fc_b", make([]float32, classes), int64(classes)).
		Node("Conv", []string{input, "conv_w", "conv_b"}, []string{"c"},
			Attr{"kernel_shape", []int64{3, 3}}, Attr{"strides", []int64{2, 2}}, Attr{"pads", []int64{1, 1, 1, 1}}).
		Node("Relu", []string{"c"}, []string{"r"}).
		Node("MaxPool", []string{"r"}, []string{"m"}, Attr{"kernel_shape", []int64{2, 2}}, Attr{"strides", []int64{2, 2}}).
		Node("GlobalAveragePool", []string{"m"}, []string{"p"}).
		Node("Flatten", []string{"p"}, []string{"f"}).
		Node("Gemm", []string{"f", "fc_w", "fc_b"}, []string{"z"}, Attr{"transB", int64(1)}).
		Node("Softmax", []string{"z"}, []string{"probabilities"}, Attr{"axis", int64(1)}).
		Output("probabilities", "N", classes).
		Model("outpost")
}

// ConvLayer is one Conv (+ Relu) of a ConvNet: out channels, kernel,
// stride and padding, the same along every spatial axis.
type ConvLayer struct{ Out, Kernel, Stride, Pad int }

// ConvNet builds an exporter-style CNN: Conv+Relu layers,
// GlobalAveragePool, Flatten and a Gemm to classes (logits, output "y"),
// with He-scaled weights drawn from rng in layer order. The input "x" is
// [N, channels, spatial...] floats, or with flat [N, channels × spatial…]
// rows that a Reshape turns into that shape. It returns the model and
// its parameter count; the same rng state gives the same bytes either way.
func ConvNet(rng *rand.Rand, name string, channels int, spatial []int, layers []ConvLayer, classes int, flat bool) ([]byte, int, error) {
	features := channels
	for _, s := range spatial {
		features *= s
	}
	g := NewGraph(name)
	shape := []int64{-1, int64(channels)}
	for _, v := range spatial {
		shape = append(shape, int64(v))
	}
	cur := "x"
	if flat {
		g.Input("x", "N", Dim(features)).Node("Reshape", []string{"x", "shape"}, []string{"r"})
		cur = "r"
	} else {
		dims := []Dim{"N", Dim(channels)}
		for _, v := range spatial {
			dims = append(dims, Dim(v))
		}
		g.Input("x", dims...)
	}
	in, params := channels, 0
	rank := len(spatial)
	rep := func(v int) []int64 {
		out := make([]int64, rank)
		for i := range out {
			out[i] = int64(v)
		}
		return out
	}
	for i, l := range layers {
		k := 1
		dims := []int64{int64(l.Out), int64(in)}
		for range rank {
			k *= l.Kernel
			dims = append(dims, int64(l.Kernel))
		}
		fan := in * k
		w, b := fmt.Sprintf("w%d", i), fmt.Sprintf("b%d", i)
		g.Initializer(w, uniform(rng, l.Out*fan, 1.7/float32(fan)), dims...).
			Initializer(b, uniform(rng, l.Out, 0.05), int64(l.Out)).
			Node("Conv", []string{cur, w, b}, []string{fmt.Sprintf("c%d", i)},
				Attr{Name: "kernel_shape", Value: rep(l.Kernel)}, Attr{Name: "strides", Value: rep(l.Stride)},
				Attr{Name: "pads", Value: append(rep(l.Pad), rep(l.Pad)...)}).
			Node("Relu", []string{fmt.Sprintf("c%d", i)}, []string{fmt.Sprintf("a%d", i)})
		params += l.Out*fan + l.Out
		cur, in = fmt.Sprintf("a%d", i), l.Out
	}
	g.Node("GlobalAveragePool", []string{cur}, []string{"gap"}).
		Node("Flatten", []string{"gap"}, []string{"flat"}).
		Initializer("fw", uniform(rng, classes*in, 1/float32(in)), int64(classes), int64(in)).
		Initializer("fb", uniform(rng, classes, 0.05), int64(classes)).
		Node("Gemm", []string{"flat", "fw", "fb"}, []string{"y"}, Attr{Name: "transB", Value: int64(1)})
	params += classes*in + classes
	g.Output("y", "N", Dim(classes))
	if flat {
		g.g.Initializer = append(g.g.Initializer, &onnxpb.TensorProto{Name: proto.String("shape"),
			DataType: proto.Int32(int32(onnxpb.TensorProto_INT64)), Dims: []int64{int64(len(shape))}, Int64Data: shape})
	}
	data, err := g.Model("bench")
	return data, params, err
}

// ImageCNN96 is a CNN of about 1M parameters (981,066) on 96×96 RGB
// frames, [N, 3, 96, 96] (flat: [N, 27648] rows): four stride-2 3×3
// convolutions and one at stride 1 (32, 64, 128, 256, 256 filters), then
// 10 class logits. BenchmarkEngines and the footprint benchmark use it.
func ImageCNN96(rng *rand.Rand, flat bool) ([]byte, int, error) {
	return ConvNet(rng, "cnn2d-3x96x96", 3, []int{96, 96},
		[]ConvLayer{{32, 3, 2, 1}, {64, 3, 2, 1}, {128, 3, 2, 1}, {256, 3, 2, 1}, {256, 3, 1, 1}}, 10, flat)
}

// SensorCNN1D is a 1-D CNN over 2 s windows of a 3-axis sensor at 100 Hz
// ([N, 3, 200]; flat: [N, 600]), as a human-activity model is commonly
// built: 32, 64, 64, 128 filters, then 6 class logits.
func SensorCNN1D(rng *rand.Rand, flat bool) ([]byte, int, error) {
	return ConvNet(rng, "cnn1d-3x200", 3, []int{200},
		[]ConvLayer{{32, 5, 1, 2}, {64, 5, 2, 2}, {64, 5, 2, 2}, {128, 3, 2, 1}}, 6, flat)
}

// uniform draws n values uniformly from [-scale, scale).
func uniform(rng *rand.Rand, n int, scale float32) []float32 {
	out := make([]float32, n)
	for i := range out {
		out[i] = (rng.Float32()*2 - 1) * scale
	}
	return out
}
