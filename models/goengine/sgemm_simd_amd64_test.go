//go:build goexperiment.simd && amd64

package goengine

import (
	"simd/archsimd"
	"testing"
)

// TestSIMDKernelSelected: a GOEXPERIMENT=simd build runs the vector
// kernel on a CPU with AVX2 and FMA and the pure-Go one elsewhere, and
// keeps the pure-Go one first either way.
func TestSIMDKernelSelected(t *testing.T) {
	want := "go"
	if archsimd.X86.AVX2() && archsimd.X86.FMA() {
		want = "avx2"
	}
	if kern.name != want || kernels[0].name != "go" {
		t.Fatalf("kernel %q of %d, want %q (AVX2 %v, FMA %v)", kern.name, len(kernels), want, archsimd.X86.AVX2(), archsimd.X86.FMA())
	}
}
