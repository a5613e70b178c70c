package goengine

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/outpost-edge/outpost/models/onnx"
)

// FuzzLoad: no model panics or hangs Load, and a model that loads runs on
// rows of any width without panicking (errors are fine).
func FuzzLoad(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("..", "testdata", "skl2onnx", "*.onnx"))
	for _, p := range files {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b, uint8(6))
		}
	}
	if m, err := onnx.MLP([]onnx.Dense{{W: [][]float32{{1, 2}, {3, 4}}, B: []float32{0, 1}}}, onnx.MLPOptions{Output: onnx.Softmax}); err == nil {
		f.Add(m, uint8(2))
	}
	f.Fuzz(func(t *testing.T, model []byte, features uint8) {
		e, err := Load(model)
		if err != nil {
			return
		}
		width := int(features%16) + 1
		x := make([]float32, 3*width)
		for i := range x {
			x[i] = float32(i%7) - 3
		}
		e.Run(x, width)
		e.Run(x[:width], width)
	})
}

// TestHugeEmptyShapesAreRefused: a value of shape [2^20, 2^20, 0] holds
// nothing, but kernels walking its outer dimensions would run for hours.
func TestHugeEmptyShapesAreRefused(t *testing.T) {
	model, err := onnx.NewGraph("g").Input("x", "N", 2).
		Initializer("e", nil, 1<<20, 1<<20, 0).
		Node("ReduceSum", []string{"e"}, []string{"r"}).
		Node("Add", []string{"x", "r"}, []string{"y"}).
		Output("y", "N", 2).Model("t")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Load(model); !errors.Is(err, ErrModel) {
		t.Fatalf("err = %v, want ErrModel", err)
	}
}
