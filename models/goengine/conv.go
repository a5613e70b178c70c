package goengine

import (
	"fmt"
	"math"
)

// window is a Conv's or pool's geometry over one or two spatial axes; a
// 1-D value is read as 2-D with a height of 1.
type window struct {
	inH, inW, kH, kW       int
	padT, padL             int
	strH, strW, dilH, dilW int
	outH, outW             int
}

// geometry reads kernel, strides, dilations and pads (explicit or
// auto_pad) for input spatial dims in.
func (n *node) geometry(in, kernel []int, ceil bool) (window, error) {
	r := len(in)
	if r < 1 || r > 2 || len(kernel) != r {
		return window{}, fmt.Errorf("%w: %s over %d spatial axes with a kernel of %d", ErrUnsupported, n.op, r, len(kernel))
	}
	// Fixed arrays: a run reads its geometry without allocating.
	get := func(name string, def int) ([2]int, error) {
		out := [2]int{def, def}
		if a, ok := n.attrs[name]; ok {
			if len(a.GetInts()) != r {
				return out, fmt.Errorf("%w: %s %s %v for %d axes", ErrInput, n.op, name, a.GetInts(), r)
			}
			for i, v := range a.GetInts() {
				if v < 1 {
					return out, fmt.Errorf("%w: %s %s %v", ErrInput, n.op, name, a.GetInts())
				}
				out[i] = int(v)
			}
		}
		return out, nil
	}
	strides, err := get("strides", 1)
	if err != nil {
		return window{}, err
	}
	dil, err := get("dilations", 1)
	if err != nil {
		return window{}, err
	}
	var pads [4]int
	if a, ok := n.attrs["pads"]; ok {
		if len(a.GetInts()) != 2*r {
			return window{}, fmt.Errorf("%w: %s pads %v for %d axes", ErrInput, n.op, a.GetInts(), r)
		}
		for i, v := range a.GetInts() {
			if v < 0 {
				return window{}, fmt.Errorf("%w: %s pads %v", ErrInput, n.op, a.GetInts())
			}
			pads[i] = int(v)
		}
	}
	var out [2]int
	for i := range r {
		span := dil[i]*(kernel[i]-1) + 1
		switch pad := n.str("auto_pad", "NOTSET"); pad {
		case "SAME_UPPER", "SAME_LOWER":
			o := (in[i] + strides[i] - 1) / strides[i]
			total := max((o-1)*strides[i]+span-in[i], 0)
			pads[i], pads[i+r] = total/2, total-total/2
			if pad == "SAME_LOWER" {
				pads[i], pads[i+r] = total-total/2, total/2
			}
		case "VALID":
			pads[i], pads[i+r] = 0, 0
		case "NOTSET":
		default:
			return window{}, fmt.Errorf("%w: %s auto_pad %s", ErrUnsupported, n.op, pad)
		}
		full := in[i] + pads[i] + pads[i+r] - span
		if full < 0 {
			return window{}, fmt.Errorf("%w: %s kernel %v larger than input %v", ErrInput, n.op, kernel, in)
		}
		out[i] = full/strides[i] + 1
		if ceil && full%strides[i] != 0 {
			out[i]++
			if (out[i]-1)*strides[i] >= in[i]+pads[i] { // a last window starting in the padding
				out[i]--
			}
		}
	}
	w := window{inH: 1, inW: in[r-1], kH: 1, kW: kernel[r-1], strH: 1, strW: strides[r-1], dilH: 1, dilW: dil[r-1],
		padL: pads[r-1], outH: 1, outW: out[r-1]}
	if r == 2 {
		w.inH, w.kH, w.strH, w.dilH, w.padT, w.outH = in[0], kernel[0], strides[0], dil[0], pads[0], out[0]
	}
	return w, nil
}

