// Package conformance runs one suite against every inference engine: the
// same models and inputs must give the same outputs on ONNX Runtime and on
// the pure-Go engine, within a documented tolerance (1e-5 absolute).
package conformance

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/outpost-edge/outpost/models/goengine"
	"github.com/outpost-edge/outpost/models/onnx"
	"github.com/outpost-edge/outpost/models/ort"
	"github.com/outpost-edge/outpost/test/testenv"
)

// engine is what the agent's runner calls.
type engine interface {
	Run(x []float32, features int) ([]float32, error)
	Outputs() int
	Close() error
}

const tolerance = 1e-5

func randMat(rng *rand.Rand, r, c int) []float32 {
	out := make([]float32, r*c)
	for i := range out {
		out[i] = rng.Float32()*2 - 1
	}
	return out
}

func dense(rng *rand.Rand, in, out int) onnx.Dense {
	d := onnx.Dense{B: randMat(rng, 1, out)}
	for range out {
		d.W = append(d.W, randMat(rng, 1, in))
	}
	return d
}

type model struct {
	name     string
	data     []byte
	features int
}

// models are the families the trainer produces, each built by the same
// onnx builders the trainer uses.
func models(t *testing.T) []model {
	rng := rand.New(rand.NewPCG(3, 4))
	build := func(m []byte, err error) []byte {
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	return []model{
		{"logistic", build(onnx.Logistic([][]float32{randMat(rng, 1, 6), randMat(rng, 1, 6)}, randMat(rng, 1, 2))), 6},
		{"softmax-regression", build(onnx.MLP([]onnx.Dense{dense(rng, 4, 3)}, onnx.MLPOptions{Output: onnx.Softmax})), 4},
		{"mlp-relu-gemm", build(onnx.MLP([]onnx.Dense{dense(rng, 8, 16), dense(rng, 16, 3)}, onnx.MLPOptions{Hidden: onnx.Relu, Output: onnx.Softmax})), 8},
		{"mlp-tanh-matmul", build(onnx.MLP([]onnx.Dense{dense(rng, 5, 12), dense(rng, 12, 4)}, onnx.MLPOptions{Hidden: onnx.Tanh, Output: onnx.Softmax, MatMul: true})), 5},
		{"mlp-sigmoid-deep", build(onnx.MLP([]onnx.Dense{dense(rng, 3, 7), dense(rng, 7, 7), dense(rng, 7, 2)}, onnx.MLPOptions{Hidden: onnx.Sigmoid, Output: onnx.Sigmoid})), 3},
		{"autoencoder", build(onnx.Autoencoder([]onnx.Dense{dense(rng, 6, 3)}, []onnx.Dense{dense(rng, 3, 6)}, onnx.Relu)), 6},
	}
}

func engines(t *testing.T) map[string]func([]byte) (engine, error) {
	if err := ort.Init(testenv.ORTLibrary(t)); err != nil {
		t.Fatal(err)
	}
	return map[string]func([]byte) (engine, error){
		"onnxruntime": func(b []byte) (engine, error) { return ort.NewSession(b) },
		"go":          func(b []byte) (engine, error) { return goengine.Load(b) },
	}
}

// TestEnginesAgree: each model, several batch sizes, every engine against
// the first (ONNX Runtime, the reference).
func TestEnginesAgree(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	engs := engines(t)
	for _, m := range models(t) {
		ref, err := engs["onnxruntime"](m.data)
		if err != nil {
			t.Fatalf("%s: %v", m.name, err)
		}
		other, err := engs["go"](m.data)
		if err != nil {
			t.Fatalf("%s on go: %v", m.name, err)
		}
		if ref.Outputs() != other.Outputs() {
			t.Fatalf("%s: widths %d vs %d", m.name, ref.Outputs(), other.Outputs())
		}
		for _, batch := range []int{1, 7, 32} {
			x := randMat(rng, batch, m.features)
			want, err := ref.Run(x, m.features)
			if err != nil {
				t.Fatal(err)
			}
			got, err := other.Run(x, m.features)
			if err != nil {
				t.Fatalf("%s batch %d on go: %v", m.name, batch, err)
			}
			if len(got) != len(want) {
				t.Fatalf("%s: %d outputs, want %d", m.name, len(got), len(want))
			}
			for i := range want {
				if d := math.Abs(float64(got[i] - want[i])); d > tolerance {
					t.Fatalf("%s batch %d output %d: go %v, onnxruntime %v", m.name, batch, i, got[i], want[i])
				}
			}
		}
		ref.Close()
		other.Close()
	}
}

// TestEnginesRejectAlike: both refuse garbage and a wrong input width.
func TestEnginesRejectAlike(t *testing.T) {
	for name, open := range engines(t) {
		if _, err := open([]byte("not a model")); err == nil {
			t.Errorf("%s accepted garbage", name)
		}
		e, err := open(models(t)[0].data)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.Run([]float32{1, 2, 3}, 2); err == nil {
			t.Errorf("%s accepted 3 values as rows of 2", name)
		}
		e.Close()
	}
	// Ops outside the dense families are refused by name, not misrun.
	lstm, _ := onnx.NewGraph("c").Input("x", "N", 4).Node("LSTM", []string{"x", "w", "r"}, []string{"y"}).Output("y", "N", 4).Model("t")
	if _, err := goengine.Load(lstm); !errors.Is(err, goengine.ErrUnsupported) {
		t.Fatalf("LSTM: %v", err)
	}
}
