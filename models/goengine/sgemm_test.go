package goengine

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestSgemmMatchesTheDefinition: every packed kernel this build and CPU
// run (pure Go, and AVX2/FMA in GOEXPERIMENT=simd builds), dense and over
// gathered non-zeros, against the triple loop, on shapes with ragged
// panels (n mod 8), odd panel counts, row tails (m mod 4), k tails (k mod
// 4) and more than one k block.
func TestSgemmMatchesTheDefinition(t *testing.T) {
	for _, kn := range kernels {
		t.Run(kn.name, func(t *testing.T) { testSgemm(t, kn) })
	}
}

func testSgemm(t *testing.T, kn kernel) {
	rng := rand.New(rand.NewPCG(5, 5))
	for _, s := range [][3]int{{1, 1, 1}, {1, 7, 3}, {3, 9, 5}, {32, 16, 10}, {5, 600, 13}, {2, 257, 8}, {7, 33, 17},
		{4, 3, 16}, {9, 520, 40}, {6, 256, 24}, {1, 64, 33}, {8, 5, 7}} {
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
					kn.sparse(c, n, a, m, k, bp, n, 2, make([]float32, m*k), idx[:m*k], idx[m*k:])
				} else {
					kn.dense(c, n, a, m, k, bp, n, 2)
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

// BenchmarkSgemm times each kernel on a batch of 32 rows through a
// 256×512 layer, dense and with half the inputs zero; ps/madd is the time
// per multiply-add.
func BenchmarkSgemm(b *testing.B) {
	const m, k, n = 32, 256, 512
	rng := rand.New(rand.NewPCG(3, 3))
	a, bm := make([]float32, m*k), make([]float32, k*n)
	for i := range bm {
		bm[i] = rng.Float32()*2 - 1
	}
	bp := make([]float32, packedLen(k, n))
	packB(bp, bm, k, n, false)
	c := make([]float32, m*n)
	vals, idx := make([]float32, m*k), make([]int32, m*k+m+1)
	for _, kn := range kernels {
		for _, sparse := range []bool{false, true} {
			for i := range a {
				a[i] = rng.Float32()*2 - 1
				if sparse && rng.IntN(2) == 0 {
					a[i] = 0
				}
			}
			name := kn.name + "/dense"
			if sparse {
				name = kn.name + "/sparse"
			}
			b.Run(name, func(b *testing.B) {
				for b.Loop() {
					if sparse {
						kn.sparse(c, n, a, m, k, bp, n, 1, vals, idx[:m*k], idx[m*k:])
					} else {
						kn.dense(c, n, a, m, k, bp, n, 1)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())*1e3/float64(b.N)/(m*k*n), "ps/madd")
			})
		}
	}
}