// conv runs Conv as im2col then a matrix product per group: blocks of
// memory walked in order, into buffers reused across runs.
func (n *node) conv(x tensor, get func(string) (tensor, error)) (tensor, error) {
	w, err := get(n.in[1])
	if err != nil {
		return tensor{}, err
	}
	if n.q != nil {
		return n.qconv(w, get)
	}
	if len(x.shape) < 3 || len(w.shape) != len(x.shape) {
		return tensor{}, fmt.Errorf("%w: Conv of %v by %v", ErrInput, x.shape, w.shape)
	}
	groups := 1
	if a, ok := n.attrs["group"]; ok {
		groups = int(a.GetI())
	}
	batch, c, m := x.shape[0], x.shape[1], w.shape[0]
	if groups < 1 || c%groups != 0 || m%groups != 0 || w.shape[1] != c/groups {
		return tensor{}, fmt.Errorf("%w: Conv of %v by %v in %d groups", ErrInput, x.shape, w.shape, groups)
	}
	g, err := n.geometry(x.shape[2:], w.shape[2:], false)
	if err != nil {
		return tensor{}, err
	}
	bias, err := n.bias(get, 2, m)
	if err != nil {
		return tensor{}, err
	}
	cg, mg := c/groups, m/groups
	k := cg * g.kH * g.kW
	p := g.outH * g.outW
	shape := n.convShape(x.shape, m, g)
	out := tensor{shape: shape, data: n.buffer(0, batch*m*p)}
	col := n.buffer(1, k*p)
	colp := n.buffer(2, packedLen(k, p))
	inPlane := g.inH * g.inW
	for b := range batch {
		for grp := range groups {
			// col[(ci, kh, kw), (oh, ow)] = x[b, grp·cg + ci, ih, iw], 0 in the padding.
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
									dst[ow] = src[iw]
								}
							}
						}
					}
				}
			}
			// out[b, grp·mg + mo, :] = bias + W[mo, :] · col, with col packed
			// for the float kernel (a copy of k·p values against mg·k·p
			// multiply-adds).
			packB(colp, col, k, p, false)
			dst := out.data[(b*m+grp*mg)*p : (b*m+grp*mg+mg)*p]
			for mo := range mg {
				init := float32(0)
				if bias != nil {
					init = bias[grp*mg+mo]
				}
				row := dst[mo*p : (mo+1)*p]
				for i := range row {
					row[i] = init
				}
			}
			kern.dense(dst, p, w.data[grp*mg*k:(grp+1)*mg*k], mg, k, colp, p, 1)
		}
	}
	return out, nil
}

// bias reads input i, a Conv's bias of m values, or nil when absent.
func (n *node) bias(get func(string) (tensor, error), i, m int) ([]float32, error) {
	if len(n.in) <= i || n.in[i] == "" {
		return nil, nil
	}
	b, err := get(n.in[i])
	if err != nil {
		return nil, err
	}
	if len(b.data) != m {
		return nil, fmt.Errorf("%w: %s bias of %d for %d outputs", ErrInput, n.op, len(b.data), m)
	}
	return b.data, nil
}

// convShape is the output shape of a Conv of input shape in to m
// channels over window g, kept as the node's output shape.
func (n *node) convShape(in []int, m int, g window) []int {
	shape := append(n.dims(0, in[0], m), in[2:]...)
	shape[2] = g.outH
	if len(in) == 4 {
		shape[3] = g.outW
	} else {
		shape[2] = g.outW
	}
	n.shapes[0] = shape
	return shape
}

