package conformance

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/outpost-edge/outpost/models/goengine"
	"github.com/outpost-edge/outpost/models/onnx"
	"github.com/outpost-edge/outpost/models/onnx/onnxpb"
	"github.com/outpost-edge/outpost/models/ort"
)

// qdqConv is one Conv in the QDQ form: its shapes, attributes and the
// quantization parameters onnxruntime.quantization's static QDQ mode
// would have calibrated.
type qdqConv struct {
	name   string
	in     []int64 // [C, (H,) W], without the batch
	w      []int64 // [M, C/group, k...]
	out    int     // values per row of the flattened output
	attrs  []A
	act    onnxpb.TensorProto_DataType // activations: UINT8 or INT8
	xs, ys float32
	xz, yz int
	ws     []float32 // one (per tensor) or M (per output channel)
	wlo    int       // int8 weights are drawn from [wlo, -wlo]
	// saturates: full 8-bit weights, where ONNX Runtime's x86 int8
	// kernels add pairs of products in int16 and saturate (measured: tens
	// of output steps off); the pure-Go engine is held to the spec's
	// integer reference, and ONNX Runtime's difference is logged, not
	// bounded.
	saturates bool
	// The quantized weights and bias model drew.
	wq   []int
	bias []int32
}

// model writes the graph as the QDQ quantizer does: QuantizeLinear →
// DequantizeLinear on the input, DequantizeLinear of int8 weights
// (axis 0 when per channel) and of an int32 bias (scale xs·ws, zero point
// 0), a float Conv, and QuantizeLinear → DequantizeLinear on its output.
// The rows are fed in their real shape [N, C, (H,) W].
func (c *qdqConv) model(t *testing.T, rng *rand.Rand) []byte {
	t.Helper()
	m := c.w[0]
	perChannel := len(c.ws) > 1
	var axis []A
	if perChannel {
		axis = []A{{Name: "axis", Value: int64(0)}}
	}
	bs := make([]float32, len(c.ws))
	for i, s := range c.ws {
		bs[i] = c.xs * s
	}
	dims := []onnx.Dim{"N"}
	for _, d := range c.in {
		dims = append(dims, int(d))
	}
	wdims := []int64{}
	if perChannel {
		wdims = []int64{m}
	}
	g := onnx.NewGraph("qdqconv").Input("x", dims...).
		Initializer("xs", []float32{c.xs}).Initializer("ys", []float32{c.ys}).
		Initializer("ws", c.ws, wdims...).Initializer("bs", bs, wdims...).
		Node("QuantizeLinear", []string{"x", "xs", "xz"}, []string{"xq"}).
		Node("DequantizeLinear", []string{"xq", "xs", "xz"}, []string{"xd"}).
		Node("DequantizeLinear", []string{"wq", "ws", "wz"}, []string{"wd"}, axis...).
		Node("DequantizeLinear", []string{"bq", "bs", "bz"}, []string{"bd"}, axis...).
		Node("Conv", []string{"xd", "wd", "bd"}, []string{"c"}, c.attrs...).
		Node("QuantizeLinear", []string{"c", "ys", "yz"}, []string{"cq"}).
		Node("DequantizeLinear", []string{"cq", "ys", "yz"}, []string{"cd"}).
		Node("Flatten", []string{"cd"}, []string{"y"})
	model, err := g.Output("y", "N", c.out).Model("qdq")
	if err != nil {
		t.Fatal(err)
	}
	model = bytesInit(t, model, "xz", c.act, []int{c.xz})
	model = bytesInit(t, model, "yz", c.act, []int{c.yz})
	c.wq = ranged(rng, int(size64(c.w)), c.wlo, -c.wlo)
	model = bytesInit(t, model, "wq", onnxpb.TensorProto_INT8, c.wq, c.w...)
	zeros := make([]int, len(c.ws))
	model = bytesInit(t, model, "wz", onnxpb.TensorProto_INT8, zeros, wdims...)
	bias := make([]int32, m)
	for i := range bias {
		bias[i] = int32(rng.IntN(4001) - 2000)
	}
	c.bias = bias
	model = int32Init(t, model, "bq", bias, m)
	return int32Init(t, model, "bz", make([]int32, len(c.ws)), wdims...)
}

