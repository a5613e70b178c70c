//go:build goexperiment.simd && amd64

package goengine

import (
	"simd/archsimd"
	"testing"
)

// TestSIMDKernelSelected: a GOEXPERIMENT=simd build on a CPU with AVX2
// and FMA runs the vector kernel, and keeps the pure-Go one beside it.
func TestSIMDKernelSelected(t *testing.T) {
	if !archsimd.X86.AVX2() || !archsimd.X86.FMA() {
		if kern.name != "go" {
			t.Fatalf("kernel %q without AVX2 and FMA", kern.name)
		}
		t.Skip("no AVX2 and FMA: the pure-Go kernel runs")
	}
	if kern.name != "avx2" || len(kernels) != 2 || kernels[0].name != "go" {
		t.Fatalf("kernel %q of %d", kern.name, len(kernels))
	}
}
