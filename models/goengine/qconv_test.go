package goengine

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/outpost-edge/outpost/models/onnx/onnxpb"
)

// qconvNode is a QLinearConv or ConvInteger node over the named values
// vals holds, with integer attributes.
func qconvNode(op string, in []string, attrs map[string][]int64) *node {
	n := &node{op: op, in: in, out: []string{"y"}, attrs: map[string]*onnxpb.AttributeProto{}}
	for name, v := range attrs {
		a := &onnxpb.AttributeProto{Name: &name, Ints: v}
		if name == "group" {
			a = &onnxpb.AttributeProto{Name: &name, I: &v[0]}
		}
		n.attrs[name] = a
	}
	return n
}

func getter(vals map[string]tensor) func(string) (tensor, error) {
	return func(name string) (tensor, error) {
		if t, ok := vals[name]; ok {
			return t, nil
		}
		return tensor{}, fmt.Errorf("%w: %s", ErrModel, name)
	}
}

func ints8(rng *rand.Rand, n, lo, hi int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(lo + rng.IntN(hi-lo+1))
	}
	return v
}

// directConv is the spec's sum for output (b, oc, oh, ow), by its
// definition: no im2col.
func directConv(x, w tensor, xz float32, wz []float32, groups, stride, dil, pad, b, oc, oh, ow int) int32 {
	c, m, h, wd := x.shape[1], w.shape[0], x.shape[2], x.shape[3]
	cg, kh, kw := w.shape[1], w.shape[2], w.shape[3]
	grp := oc / (m / groups)
	var acc int32
	for ci := range cg {
		for i := range kh {
			for j := range kw {
				ih, iw := oh*stride-pad+i*dil, ow*stride-pad+j*dil
				if ih < 0 || ih >= h || iw < 0 || iw >= wd {
					continue
				}
				xv := int32(x.data[((b*c+grp*cg+ci)*h+ih)*wd+iw]) - int32(xz)
				wv := int32(w.data[((oc*cg+ci)*kh+i)*kw+j]) - int32(wz[oc])
				acc += xv * wv
			}
		}
	}
	return acc
}

// TestQuantizedConvByDefinition: QLinearConv and ConvInteger with uint8
// weights of a different zero point per output channel (which ONNX
// Runtime refuses, so the conformance suite cannot check them), groups,
// pads, strides and dilations, against the spec's sum written out.
func TestQuantizedConvByDefinition(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 5))
	const groups, stride, dil, pad = 2, 2, 2, 2
	x := tensor{shape: []int{2, 4, 7, 6}, data: ints8(rng, 2*4*7*6, 0, 255), kind: 'u'}
	w := tensor{shape: []int{6, 2, 3, 2}, data: ints8(rng, 6*2*3*2, 0, 255), kind: 'u'}
	wz := []float32{0, 128, 255, 7, 100, 131}
	ws := []float32{0.001, 0.002, 0.0015, 0.003, 0.0005, 0.001}
	bias := []float32{1000, -2000, 0, 30000, -5, 77}
	vals := map[string]tensor{"x": x, "w": w,
		"xs": {shape: []int{}, data: []float32{0.01}}, "xz": {shape: []int{}, data: []float32{131}, kind: 'u'},
		"ws": {shape: []int{6}, data: ws}, "wz": {shape: []int{6}, data: wz, kind: 'u'},
		"ys": {shape: []int{}, data: []float32{0.5}}, "yz": {shape: []int{}, data: []float32{120}, kind: 'u'},
		"b": {shape: []int{6}, data: bias, kind: 'l'}}
	attrs := map[string][]int64{"group": {groups}, "strides": {stride, stride}, "dilations": {dil, dil}, "pads": {pad, pad, pad, pad}}
	// Output: (7 + 4 − 5)/2 + 1 = 4 rows, (6 + 4 − 3)/2 + 1 = 4 columns.
	outH, outW := 4, 4
	for _, op := range []string{"ConvInteger", "QLinearConv"} {
		t.Run(op, func(t *testing.T) {
			n := qconvNode(op, []string{"x", "w", "xz", "wz"}, attrs)
			run := n.convInteger
			if op == "QLinearConv" {
				n = qconvNode(op, []string{"x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"}, attrs)
				run = n.qlinearConv
			}
			got, err := run(x, getter(vals))
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got.shape) != fmt.Sprint([]int{2, 6, outH, outW}) {
				t.Fatalf("shape %v", got.shape)
			}
			saturated := 0
			for i, v := range got.data {
				ow, oh := i%outW, i/outW%outH
				oc, b := i/(outW*outH)%6, i/(outW*outH*6)
				acc := directConv(x, w, 131, wz, groups, stride, dil, pad, b, oc, oh, ow)
				want := float32(acc)
				if op == "QLinearConv" {
					q := math.RoundToEven(float64(float32(acc+int32(bias[oc])) * (0.01 * ws[oc] / 0.5)))
					want = float32(min(max(q+120, 0), 255))
					if want == 0 || want == 255 {
						saturated++
					}
				}
				if v != want {
					t.Fatalf("value %d (batch %d, channel %d, %d×%d): %v, by definition %v", i, b, oc, oh, ow, v, want)
				}
			}
			if saturated > len(got.data)/4 {
				t.Fatalf("%d of %d values saturated: the case tests little", saturated, len(got.data))
			}
		})
	}
}