// quantize is QuantizeLinear of one value: round half to even, plus the
// zero point, saturated to the type.
func quantize(v float64, scale float32, zero int, dt onnxpb.TensorProto_DataType) int {
	q := math.RoundToEven(v/float64(scale)) + float64(zero)
	lo, hi := 0.0, 255.0
	if dt == onnxpb.TensorProto_INT8 {
		lo, hi = -128, 127
	}
	return int(min(max(q, lo), hi))
}

// reference is the spec's answer for one batch of rows x, in exact
// integer arithmetic: quantize x, sum (xq - xz)·wq over each output's
// window in int64, add the bias, scale by xs·ws, quantize with ys and
// dequantize; the output flattened as [N, M, spatial...].
func (c *qdqConv) reference(x []float32, batch int) []float64 {
	attr := func(name string, def int64, n int) []int64 {
		for _, a := range c.attrs {
			if a.Name == name {
				if v, ok := a.Value.([]int64); ok {
					return v
				}
				return []int64{a.Value.(int64)}
			}
		}
		out := make([]int64, n)
		for i := range out {
			out[i] = def
		}
		return out
	}
	sp := len(c.in) - 1
	group := attr("group", 1, 1)[0]
	pads, strides, dil := attr("pads", 0, 2*sp), attr("strides", 1, sp), attr("dilations", 1, sp)
	cin, m, cg := c.in[0], c.w[0], c.w[1]
	in, k := c.in[1:], c.w[2:]
	outDims := make([]int64, sp)
	for d := range sp {
		outDims[d] = (in[d]+pads[d]+pads[d+sp]-dil[d]*(k[d]-1)-1)/strides[d] + 1
	}
	// Spatial positions as 1 or 2 dims: a 1-D conv is H = 1.
	oh, ow, ih, iw, kh, kw := int64(1), outDims[sp-1], int64(1), in[sp-1], int64(1), k[sp-1]
	ph, pw, sh, sw, dh, dw := int64(0), pads[sp-1], int64(1), strides[sp-1], int64(1), dil[sp-1]
	if sp == 2 {
		oh, ih, kh, ph, sh, dh = outDims[0], in[0], k[0], pads[0], strides[0], dil[0]
	}
	row := cin * ih * iw
	var out []float64
	for n := range int64(batch) {
		for o := range m {
			g := o / (m / group)
			ws := c.ws[0]
			if len(c.ws) > 1 {
				ws = c.ws[o]
			}
			for y := range oh {
				for xo := range ow {
					acc := int64(c.bias[o])
					for ci := range cg {
						ch := g*cg + ci
						for a := range kh {
							for b := range kw {
								yy, xx := y*sh-ph+a*dh, xo*sw-pw+b*dw
								if yy < 0 || yy >= ih || xx < 0 || xx >= iw {
									continue
								}
								v := x[n*row+(ch*ih+yy)*iw+xx]
								xq := quantize(float64(v), c.xs, c.xz, c.act)
								acc += int64(xq-c.xz) * int64(c.wq[((o*cg+ci)*kh+a)*kw+b])
							}
						}
					}
					real := float64(acc) * float64(c.xs) * float64(ws)
					out = append(out, float64(c.ys)*float64(quantize(real, c.ys, c.yz, c.act)-c.yz))
				}
			}
		}
	}
	return out
}

