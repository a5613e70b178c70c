package goengine

import (
	"errors"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/outpost-edge/outpost/models/onnx"
)

// TestScalerRowOnABatch: what every scaler exports, x − mean and ÷ std
// with [1, F] rows, on batches of more than one row (the engine used to
// fail here with "Sub of [50,8] and [1,8]").
func TestScalerRowOnABatch(t *testing.T) {
	mean := []float32{1, 2, 3, 4, 5, 6, 7, 8}
	std := []float32{2, 2, 2, 2, 4, 4, 4, 4}
	for _, op := range []string{"Sub", "Div", "Mul", "Add"} {
		g := onnx.NewGraph("scale").Input("x", "N", 8).
			Initializer("m", mean, 1, 8).Initializer("s", std, 8).
			Node(op, []string{"x", "m"}, []string{"c"}).
			Node(op, []string{"c", "s"}, []string{"y"}).
			Output("y", "N", 8)
		model, err := g.Model("test")
		if err != nil {
			t.Fatal(err)
		}
		e, err := Load(model)
		if err != nil {
			t.Fatal(err)
		}
		x := make([]float32, 50*8)
		for i := range x {
			x[i] = float32(i%13) - 4
		}
		got, err := e.Run(x, 8)
		if err != nil {
			t.Fatalf("%s on 50 rows: %v", op, err)
		}
		for i, v := range x {
			want := binaryRef(op, binaryRef(op, v, mean[i%8]), std[i%8])
			if got[i] != want {
				t.Fatalf("%s: value %d = %v, want %v", op, i, got[i], want)
			}
		}
	}
}

func binaryRef(op string, a, b float32) float32 {
	switch op {
	case "Add":
		return a + b
	case "Sub":
		return a - b
	case "Mul":
		return a * b
	case "Div":
		return a / b
	case "Max":
		return max(a, b)
	}
	panic(op)
}

// refBroadcast computes a op b by numpy's rule, one output index at a
// time: the slow, obvious reference.
func refBroadcast(op string, a, b tensor, out []int) []float32 {
	res := make([]float32, size(out))
	idx := make([]int, len(out))
	at := func(t tensor) float32 {
		off, stride := 0, 1
		for i := len(t.shape) - 1; i >= 0; i-- {
			oi := idx[i+len(out)-len(t.shape)]
			if t.shape[i] == 1 {
				oi = 0
			}
			off += oi * stride
			stride *= t.shape[i]
		}
		return t.data[off]
	}
	for k := range res {
		rem := k
		for d := len(out) - 1; d >= 0; d-- {
			idx[d] = rem % out[d]
			rem /= out[d]
		}
		res[k] = binaryRef(op, at(a), at(b))
	}
	return res
}

func TestBroadcast(t *testing.T) {
	tests := []struct {
		a, b, want []int // want nil: the shapes do not broadcast
	}{
		{[]int{50, 8}, []int{1, 8}, []int{50, 8}},
		{[]int{50, 8}, []int{8}, []int{50, 8}},
		{[]int{4, 3}, []int{4, 1}, []int{4, 3}},
		{[]int{3, 1}, []int{1, 4}, []int{3, 4}},
		{[]int{2, 3, 4}, []int{3, 1}, []int{2, 3, 4}},
		{[]int{2, 1, 4}, []int{1, 3, 1}, []int{2, 3, 4}},
		{[]int{5, 2}, []int{1}, []int{5, 2}},
		{[]int{5, 2}, []int{}, []int{5, 2}},
		{[]int{}, []int{5, 2}, []int{5, 2}},
		{[]int{1}, []int{6}, []int{6}},
		{[]int{7}, []int{7}, []int{7}},
		{[]int{2, 3}, []int{2, 3}, []int{2, 3}},
		{[]int{0, 3}, []int{1, 3}, []int{0, 3}},
		{[]int{3, 4}, []int{3}, nil},
		{[]int{2, 3}, []int{3, 2}, nil},
	}
	rng := rand.New(rand.NewPCG(1, 1))
	fill := func(shape []int) tensor {
		t := tensor{shape: shape, data: make([]float32, size(shape))}
		for i := range t.data {
			t.data[i] = float32(rng.IntN(19) - 9)
		}
		return t
	}
	for _, tc := range tests {
		shape, err := broadcastShape(nil, tc.a, tc.b)
		if tc.want == nil {
			if !errors.Is(err, ErrInput) {
				t.Errorf("%v with %v: shape %v, err %v; want ErrInput", tc.a, tc.b, shape, err)
			}
			continue
		}
		if err != nil || !slices.Equal(shape, tc.want) {
			t.Errorf("%v with %v: shape %v, %v; want %v", tc.a, tc.b, shape, err, tc.want)
			continue
		}
		for _, op := range []string{"Add", "Sub", "Mul", "Div", "Max"} {
			a, b := fill(tc.a), fill(tc.b)
			for i := range b.data {
				if b.data[i] == 0 && op == "Div" {
					b.data[i] = 3
				}
			}
			var s scratch
			dst := make([]float32, size(shape))
			s.broadcast(binaryOps[op], a, b, shape, dst)
			if want := refBroadcast(op, a, b, shape); !slices.Equal(dst, want) {
				t.Errorf("%s of %v and %v = %v, want %v", op, tc.a, tc.b, dst, want)
			}
		}
	}
}

// TestBroadcastAllocatesNothing: once its buffers exist, an elementwise
// node runs without allocating.
func TestBroadcastAllocatesNothing(t *testing.T) {
	a := tensor{shape: []int{32, 8}, data: make([]float32, 256)}
	b := tensor{shape: []int{1, 8}, data: make([]float32, 8)}
	var s scratch
	dst := make([]float32, 256)
	shape := []int{32, 8}
	if n := testing.AllocsPerRun(100, func() { s.broadcast(binaryOps["Sub"], a, b, shape, dst) }); n != 0 {
		t.Fatalf("%v allocations per call", n)
	}
}
