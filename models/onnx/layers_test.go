package onnx

import (
	"errors"
	"reflect"
	"testing"
)

func TestLayersRoundTrip(t *testing.T) {
	l1 := Dense{W: [][]float32{{1, 2, 3}, {4, 5, 6}}, B: []float32{0.1, 0.2}}
	l2 := Dense{W: [][]float32{{7, 8}}, B: []float32{0.3}}
	for _, o := range []MLPOptions{{Hidden: Relu, Output: Sigmoid}, {Hidden: Tanh, Output: Softmax, MatMul: true}} {
		model, err := MLP([]Dense{l1, l2}, o)
		if err != nil {
			t.Fatal(err)
		}
		got, gotO, err := Layers(model)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, []Dense{l1, l2}) || gotO != o {
			t.Fatalf("read back %+v %+v, want %+v %+v", got, gotO, []Dense{l1, l2}, o)
		}
	}
	ae, _ := Autoencoder([]Dense{{W: [][]float32{{1, 1}}, B: []float32{0}}}, []Dense{{W: [][]float32{{1}, {1}}, B: []float32{0, 0}}}, Relu)
	if _, _, err := Layers(ae); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("an autoencoder read as a stack: %v", err)
	}
	enc, dec, hidden, err := AutoencoderLayers(ae)
	if err != nil || len(enc) != 1 || len(dec) != 1 || hidden != Relu || enc[0].W[0][1] != 1 {
		t.Fatalf("autoencoder read back: %+v %+v %q %v", enc, dec, hidden, err)
	}
	if _, _, _, err := AutoencoderLayers(model0(t)); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("a classifier read as an autoencoder: %v", err)
	}
}

func model0(t *testing.T) []byte {
	m, err := Logistic([][]float32{{1, 2}}, []float32{0})
	if err != nil {
		t.Fatal(err)
	}
	return m
}
