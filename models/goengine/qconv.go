package goengine

import (
	"fmt"
	"math"
)

// The quantized convolutions onnxruntime.quantization writes for CNNs:
// ConvInteger (dynamic) and QLinearConv (QOperator). Both run as im2col
// then a product per group, like conv, but on zero-point-shifted integers
// summed exactly in int32, as MatMulInteger is.

// integerConv is Σ (x − xz)·(w − wz[m]) over each output's window, in
// int32, for x [N, C, (H,) W] by w [M, C/group, (kH,) kW], xz one value
// and wz one or one per output channel; the padding is x's zero point (a
// shifted 0), as ONNX Runtime pads. emit receives the sums of output
// batch b, channel oc, to store.
func (n *node) integerConv(x, w tensor, xz, wz []float32, emit func(b, oc int, acc []int32)) ([]int, error) {
	if len(x.shape) < 3 || len(w.shape) != len(x.shape) {
		return nil, fmt.Errorf("%w: %s of %v by %v", ErrInput, n.op, x.shape, w.shape)
	}
	groups := 1
	if a, ok := n.attrs["group"]; ok {
		groups = int(a.GetI())
	}
	batch, c, m := x.shape[0], x.shape[1], w.shape[0]
	if groups < 1 || c%groups != 0 || m%groups != 0 || w.shape[1] != c/groups {
		return nil, fmt.Errorf("%w: %s of %v by %v in %d groups", ErrInput, n.op, x.shape, w.shape, groups)
	}
	if len(wz) > 1 && len(wz) != m {
		return nil, fmt.Errorf("%w: %s w zero point of %d values for %d outputs", ErrInput, n.op, len(wz), m)
	}
	g, err := n.geometry(x.shape[2:], w.shape[2:], false)
	if err != nil {
		return nil, err
	}
	cg, mg := c/groups, m/groups
	k := cg * g.kH * g.kW
	p := g.outH * g.outW
	shape := n.convShape(x.shape, m, g)
	scratch := n.ints32(k*p + p)
	col, acc := scratch[:k*p], scratch[k*p:]
	x0 := int32(pick(xz, 0, 0))
	inPlane := g.inH * g.inW
	for b := range batch {
		for grp := range groups {
			// col[(ci, kh, kw), (oh, ow)] = x[b, grp·cg + ci, ih, iw] − xz, 0 in the padding.
			for ci := range cg {
				plane := x.data[((b*c)+grp*cg+ci)*inPlane : ((b*c)+grp*cg+ci+1)*inPlane]
				for kh := range g.kH {
					for kw := range g.kW {
						row := col[((ci*g.kH+kh)*g.kW+kw)*p : ((ci*g.kH+kh)*g.kW+kw+1)*p]
						for oh := range g.outH {
							ih := oh*g.strH - g.padT + kh*g.dilH
							dst := row[oh*g.outW : (oh+1)*g.outW]
							if ih < 0 || ih >= g.inH {
								clear(dst)
								continue
							}
							src := plane[ih*g.inW : (ih+1)*g.inW]
							for ow := range dst {
								iw := ow*g.strW - g.padL + kw*g.dilW
								if iw < 0 || iw >= g.inW {
									dst[ow] = 0
								} else {
									dst[ow] = int32(src[iw]) - x0
								}
							}
						}
					}
				}
			}
			for mo := range mg {
				oc := grp*mg + mo
				clear(acc)
				w0 := int32(pick(wz, oc, 0))
				for kk, wv := range w.data[oc*k : (oc+1)*k] {
					wi := int32(wv) - w0
					if wi == 0 {
						continue
					}
					cr := col[kk*p : (kk+1)*p]
					cr = cr[:len(acc)]
					for i := range acc {
						acc[i] += wi * cr[i]
					}
				}
				emit(b, oc, acc)
			}
		}
	}
	return shape, nil
}

// convInteger is ConvInteger: the int32 sums, as float32 values.
func (n *node) convInteger(x tensor, get func(string) (tensor, error)) (tensor, error) {
	w, err := get(n.in[1])
	if err != nil {
		return tensor{}, err
	}
	xz, err := zeroPoint(n, get, 2, 1)
	if err != nil {
		return tensor{}, err
	}
	var wz []float32
	if len(w.shape) > 0 {
		if wz, err = zeroPoint(n, get, 3, w.shape[0]); err != nil {
			return tensor{}, err
		}
	}
	var out []float32
	shape, err := n.integerConv(x, w, xz, wz, func(b, oc int, acc []int32) {
		if out == nil {
			out = n.buffer(0, size(n.shapes[0]))
		}
		dst := out[(b*w.shape[0]+oc)*len(acc):]
		for i, v := range acc {
			dst[i] = float32(v)
		}
	})
	if err != nil {
		return tensor{}, err
	}
	if out == nil { // no outputs at all: an empty batch
		out = n.buffer(0, size(shape))
	}
	return tensor{shape: shape, data: out, kind: 'l'}, nil
}

// qlinearConv is QLinearConv: the int32 sums plus the int32 bias,
// requantized to y's scale and zero point with x_scale·w_scale/y_scale in
// float32 and rounding half to even, as ONNX Runtime requantizes. The
// bias travels in float32 like every value: exact below 2^24.
func (n *node) qlinearConv(x tensor, get func(string) (tensor, error)) (tensor, error) {
	var t [7]tensor // x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp
	for i := range t {
		v, err := get(n.in[i+1])
		if err != nil {
			return tensor{}, err
		}
		t[i] = v
	}
	xs, xz, w, ws, wz, ys, yz := t[0], t[1], t[2], t[3], t[4], t[5], t[6]
	if len(w.shape) == 0 {
		return tensor{}, fmt.Errorf("%w: QLinearConv weight of shape %v", ErrInput, w.shape)
	}
	m := w.shape[0]
	if len(xs.data) != 1 || len(ys.data) != 1 || len(xz.data) != 1 || len(yz.data) != 1 {
		return tensor{}, fmt.Errorf("%w: QLinearConv x and y scales and zero points must be per tensor", ErrUnsupported)
	}
	if len(ws.data) != 1 && len(ws.data) != m || len(wz.data) != 1 && len(wz.data) != m {
		return tensor{}, fmt.Errorf("%w: QLinearConv w scale of %d and zero point of %d values for %d outputs", ErrInput, len(ws.data), len(wz.data), m)
	}
	bias, err := n.bias(get, 8, m)
	if err != nil {
		return tensor{}, err
	}
	lo, hi := float32(0), float32(255)
	if yz.kind == 'i' {
		lo, hi = -128, 127
	}
	var out []float32
	shape, err := n.integerConv(x, w, xz.data, wz.data, func(b, oc int, acc []int32) {
		if out == nil {
			out = n.buffer(0, size(n.shapes[0]))
		}
		var add int32
		if bias != nil {
			add = int32(bias[oc])
		}
		scale := xs.data[0] * pick(ws.data, oc, 0) / ys.data[0]
		dst := out[(b*m+oc)*len(acc):]
		for i, v := range acc {
			q := float32(math.RoundToEven(float64(float32(v+add)*scale))) + yz.data[0]
			dst[i] = min(max(q, lo), hi)
		}
	})
	if err != nil {
		return tensor{}, err
	}
	if out == nil {
		out = n.buffer(0, size(shape))
	}
	return tensor{shape: shape, data: out, kind: yz.kind}, nil
}