// TestQDQConvAgreesWithONNXRuntime: a float Conv whose input and weights
// go through QuantizeLinear → DequantizeLinear (with an int32 bias and
// QuantizeLinear → DequantizeLinear on its output), the form
// onnxruntime.quantization's QDQ format writes for CNNs, gives on the
// pure-Go engine what ONNX Runtime gives, within one quantization step
// of the output scale: ONNX Runtime fuses the pattern into QLinearConv
// and requantizes its int32 sums with its own rounding, where the Go
// engine runs the float Conv of the dequantized values and quantizes its
// result; a value at a rounding boundary may land one step apart.
//
// Every case also checks both against the spec's answer computed here in
// exact integer arithmetic (reference): the Go engine is always within a
// step of it (measured ≤ 1.2e-7: float32 rounding of the dequantized
// values), and so is ONNX Runtime with 7-bit weights.
//
// Cases: u8 activations with s8 weights (the quantizer's long-standing
// default) and s8×s8 (QInt8 activations), per tensor and per output
// channel, 1-D and 2-D, pads, strides, dilations, groups. Weights are
// 7-bit ([-63, 63]), as in qconv_test.go, where ONNX Runtime and the Go
// engine agree within one output step (measured: exactly, or one step on
// a rounding boundary); with full 8-bit weights ONNX Runtime 1.24 on x86
// is 20 to 24 steps from the spec (saturates), which is logged.
func TestQDQConvAgreesWithONNXRuntime(t *testing.T) {
	engines(t)
	rng := rand.New(rand.NewPCG(17, 17))
	u8, s8 := onnxpb.TensorProto_UINT8, onnxpb.TensorProto_INT8
	cases := []qdqConv{
		{name: "2-D u8×s8 per tensor, pads, strides", in: []int64{3, 8, 8}, w: []int64{4, 3, 3, 3}, out: 4 * 4 * 4,
			attrs: []A{{Name: "pads", Value: []int64{1, 1, 1, 1}}, {Name: "strides", Value: []int64{2, 2}}},
			act:   u8, xs: 0.008, xz: 128, ys: 0.02, yz: 120, ws: []float32{0.004}, wlo: -63},
		{name: "2-D u8×s8 per channel, groups, full 8-bit weights", in: []int64{4, 6, 6}, w: []int64{6, 2, 3, 3}, out: 6 * 6 * 6,
			attrs: []A{{Name: "pads", Value: []int64{1, 1, 1, 1}}, {Name: "group", Value: int64(2)}},
			act:   u8, xs: 0.008, xz: 128, ys: 0.015, yz: 128, ws: []float32{0.002, 0.003, 0.0025, 0.004, 0.0015, 0.003}, wlo: -128,
			saturates: true},
		{name: "2-D u8×s8 per channel, groups", in: []int64{4, 6, 6}, w: []int64{6, 2, 3, 3}, out: 6 * 6 * 6,
			attrs: []A{{Name: "pads", Value: []int64{1, 1, 1, 1}}, {Name: "group", Value: int64(2)}},
			act:   u8, xs: 0.008, xz: 128, ys: 0.015, yz: 128, ws: []float32{0.002, 0.003, 0.0025, 0.004, 0.0015, 0.003}, wlo: -63},
		{name: "2-D s8×s8 per channel, pads", in: []int64{3, 6, 6}, w: []int64{4, 3, 3, 3}, out: 4 * 6 * 6,
			attrs: []A{{Name: "pads", Value: []int64{1, 1, 1, 1}}},
			act:   s8, xs: 0.008, xz: -2, ys: 0.02, yz: 3, ws: []float32{0.003, 0.004, 0.002, 0.005}, wlo: -63},
		{name: "2-D s8×s8 per channel, pads, full 8-bit weights", in: []int64{3, 6, 6}, w: []int64{4, 3, 3, 3}, out: 4 * 6 * 6,
			attrs: []A{{Name: "pads", Value: []int64{1, 1, 1, 1}}},
			act:   s8, xs: 0.008, xz: -2, ys: 0.02, yz: 3, ws: []float32{0.003, 0.004, 0.002, 0.005}, wlo: -127, saturates: true},
		{name: "1-D u8×s8 per tensor, dilations, strides", in: []int64{3, 20}, w: []int64{5, 3, 3}, out: 5 * 8,
			attrs: []A{{Name: "dilations", Value: []int64{2}}, {Name: "strides", Value: []int64{2}}},
			act:   u8, xs: 0.008, xz: 128, ys: 0.02, yz: 128, ws: []float32{0.005}, wlo: -63},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c := &c
			model := c.model(t, rng)
			ref, err := ort.NewSession(model)
			if err != nil {
				t.Fatal(err)
			}
			defer ref.Close()
			eng, err := goengine.Load(model)
			if err != nil {
				t.Fatal(err)
			}
			row := int(size64(c.in))
			// One output step, with float32 slack for the dequantized
			// values themselves.
			bound := float64(c.ys) * (1 + 1e-5)
			var worst, worstSpec, ortSpec float64
			apart, total := 0, 0
			for _, batch := range []int{1, 4} {
				x := weights(rng, batch*row)
				feeds := []onnx.Feed{{Name: "x", Shape: append([]int64{int64(batch)}, c.in...), Data: x}}
				want, err := ref.RunFeeds(feeds)
				if err != nil {
					t.Fatal(err)
				}
				got, err := eng.RunFeeds(feeds)
				if err != nil {
					t.Fatalf("batch %d: %v", batch, err)
				}
				if len(got) != len(want) || len(want) != batch*c.out {
					t.Fatalf("batch %d: %d values, onnxruntime %d, want %d", batch, len(got), len(want), batch*c.out)
				}
				spec := c.reference(x, batch)
				if len(spec) != len(want) {
					t.Fatalf("batch %d: the reference gives %d values, onnxruntime %d", batch, len(spec), len(want))
				}
				for i := range want {
					// The Go engine is within a step of the spec's integer
					// answer, always.
					ds := math.Abs(float64(got[i]) - spec[i])
					if !(ds <= bound) {
						t.Fatalf("batch %d value %d: go %v, the spec's integer reference %v: %.3g apart, more than one step %g", batch, i, got[i], spec[i], ds, c.ys)
					}
					worstSpec = max(worstSpec, ds)
					ortSpec = max(ortSpec, math.Abs(float64(want[i])-spec[i]))
					d := math.Abs(float64(got[i] - want[i]))
					if c.saturates {
						worst = max(worst, d)
						continue
					}
					if !(d <= bound) {
						t.Fatalf("batch %d value %d: go %v, onnxruntime %v: %.3g apart, more than one step %g", batch, i, got[i], want[i], d, c.ys)
					}
					if d > float64(c.ys)/2 {
						apart++
					}
					worst = max(worst, d)
				}
				total += len(want)
				// A check worth its name: the outputs are spread over many
				// steps, and few sit at the type's limits.
				lo, hi := quantize(math.Inf(-1), 1, 0, c.act), quantize(math.Inf(1), 1, 0, c.act)
				clipped := 0
				for _, v := range spec {
					if q := quantize(v, c.ys, c.yz, c.act); q == lo || q == hi {
						clipped++
					}
				}
				if distinct := len(slices.Compact(slices.Sorted(slices.Values(want)))); distinct < 20 || clipped > len(spec)/20 {
					t.Fatalf("batch %d: %d distinct values, %d of %d saturated: the case tests little", batch, distinct, clipped, len(spec))
				}
			}
			t.Logf("max abs error against onnxruntime %.3g (output step %g), %d of %d values one step apart; "+
				"go against the integer reference %.3g, onnxruntime against it %.3g", worst, c.ys, apart, total, worstSpec, ortSpec)
			if c.saturates && ortSpec > bound {
				t.Logf("onnxruntime is %.3g (%.0f steps) from the spec here, with full 8-bit weights (int16 saturation in its x86 int8 kernels, as in qconv_test.go)", ortSpec, ortSpec/float64(c.ys))
			}
		})
	}
}
