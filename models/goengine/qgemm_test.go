package goengine

import (
	"math/rand/v2"
	"testing"
)

// kernelsOf returns q on the SWAR kernel and, where this build and CPU
// have the vector one (GOEXPERIMENT=simd on AVX2, as make test runs this
// package), a copy of q on it; w are q's weights, [out][in].
func kernelsOf(t *testing.T, q *qgemm, w []int32) map[string]*qgemm {
	t.Helper()
	ks := map[string]*qgemm{"swar": q}
	if qsums16 != nil {
		v := *q
		v.vectorize(w)
		if v.w16 == nil {
			t.Fatal("vectorize left the weights unpacked")
		}
		ks["avx2"] = &v
	}
	return ks
}

// TestQgemmIsExact: the int8 kernels (SWAR, and the vector one where the
// build has it) give exactly the int32 sums of
// the plain triple loop, scaled, for shapes that leave panels and the
// k-unroll part full (odd k, columns not a multiple of 16), full-range
// weights, activations at both ends of their range, and a k of many
// blocks; dense rows and a row mostly at the zero point (the sparse path);
// row counts past four, for the vector kernel's four-row blocks.
func TestQgemmIsExact(t *testing.T) {
	rng := rand.New(rand.NewPCG(8, 8))
	for _, c := range []struct{ rows, in, out int }{{1, 1, 1}, {3, 17, 5}, {2, 64, 16}, {4, 33, 47}, {2, 301, 50}, {6, 21, 20}, {9, 64, 8}} {
		w := make([]int32, c.out*c.in)
		for i := range w {
			w[i] = int32(rng.IntN(255) - 127)
		}
		w[0] = -127
		packed, kb := qpack(w, c.out, c.in)
		q := &qgemm{sx: 0.5, zx: -3, w: packed, kb: kb, sw: make([]float32, c.out), in: c.in, out: c.out}
		for j := range q.sw {
			q.sw[j] = 0.25 * float32(j+1)
		}
		x := tensor{shape: []int{c.rows, c.in}, data: make([]float32, c.rows*c.in)}
		for i := range x.data {
			x.data[i] = float32(rng.IntN(256) - 128)
			if i%c.in < c.in*3/4 && i/c.in == 1 {
				x.data[i] = -3 // row 1 mostly at the zero point: the sparse path
			}
		}
		x.data[0], x.data[len(x.data)-1] = 127, -128
		for name, q := range kernelsOf(t, q, w) {
			got, err := q.run(&node{}, x, 2)
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < c.rows; i++ {
				for j := 0; j < c.out; j++ {
					var sum int32
					for p := 0; p < c.in; p++ {
						sum += (int32(x.data[i*c.in+p]) + 3) * w[j*c.in+p]
					}
					want := float32(sum) * q.sx * 2 * q.sw[j]
					if g := got.data[i*c.out+j]; g != want {
						t.Fatalf("%s %+v: y[%d][%d] = %v, want %v", name, c, i, j, g, want)
					}
				}
			}
		}
	}
}

// TestQgemmAtTheLaneBound: every product at its largest magnitude, the
// same sign through a whole block of k, so each lane's sum reaches the
// bound the block length is chosen for; and the same with alternating
// signs across columns, so neighbouring lanes carry opposite signs.
func TestQgemmAtTheLaneBound(t *testing.T) {
	for _, wmax := range []int32{127, 63} {
		for _, alternate := range []bool{false, true} {
			const rows, out = 2, 30
			in := 3*(qLaneMax/(255*int(wmax))) + 7 // several whole blocks and a part
			w := make([]int32, out*in)
			for j := 0; j < out; j++ {
				for p := 0; p < in; p++ {
					w[j*in+p] = -wmax
					if alternate && j%2 == 1 {
						w[j*in+p] = wmax
					}
				}
			}
			packed, kb := qpack(w, out, in)
			if kb*255*int(wmax) > qLaneMax {
				t.Fatalf("block of %d terms can exceed a lane", kb)
			}
			q := &qgemm{sx: 1, zx: 127, w: packed, kb: kb, sw: make([]float32, out), in: in, out: out}
			for j := range q.sw {
				q.sw[j] = 1
			}
			x := tensor{shape: []int{rows, in}, data: make([]float32, rows*in)}
			for i := range x.data {
				x.data[i] = -128 // x − zx = −255
			}
			for name, q := range kernelsOf(t, q, w) {
				got, err := q.run(&node{}, x, 1)
				if err != nil {
					t.Fatal(err)
				}
				for i := 0; i < rows; i++ {
					for j := 0; j < out; j++ {
						want := float32(-255 * int(w[j*in]) * in)
						if g := got.data[i*out+j]; g != want {
							t.Fatalf("%s wmax %d alternate %v: y[%d][%d] = %v, want %v", name, wmax, alternate, i, j, g, want)
						}
					}
				}
			}
		}
	}
}

// TestMatMulIntegerPackedIsExact: MatMulInteger on constant int8 weights
// through the packed kernel gives the plain loop's int32 sums, for uint8
// and int8 activations at the ends of their range, zero points at both
// ends, rows mostly at the zero point (the sparse path) and weights at
// ±127.
func TestMatMulIntegerPackedIsExact(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, c := range []struct {
		rows, k, cols int
		kind          byte
		za            float32
	}{{1, 1, 1, 'u', 0}, {3, 17, 5, 'u', 255}, {4, 300, 47, 'u', 131}, {2, 901, 20, 'i', -128}, {3, 64, 33, 'i', 127}} {
		lo, hi := 0, 255
		if c.kind == 'i' {
			lo, hi = -128, 127
		}
		b := tensor{shape: []int{c.k, c.cols}, data: make([]float32, c.k*c.cols), kind: 'i'}
		for i := range b.data {
			b.data[i] = float32(rng.IntN(255) - 127)
		}
		b.data[0], b.data[len(b.data)-1] = -127, 127
		w := make([]int32, len(b.data))
		for p := 0; p < c.k; p++ {
			for j := 0; j < c.cols; j++ {
				w[j*c.k+p] = int32(b.data[p*c.cols+j])
			}
		}
		packed, kb := qpack(w, c.cols, c.k)
		q := &qgemm{w: packed, kb: kb, in: c.k, out: c.cols}
		a := tensor{shape: []int{c.rows, c.k}, data: make([]float32, c.rows*c.k), kind: c.kind}
		for i := range a.data {
			a.data[i] = float32(lo + rng.IntN(hi-lo+1))
			if i/c.k == 1 && i%c.k < c.k*3/4 {
				a.data[i] = c.za
			}
		}
		a.data[0], a.data[len(a.data)-1] = float32(lo), float32(hi)
		want, err := (&node{op: "MatMulInteger"}).integerProduct(a, b, []float32{c.za}, nil)
		if err != nil {
			t.Fatal(err)
		}
		for name, q := range kernelsOf(t, q, w) {
			got := q.integer(&node{}, a, c.za)
			for i := range want.data {
				if got.data[i] != want.data[i] {
					t.Fatalf("%s %+v: sum %d = %v, want %v", name, c, i, got.data[i], want.data[i])
				}
			}
		}
	}
}
