package fleettest

import (
	"math/rand/v2"
	"testing"

	"github.com/outpost-edge/outpost/models/goengine"
	"github.com/outpost-edge/outpost/models/manifest"
	"github.com/outpost-edge/outpost/models/onnx"
	"github.com/outpost-edge/outpost/models/validate"
)

// WritePackage packages model with m's inputs (any manifest version):
// golden vectors are four random rows run on the pure-Go engine, the way
// a data scientist's import computes them.
func WritePackage(tb testing.TB, dir string, m *manifest.Manifest, model []byte) {
	tb.Helper()
	eng, err := goengine.Load(model)
	if err != nil {
		tb.Fatal(err)
	}
	info, err := onnx.Inspect(model)
	if err != nil {
		tb.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	w := m.RowWidth()
	for range 4 {
		in := make([]float32, w)
		for i := range in {
			in[i] = float32(rng.NormFloat64())
		}
		out, err := validate.Rows(m, info, eng)(in, w)
		if err != nil {
			tb.Fatal(err)
		}
		m.Golden = append(m.Golden, manifest.Golden{Input: in, Output: out, Tolerance: 1e-4})
	}
	if err := manifest.Write(dir, m, model); err != nil {
		tb.Fatal(err)
	}
}
