package quant_test

import (
	"errors"
	"math/rand/v2"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/outpost-edge/outpost/models/onnx"
	"github.com/outpost-edge/outpost/models/onnx/onnxpb"
	"github.com/outpost-edge/outpost/quant"
)

// weightScales maps each quantized op's output to how many scales its
// weight got: static models by the DequantizeLinear an op reads its
// weight through, dynamic ones by the MatMulInteger's scale Mul.
func weightScales(tb testing.TB, model []byte) map[string]int {
	tb.Helper()
	var m onnxpb.ModelProto
	if err := proto.Unmarshal(model, &m); err != nil {
		tb.Fatal(err)
	}
	count := map[string]int{}
	for _, t := range m.GetGraph().GetInitializer() {
		n := 1
		for _, d := range t.GetDims() {
			n *= int(d)
		}
		count[t.GetName()] = n
	}
	scaleOf := map[string]int{} // a DequantizeLinear's output → its scales
	for _, n := range m.GetGraph().GetNode() {
		if n.GetOpType() == "DequantizeLinear" {
			if _, constant := count[n.GetInput()[0]]; constant {
				scaleOf[n.GetOutput()[0]] = count[n.GetInput()[1]]
			}
		}
	}
	got := map[string]int{}
	for _, n := range m.GetGraph().GetNode() {
		switch n.GetOpType() {
		case "Gemm", "MatMul", "Conv":
			if len(n.GetInput()) > 1 {
				if s, ok := scaleOf[n.GetInput()[1]]; ok {
					got[n.GetOpType()+" "+n.GetOutput()[0]] = s
				}
			}
		case "MatMulInteger":
			// Its weights are BASE_w and their scales BASE_ws; a lowered
			// Conv's base is c<n>.
			base, ok := strings.CutSuffix(n.GetInput()[1], "_w")
			if s, scaled := count[base+"_ws"]; ok && scaled {
				op := "MatMulInteger " + base
				if strings.HasPrefix(base, "c") {
					op = "MatMulInteger (a lowered Conv) " + base
				}
				got[op] = s
			}
		}
	}
	return got
}

// TestWeightGranularity: by default a Gemm or MatMul takes one weight
// scale and a Conv one per channel; a Gemm whose channels' ranges lie far
// apart stays per channel; PerChannel and PerTensor force either, and not
// both.
func TestWeightGranularity(t *testing.T) {
	tr := trace(t)
	byName := map[string]family{}
	for _, f := range families(t) {
		byName[f.name] = f
	}
	rng := rand.New(rand.NewPCG(9, 9))
	quantize := func(f family, o quant.Options) map[string]int {
		t.Helper()
		o.Samples, o.Tracer = samples(rng, 64, f.features), feedTracer(f)(tr)
		q, err := quant.Quantize(f.model, o)
		if err != nil {
			t.Fatalf("%s: %v", f.name, err)
		}
		return weightScales(t, q)
	}
	for _, name := range []string{"mlp_gemm", "mlp_matmul_add", "sensor_cnn1d"} {
		for _, mode := range []string{quant.Static, quant.Dynamic} {
			got := quantize(byName[name], quant.Options{Mode: mode})
			t.Logf("%s %s: %v", name, mode, got)
			if len(got) == 0 {
				t.Fatalf("%s %s: no quantized weight found", name, mode)
			}
			for op, scales := range got {
				conv := strings.HasPrefix(op, "Conv") || strings.Contains(op, "lowered Conv")
				switch {
				case conv && scales == 1:
					t.Errorf("%s %s: %s has one weight scale, want one per channel", name, mode, op)
				case !conv && scales != 1:
					t.Errorf("%s %s: %s has %d weight scales, want one", name, mode, op, scales)
				}
			}
			for op, scales := range quantize(byName[name], quant.Options{Mode: mode, PerChannel: true}) {
				if scales == 1 {
					t.Errorf("%s %s per channel: %s has one weight scale", name, mode, op)
				}
			}
		}
	}

	// One output channel 40× wider than the rest: one scale would leave
	// the others a few levels, so the Gemm stays per channel.
	layer := func(in, out int, wide bool) onnx.Dense {
		d := onnx.Dense{B: make([]float32, out)}
		for o := range out {
			row := make([]float32, in)
			for i := range row {
				row[i] = float32(rng.NormFloat64() / 4)
				if wide && o == 0 {
					row[i] *= 40
				}
			}
			d.W = append(d.W, row)
		}
		return d
	}
	model, err := onnx.MLP([]onnx.Dense{layer(16, 32, true), layer(32, 4, false)}, onnx.MLPOptions{Hidden: onnx.Relu, Output: onnx.Softmax})
	if err != nil {
		t.Fatal(err)
	}
	wide := family{"wide", model, 16}
	for _, mode := range []string{quant.Static, quant.Dynamic} {
		got := quantize(wide, quant.Options{Mode: mode})
		perChannel := 0
		for _, scales := range got {
			if scales == 32 {
				perChannel++
			} else if scales != 1 {
				t.Errorf("wide %s: a weight has %d scales", mode, scales)
			}
		}
		if perChannel != 1 || len(got) != 2 {
			t.Errorf("wide %s: weight scales %v, want the wide layer per channel (32) and the other per tensor", mode, got)
		}
		for op, scales := range quantize(wide, quant.Options{Mode: mode, PerTensor: true}) {
			if scales != 1 {
				t.Errorf("wide %s per tensor: %s has %d weight scales", mode, op, scales)
			}
		}
	}
	if _, err := quant.Quantize(model, quant.Options{Mode: quant.Dynamic, PerTensor: true, PerChannel: true}); !errors.Is(err, quant.ErrOptions) {
		t.Errorf("per tensor and per channel together: %v, want ErrOptions", err)
	}
}