// qconv is a statically quantized Conv (fuse found the QDQ pattern) in
// integer arithmetic: each output position's window of the int8 input,
// shifted by its zero point (the padding is the zero point: a float 0),
// as one row of C·kH·kW values, times the packed int8 weights, summed in
// int32 and scaled back to float, plus the bias. w is the folded float
// weight, for its shape.
func (n *node) qconv(w tensor, get func(string) (tensor, error)) (tensor, error) {
	q := n.q
	x, err := get(q.xq)
	if err != nil {
		return tensor{}, err
	}
	if len(x.shape) < 3 || len(w.shape) != len(x.shape) || x.shape[1] != w.shape[1] || w.shape[0] != q.out {
		return tensor{}, fmt.Errorf("%w: Conv of %v by %v", ErrInput, x.shape, w.shape)
	}
	g, err := n.geometry(x.shape[2:], w.shape[2:], false)
	if err != nil {
		return tensor{}, err
	}
	batch, c, m := x.shape[0], x.shape[1], q.out
	bias, err := n.bias(get, 2, m)
	if err != nil {
		return tensor{}, err
	}
	k, p := q.in, g.outH*g.outW
	shape := n.convShape(x.shape, m, g)
	out := tensor{shape: shape, data: n.buffer(0, batch*m*p)}
	if cap(q.xs) < p*k {
		q.xs = make([]int64, p*k)
	}
	rows := q.xs[:p*k]
	acc := q.scratch()
	inPlane := g.inH * g.inW
	zx := int64(q.zx)
	for b := range batch {
		// rows[(oh, ow), (ci, kh, kw)] = x[b, ci, ih, iw] − zx, 0 in the padding.
		for ci := range c {
			plane := x.data[(b*c+ci)*inPlane : (b*c+ci+1)*inPlane]
			for kh := range g.kH {
				for kw := range g.kW {
					kk := (ci*g.kH+kh)*g.kW + kw
					for oh := range g.outH {
						ih := oh*g.strH - g.padT + kh*g.dilH
						for ow := range g.outW {
							iw := ow*g.strW - g.padL + kw*g.dilW
							v := int64(0)
							if ih >= 0 && ih < g.inH && iw >= 0 && iw < g.inW {
								v = int64(plane[ih*g.inW+iw]) - zx
							}
							rows[(oh*g.outW+ow)*k+kk] = v
						}
					}
				}
			}
		}
		dst := out.data[b*m*p : (b+1)*m*p]
		for pos := 0; pos < p; {
			r := q.block(rows, pos, p, acc)
			for t := range r {
				sums := acc[t*len(acc) : (t+1)*len(acc)]
				for f := range m {
					if q.bias != nil {
						dst[f*p+pos+t] = float32(sums[f]+q.bias[f]) * q.sx * q.sw[f]
						continue
					}
					v := float32(sums[f]) * q.sx * q.sw[f]
					if bias != nil {
						v += bias[f]
					}
					dst[f*p+pos+t] = v
				}
			}
			pos += r
		}
	}
	return out, nil
}

// pool runs MaxPool and AveragePool over each channel's plane.
func (n *node) pool(x tensor) (tensor, error) {
	if len(x.shape) < 3 {
		return tensor{}, fmt.Errorf("%w: %s of %v", ErrInput, n.op, x.shape)
	}
	var k [2]int
	ks := n.ints("kernel_shape")
	for i, v := range ks[:min(len(ks), 2)] {
		k[i] = int(v)
	}
	if len(ks) > 2 {
		return tensor{}, fmt.Errorf("%w: %s with a kernel of %d axes", ErrUnsupported, n.op, len(ks))
	}
	g, err := n.geometry(x.shape[2:], k[:len(ks)], n.attrs["ceil_mode"].GetI() == 1)
	if err != nil {
		return tensor{}, err
	}
	if n.op == "AveragePool" && (g.dilH != 1 || g.dilW != 1) {
		return tensor{}, fmt.Errorf("%w: AveragePool with dilations", ErrUnsupported)
	}
	includePad := n.attrs["count_include_pad"].GetI() == 1
	planes := x.shape[0] * x.shape[1]
	shape := n.dims(0, x.shape...)
	shape[2] = g.outH
	if len(x.shape) == 4 {
		shape[3] = g.outW
	} else {
		shape[2] = g.outW
	}
	p := g.outH * g.outW
	out := tensor{shape: shape, data: n.buffer(0, planes*p)}
	inPlane := g.inH * g.inW
	for pl := range planes {
		src := x.data[pl*inPlane : (pl+1)*inPlane]
		dst := out.data[pl*p : (pl+1)*p]
		for oh := range g.outH {
			for ow := range g.outW {
				best, sum, count := float32(math.Inf(-1)), float32(0), 0
				for kh := range g.kH {
					ih := oh*g.strH - g.padT + kh*g.dilH
					for kw := range g.kW {
						iw := ow*g.strW - g.padL + kw*g.dilW
						if ih < 0 || ih >= g.inH || iw < 0 || iw >= g.inW {
							continue
						}
						v := src[ih*g.inW+iw]
						best, sum, count = max(best, v), sum+v, count+1
					}
				}
				switch {
				case n.op == "MaxPool":
					dst[oh*g.outW+ow] = best
				case includePad:
					// The whole window counts, even past the padding
					// (ceil_mode), as ONNX Runtime counts it.
					dst[oh*g.outW+ow] = sum / float32(g.kH*g.kW)
				case count > 0:
					dst[oh*g.outW+ow] = sum / float32(count)
				}
			}
		}
	}
	return out, nil
}

