package onnx

import "math/rand/v2"

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
