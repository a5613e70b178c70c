package onnx

import (
	"bytes"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestConvNetShapes: ImageCNN96 and SensorCNN1D take [N, C, spatial...]
// or, flat, [N, features] rows; both forms draw the same weights.
func TestConvNetShapes(t *testing.T) {
	for _, c := range []struct {
		build  func(*rand.Rand, bool) ([]byte, int, error)
		params int
		shape  []string
		flat   []string
		out    []string
	}{
		{ImageCNN96, 981066, []string{"N", "3", "96", "96"}, []string{"N", "27648"}, []string{"N", "10"}},
		{SensorCNN1D, 56838, []string{"N", "3", "200"}, []string{"N", "600"}, []string{"N", "6"}},
	} {
		var infos []*Info
		for _, flat := range []bool{false, true} {
			data, params, err := c.build(rand.New(rand.NewPCG(7, 7)), flat)
			if err != nil {
				t.Fatal(err)
			}
			if params != c.params {
				t.Errorf("params %d, want %d", params, c.params)
			}
			info, err := Inspect(data)
			if err != nil {
				t.Fatal(err)
			}
			infos = append(infos, info)
			if !bytes.Contains(data, []byte("Conv")) {
				t.Error("no Conv")
			}
		}
		if got := infos[0].Inputs[0].Shape; !slices.Equal(got, c.shape) {
			t.Errorf("input %v, want %v", got, c.shape)
		}
		if got := infos[1].Inputs[0].Shape; !slices.Equal(got, c.flat) {
			t.Errorf("flat input %v, want %v", got, c.flat)
		}
		for _, info := range infos {
			if len(info.Inputs) != 1 || !slices.Equal(info.Outputs[0].Shape, c.out) {
				t.Errorf("inputs %v outputs %v", info.Inputs, info.Outputs)
			}
		}
	}
}