// TestQuantizedConvRefuses: what the kernels cannot run is an error of
// the engine's kind, not a panic or a wrong answer.
func TestQuantizedConvRefuses(t *testing.T) {
	x := tensor{shape: []int{1, 2, 5}, data: make([]float32, 10), kind: 'u'}
	one := func(v float32) tensor { return tensor{shape: []int{}, data: []float32{v}} }
	base := map[string]tensor{"x": x, "w": {shape: []int{3, 2, 2}, data: make([]float32, 12), kind: 'i'},
		"xs": one(0.1), "xz": one(0), "ws": one(0.1), "wz": one(0), "ys": one(0.1), "yz": one(0),
		"b": {shape: []int{3}, data: make([]float32, 3), kind: 'l'}}
	in := []string{"x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"}
	for _, tc := range []struct {
		name    string
		op      string
		replace map[string]tensor
		want    error
	}{
		{"x scale per channel", "QLinearConv", map[string]tensor{"xs": {shape: []int{2}, data: []float32{1, 2}}}, ErrUnsupported},
		{"w scale of 2 for 3 outputs", "QLinearConv", map[string]tensor{"ws": {shape: []int{2}, data: []float32{1, 2}}}, ErrInput},
		{"bias of 2 for 3 outputs", "QLinearConv", map[string]tensor{"b": {shape: []int{2}, data: []float32{1, 2}}}, ErrInput},
		{"weight of another rank", "QLinearConv", map[string]tensor{"w": {shape: []int{3, 2, 1, 2}, data: make([]float32, 12)}}, ErrInput},
		{"channels not in groups", "QLinearConv", map[string]tensor{"w": {shape: []int{3, 1, 2}, data: make([]float32, 6)}}, ErrInput},
		{"kernel past the input", "ConvInteger", map[string]tensor{"w": {shape: []int{1, 2, 6}, data: make([]float32, 12)}}, ErrInput},
		{"x zero point per channel", "ConvInteger", map[string]tensor{"xz": {shape: []int{2}, data: []float32{1, 2}}}, ErrInput},
		{"w zero point of 2 for 3 outputs", "ConvInteger", map[string]tensor{"wz": {shape: []int{2}, data: []float32{1, 2}}}, ErrInput},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vals := map[string]tensor{}
			for k, v := range base {
				vals[k] = v
			}
			for k, v := range tc.replace {
				vals[k] = v
			}
			var err error
			if tc.op == "QLinearConv" {
				_, err = qconvNode(tc.op, in, nil).qlinearConv(x, getter(vals))
			} else {
				_, err = qconvNode(tc.op, []string{"x", "w", "xz", "wz"}, nil).convInteger(x, getter(vals))
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}
