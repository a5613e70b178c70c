//go:build cgo

package ort_test

import (
	"errors"
	"math"
	"testing"

	"github.com/outpost-edge/outpost/models/onnx"
	"github.com/outpost-edge/outpost/models/ort"
	"github.com/outpost-edge/outpost/test/testenv"
)

func sigmoid(x float64) float64 { return 1 / (1 + math.Exp(-x)) }

// TestLogisticOnRuntime builds a model in Go, runs it on the real ONNX
// Runtime library and checks the scores against the formula.
func TestLogisticOnRuntime(t *testing.T) {
	if err := ort.Init(testenv.ORTLibrary(t)); err != nil {
		t.Fatal(err)
	}
	w := [][]float32{{0.5, -1, 2}, {-0.25, 0.75, 0}}
	b := []float32{0.1, -0.2}
	model, err := onnx.Logistic(w, b)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ort.NewSession(model)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	x := []float32{1, 2, 3, -1, 0, 0.5}
	got, err := s.Run(x, 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 4 {
		t.Fatalf("got %d scores, want 4", len(got))
	}
	for r := 0; r < 2; r++ {
		for o := 0; o < 2; o++ {
			z := float64(b[o])
			for f := 0; f < 3; f++ {
				z += float64(w[o][f]) * float64(x[r*3+f])
			}
			if want := sigmoid(z); math.Abs(float64(got[r*2+o])-want) > 1e-6 {
				t.Errorf("row %d output %d = %v, want %v", r, o, got[r*2+o], want)
			}
		}
	}
	t.Logf("onnxruntime %s", ort.Version())
}

func TestRejectsBadInput(t *testing.T) {
	if err := ort.Init(testenv.ORTLibrary(t)); err != nil {
		t.Fatal(err)
	}
	model, err := onnx.Logistic([][]float32{{1, 2}}, []float32{0})
	if err != nil {
		t.Fatal(err)
	}
	s, err := ort.NewSession(model)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Run([]float32{1, 2, 3}, 2); !errors.Is(err, ort.ErrInput) {
		t.Fatalf("err = %v, want ErrInput", err)
	}
	// The model expects 2 features; feeding 3 must fail inside the runtime.
	if _, err := s.Run([]float32{1, 2, 3}, 3); !errors.Is(err, ort.ErrRuntime) {
		t.Fatalf("err = %v, want ErrRuntime", err)
	}
}

func TestRejectsCorruptModel(t *testing.T) {
	if err := ort.Init(testenv.ORTLibrary(t)); err != nil {
		t.Fatal(err)
	}
	if _, err := ort.NewSession([]byte("not an onnx model")); !errors.Is(err, ort.ErrModel) {
		t.Fatalf("err = %v, want ErrModel", err)
	}
}

// TestProviderFallback asks for CUDA from the CPU-only library: the session
// must still work, on cpu, and say why.
func TestProviderFallback(t *testing.T) {
	if err := ort.Init(testenv.ORTLibrary(t)); err != nil {
		t.Fatal(err)
	}
	model, _ := onnx.Logistic([][]float32{{1}}, []float32{0})
	s, err := ort.NewSessionWith(model, ort.Options{Provider: "cuda", IntraOpThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Provider != "cpu" || s.FallbackReason == "" {
		t.Fatalf("provider %q, reason %q", s.Provider, s.FallbackReason)
	}
	out, err := s.Run([]float32{0}, 1)
	if err != nil || out[0] != 0.5 {
		t.Fatalf("run = %v, %v", out, err)
	}
	if _, err := ort.NewSessionWith(model, ort.Options{Provider: "quantum"}); !errors.Is(err, ort.ErrModel) {
		t.Fatalf("unknown provider: %v", err)
	}
}
