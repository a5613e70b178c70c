package goengine

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestSgemmMatchesTheDefinition: the packed kernel, dense and over
// gathered non-zeros, against the triple loop, on shapes with ragged
// panels (n mod 8), k tails (k mod 4) and more than one k block.
func TestSgemmMatchesTheDefinition(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 5))
	for _, s := range [][3]int{{1, 1, 1}, {1, 7, 3}, {3, 9, 5}, {32, 16, 10}, {5, 600, 13}, {2, 257, 8}, {7, 33, 17}} {
		m, k, n := s[0], s[1], s[2]
		a, b := make([]float32, m*k), make([]float32, k*n)
		for i := range a {
			if rng.IntN(2) == 0 { // half zeros, as after a Relu
				a[i] = rng.Float32()*2 - 1
			}
		}
		for i := range b {
			b[i] = rng.Float32()*2 - 1
		}
		want := make([]float32, m*n)
		for i := range m {
			for j := range n {
				var s float64
				for p := range k {
					s += float64(a[i*k+p]) * float64(b[p*n+j])
				}
				want[i*n+j] = 0.5 + 2*float32(s)
			}
		}
		bt := make([]float32, k*n) // B as [n][k]
		for p := range k {
			for j := range n {
				bt[j*k+p] = b[p*n+j]
			}
		}
		for _, trans := range []bool{false, true} {
			bp := make([]float32, packedLen(k, n))
			if trans {
				packB(bp, bt, k, n, true)
			} else {
				packB(bp, b, k, n, false)
			}
			for _, sparse := range []bool{false, true} {
				c := make([]float32, m*n)
				for i := range c {
					c[i] = 0.5
				}
				if sparse {
					idx := make([]int32, m*k+m+1)
					sgemmSparse(c, n, a, m, k, bp, n, 2, make([]float32, m*k), idx[:m*k], idx[m*k:])
				} else {
					sgemm(c, n, a, m, k, bp, n, 2)
				}
				for i := range want {
					if d := math.Abs(float64(c[i] - want[i])); d > 1e-4 {
						t.Fatalf("%v trans %v sparse %v: value %d is %v, want %v", s, trans, sparse, i, c[i], want[i])
					}
				}
			}
		}
	}
}
