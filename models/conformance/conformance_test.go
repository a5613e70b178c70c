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

// mlp builds features → hidden (act) → out (softmax), with Gemm or
// MatMul+Add for the first layer.
func mlp(t *testing.T, rng *rand.Rand, features, hidden, out int, act string, matmul bool) []byte {
	g := onnx.NewGraph("mlp").Input("features", "N", features).
		Initializer("W1", randMat(rng, features, hidden), int64(features), int64(hidden)).
		Initializer("B1", randMat(rng, 1, hidden), int64(hidden)).
		Initializer("W2", randMat(rng, out, hidden), int64(out), int64(hidden)).
		Initializer("B2", randMat(rng, 1, out), int64(out))
	if matmul {
		g.Node("MatMul", []string{"features", "W1"}, []string{"h0"}).Node("Add", []string{"h0", "B1"}, []string{"h1"})
	} else {
		g.Node("Gemm", []string{"features", "W1", "B1"}, []string{"h1"})
	}
	model, err := g.Node(act, []string{"h1"}, []string{"h2"}).
		Node("Gemm", []string{"h2", "W2", "B2"}, []string{"logits"}, onnx.Attr{Name: "transB", Value: int64(1)}).
		Node("Softmax", []string{"logits"}, []string{"probs"}, onnx.Attr{Name: "axis", Value: int64(-1)}).
		Output("probs", "N", out).Model("conformance")
	if err != nil {
		t.Fatal(err)
	}
	return model
}

type model struct {
	name     string
	data     []byte
	features int
}

func models(t *testing.T) []model {
	rng := rand.New(rand.NewPCG(3, 4))
	logistic, err := onnx.Logistic([][]float32{randMat(rng, 1, 6), randMat(rng, 1, 6)}, randMat(rng, 1, 2))
	if err != nil {
		t.Fatal(err)
	}
	return []model{
		{"logistic", logistic, 6},
		{"mlp-relu-gemm", mlp(t, rng, 8, 16, 3, "Relu", false), 8},
		{"mlp-tanh-matmul", mlp(t, rng, 5, 12, 4, "Tanh", true), 5},
		{"mlp-sigmoid", mlp(t, rng, 3, 7, 2, "Sigmoid", false), 3},
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
	conv, _ := onnx.NewGraph("c").Input("x", "N", 4).Node("Conv", []string{"x", "w"}, []string{"y"}).Output("y", "N", 4).Model("t")
	if _, err := goengine.Load(conv); !errors.Is(err, goengine.ErrUnsupported) {
		t.Fatalf("Conv: %v", err)
	}
}