// globalPool averages (or takes the max of) each channel's plane.
func (n *node) globalPool(x tensor) (tensor, error) {
	if len(x.shape) < 3 {
		return tensor{}, fmt.Errorf("%w: %s of %v", ErrInput, n.op, x.shape)
	}
	planes, area := x.shape[0]*x.shape[1], size(x.shape[2:])
	shape := n.dims(0, x.shape...)
	for i := 2; i < len(shape); i++ {
		shape[i] = 1
	}
	out := tensor{shape: shape, data: n.buffer(0, planes)}
	for pl := range planes {
		src := x.data[pl*area : (pl+1)*area]
		if n.op == "GlobalMaxPool" {
			best := float32(math.Inf(-1))
			for _, v := range src {
				best = max(best, v)
			}
			out.data[pl] = best
			continue
		}
		var s float64
		for _, v := range src {
			s += float64(v)
		}
		out.data[pl] = float32(s / float64(area))
	}
	return out, nil
}

// batchNorm is BatchNormalization at inference: per channel (axis 1),
// (x − mean) / √(var + ε) · scale + bias.
func (n *node) batchNorm(x tensor, get func(string) (tensor, error)) (tensor, error) {
	if len(n.in) < 5 || len(x.shape) < 2 {
		return tensor{}, fmt.Errorf("%w: BatchNormalization of %v with %d inputs", ErrInput, x.shape, len(n.in))
	}
	if n.attrs["training_mode"].GetI() != 0 {
		return tensor{}, fmt.Errorf("%w: BatchNormalization in training mode", ErrUnsupported)
	}
	eps := float32(1e-5)
	if a, ok := n.attrs["epsilon"]; ok {
		eps = a.GetF()
	}
	c := x.shape[1]
	var p [4][]float32
	for i := range p {
		t, err := get(n.in[i+1])
		if err != nil {
			return tensor{}, err
		}
		if len(t.data) != c {
			return tensor{}, fmt.Errorf("%w: BatchNormalization parameter of %d for %d channels", ErrInput, len(t.data), c)
		}
		p[i] = t.data
	}
	scale, bias, mean, variance := p[0], p[1], p[2], p[3]
	inner := size(x.shape[2:])
	out := tensor{shape: x.shape, data: n.buffer(0, len(x.data))}
	for i := 0; i < len(x.data); i += inner {
		ch := (i / inner) % c
		a := scale[ch] / float32(math.Sqrt(float64(variance[ch]+eps)))
		b := bias[ch] - mean[ch]*a
		src, dst := x.data[i:i+inner], out.data[i:i+inner]
		for j, v := range src {
			dst[j] = v*a + b
		}
	}
	return out, nil
}
