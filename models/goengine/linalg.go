package goengine

import (
	"fmt"
	"math"
)

// gemm runs Gemm (alpha·A·B + beta·C, C broadcast) and MatMul (A may
// have leading batch dimensions, B is a matrix), in integer arithmetic
// when fuse found the quantized pattern.
func (n *node) gemm(a tensor, get func(string) (tensor, error)) (tensor, error) {
	var out tensor
	if n.q != nil {
		xq, err := get(n.q.xq)
		if err != nil {
			return tensor{}, err
		}
		out, err = n.q.run(n, xq, n.alpha)
		if err != nil {
			return tensor{}, err
		}
	} else {
		b, err := get(n.in[1])
		if err != nil {
			return tensor{}, err
		}
		if n.transA {
			if len(a.shape) != 2 {
				return tensor{}, fmt.Errorf("%w: Gemm transA of %v", ErrInput, a.shape)
			}
			a = transpose2(a, n.buffer(1, len(a.data)))
		}
		if out, err = n.matmul(a, b); err != nil {
			return tensor{}, err
		}
	}
	if n.op == "Gemm" && len(n.in) > 2 && n.in[2] != "" {
		c, err := get(n.in[2])
		if err != nil {
			return tensor{}, err
		}
		if n.beta != 1 {
			scaled := n.buffer(2, len(c.data))
			for i, v := range c.data {
				scaled[i] = n.beta * v
			}
			c.data = scaled
		}
		check, err := broadcastShape(n.dims(3), out.shape, c.shape)
		n.shapes[3] = check
		if err != nil || len(c.shape) > 2 || size(c.shape) > size(out.shape) {
			return tensor{}, fmt.Errorf("%w: Gemm bias %v for %v", ErrInput, c.shape, out.shape)
		}
		n.s.broadcast(binaryOps["Add"], out, c, out.shape, out.data) // in place: each element reads only itself
	}
	return out, nil
}

func transpose2(a tensor, dst []float32) tensor {
	r, c := a.shape[0], a.shape[1]
	for i := 0; i < r; i++ {
		for j := 0; j < c; j++ {
			dst[j*r+i] = a.data[i*c+j]
		}
	}
	return tensor{shape: []int{c, r}, data: dst}
}

// matmul multiplies rows of a by the matrix b ([k, n], or [n, k] with
// transB); a of rank 1 is one row and gives a vector.
func (n *node) matmul(a, b tensor) (tensor, error) {
	if len(b.shape) != 2 && !(len(b.shape) == 1 && !n.transB) {
		return tensor{}, fmt.Errorf("%w: MatMul by a value of shape %v", ErrUnsupported, b.shape)
	}
	bs := b.shape
	if len(bs) == 1 {
		bs = []int{bs[0], 1}
	}
	cols, k := bs[1], bs[0]
	if n.transB {
		cols, k = bs[0], bs[1]
	}
	rows := a.rows()
	if a.cols() != k || len(a.shape) == 0 {
		return tensor{}, fmt.Errorf("%w: %v × %v", ErrInput, a.shape, b.shape)
	}
	var shape []int
	switch {
	case len(a.shape) == 1 && len(b.shape) == 1:
		shape = n.dims(0)
	case len(a.shape) == 1:
		shape = n.dims(0, cols)
	case len(b.shape) == 1:
		shape = n.dims(0, a.shape[:len(a.shape)-1]...)
	default:
		shape = append(n.dims(0, a.shape[:len(a.shape)-1]...), cols)
		n.shapes[0] = shape
	}
	out := tensor{shape: shape, data: n.buffer(0, rows*cols)}
	clear(out.data)
	alpha := n.alpha
	for i := 0; i < rows; i++ {
		row := a.data[i*k : (i+1)*k]
		dst := out.data[i*cols : (i+1)*cols]
		if n.transB { // dot products over contiguous rows of b
			for j := range dst {
				br := b.data[j*k : (j+1)*k]
				br = br[:len(row)] // one bounds check, not one per element
				var s float32
				for p, v := range row {
					s += v * br[p]
				}
				dst[j] = alpha * s
			}
			continue
		}
		// b is [k][n]: add row[p]·b[p,:] so both walk memory in order.
		for p, v := range row {
			if v == 0 {
				continue
			}
			br := b.data[p*cols : (p+1)*cols]
			br = br[:len(dst)]
			for j := range dst {
				dst[j] += v * br[j]
			}
		}
		if alpha != 1 {
			for j := range dst {
				dst[j] *= alpha
			}
		}
	}
	return out, nil
}

// qgemm is a Gemm or MatMul the engine runs in integer arithmetic: its
// input is QuantizeLinear → DequantizeLinear (per tensor) and its weight a
// DequantizeLinear of int8 values with per-channel scales and zero points
// of 0, as quant writes them.
type qgemm struct {
	xq     string  // the QuantizeLinear output: int8 values
	sx, zx float32 // its scale and zero point
	w      []int32 // int8 values, [out][in]; int32 so the inner loop needs no conversions
	sw     []float32
	in     int
	xs     []int32 // scratch for the shifted activations
}

// fuse marks the Gemm and MatMul nodes that can run as qgemm.
func (e *Engine) fuse(folded map[string]*node) {
	producer := map[string]*node{}
	for _, n := range e.nodes {
		producer[n.out[0]] = n
	}
	for _, n := range e.nodes {
		if (n.op != "Gemm" && n.op != "MatMul") || len(n.in) < 2 || n.transA {
			continue
		}
		wdq, ok := folded[n.in[1]]
		xdq, ok2 := producer[n.in[0]]
		if !ok || !ok2 || wdq.op != "DequantizeLinear" || xdq.op != "DequantizeLinear" || len(xdq.in) < 2 {
			continue
		}
		if xq, ok := producer[xdq.in[0]]; !ok || xq.op != "QuantizeLinear" {
			continue
		}
		wq, ws := e.consts[wdq.in[0]], e.consts[wdq.in[1]]
		sx := e.consts[xdq.in[1]]
		if wq.kind != 'i' || len(wq.shape) != 2 || len(sx.data) != 1 || len(wdq.in) < 3 || !allZero(e.consts[wdq.in[2]].data) {
			continue
		}
		zx := float32(0)
		if len(xdq.in) > 2 && xdq.in[2] != "" {
			z := e.consts[xdq.in[2]]
			if len(z.data) != 1 || z.kind != 'i' {
				continue
			}
			zx = z.data[0]
		}
		// Weights as [out][in]: Gemm with transB has them so; MatMul's are
		// [in][out].
		rows, cols := wq.shape[0], wq.shape[1]
		out, in := rows, cols
		if n.op == "MatMul" {
			out, in = cols, rows
		} else if !n.transB {
			continue
		}
		q := &qgemm{xq: xdq.in[0], sx: sx.data[0], zx: zx, w: make([]int32, len(wq.data)), sw: make([]float32, out), in: in}
		for r := 0; r < rows; r++ {
			for c := 0; c < cols; c++ {
				o, k := r, c
				if n.op == "MatMul" {
					o, k = c, r
				}
				q.w[o*in+k] = int32(wq.data[r*cols+c])
			}
		}
		for j := range q.sw {
			if len(ws.data) == 1 {
				q.sw[j] = ws.data[0]
			} else if len(ws.data) == out {
				q.sw[j] = ws.data[j]
			} else {
				q = nil
				break
			}
		}
		if q != nil {
			n.q = q
		}
	}
}

func allZero(v []float32) bool {
	for _, x := range v {
		if x != 0 {
			return false
		}
	}
	return true
}

// run multiplies int8 activations by int8 weights with int32 sums, then
// scales back to float: y = sx·sw[j]·Σ (xq − zx)·wq[j].
func (q *qgemm) run(n *node, x tensor, alpha float32) (tensor, error) {
	if x.cols() != q.in || len(x.shape) != 2 {
		return tensor{}, fmt.Errorf("%w: %v for %d inputs", ErrInput, x.shape, q.in)
	}
	if cap(q.xs) < len(x.data) {
		q.xs = make([]int32, len(x.data))
	}
	xs := q.xs[:len(x.data)]
	for i, v := range x.data {
		xs[i] = int32(v) - int32(q.zx)
	}
	rows, cols, k := x.rows(), len(q.sw), q.in
	out := tensor{shape: n.dims(0, rows, cols), data: n.buffer(0, rows*cols)}
	for i := 0; i < rows; i++ {
		xr := xs[i*k : (i+1)*k]
		for j := 0; j < cols; j++ {
			wr := q.w[j*k : (j+1)*k]
			wr = wr[:len(xr)] // one bounds check, not one per element
			var acc int32
			for p, xv := range xr {
				acc += xv * wr[p]
			}
			out.data[i*cols+j] = float32(acc) * q.sx * q.sw[j] * alpha
		}
	}
	return out, nil
}

// quantOp runs QuantizeLinear (y = saturate(round(x/s) + zp)) or
// DequantizeLinear (y = (x - zp)·s), per tensor or per channel of axis.
func (n *node) quantOp(a tensor, get func(string) (tensor, error)) (tensor, error) {
	s, err := get(n.in[1])
	if err != nil {
		return tensor{}, err
	}
	zp := tensor{shape: []int{}, data: []float32{0}, kind: 'u'}
	if len(n.in) > 2 && n.in[2] != "" {
		if zp, err = get(n.in[2]); err != nil {
			return tensor{}, err
		}
	}
	if len(s.data) != len(zp.data) {
		return tensor{}, fmt.Errorf("%w: %s has %d scales and %d zero points", ErrModel, n.op, len(s.data), len(zp.data))
	}
	inner, mid := len(a.data), 1 // per tensor: one channel
	if len(s.data) > 1 {
		ax, err := axisOf(n.axis, len(a.shape))
		if err != nil {
			return tensor{}, err
		}
		_, mid, inner = around(a.shape, ax)
		if len(s.data) != mid {
			return tensor{}, fmt.Errorf("%w: %s has %d scales for axis %d of %v", ErrModel, n.op, len(s.data), n.axis, a.shape)
		}
	}
	channel := func(i int) int { return (i / inner) % mid }
	out := tensor{shape: a.shape, data: n.buffer(0, len(a.data))}
	if n.op == "DequantizeLinear" {
		for i, v := range a.data {
			c := channel(i)
			out.data[i] = (v - zp.data[c]) * s.data[c]
		}
		return out, nil
	}
	lo, hi := float32(0), float32(255)
	if zp.kind == 'i' {
		lo, hi = -128, 127
	}
	out.kind = zp.kind
	for i, v := range a.data {
		c := channel(i)
		q := float32(math.RoundToEven(float64(v/s.data[c]))) + zp.data[c]
		out.data[i] = min(max(q, lo), hi)
	}
	return out, nil
}

// dynamicQuantize is DynamicQuantizeLinear: uint8 values with the scale
// and zero point that map [min(0, x), max(0, x)] onto [0, 255], in
// float32 as ONNX Runtime computes them.
func (n *node) dynamicQuantize(x tensor) []tensor {
	lo, hi := float32(0), float32(0)
	for _, v := range x.data {
		lo, hi = min(lo, v), max(hi, v)
	}
	scale := (hi - lo) / 255
	zp := float32(0)
	if scale != 0 {
		zp = float32(math.RoundToEven(float64(min(max(0-lo/scale, 0), 255))))
	}
	y := tensor{shape: x.shape, data: n.buffer(0, len(x.data)), kind: 'u'}
	for i, v := range x.data {
		q := zp
		if scale != 0 {
			q += float32(math.RoundToEven(float64(v / scale)))
		}
		y.data[i] = min(max(q, 0), 255)
	}
	s := tensor{shape: n.dims(1), data: n.buffer(1, 1)}
	s.data[0] = scale
	z := tensor{shape: n.dims(2), data: n.buffer(2, 1), kind: 'u'}
	z.data[0] = zp
	return n.result(y, s, z)
}

// zeroPoint is input i as a zero point: 0 when absent, one value, or one
// per row (a's) or column (b's) of count.
func zeroPoint(n *node, get func(string) (tensor, error), i, count int) ([]float32, error) {
	if len(n.in) <= i || n.in[i] == "" {
		return nil, nil
	}
	z, err := get(n.in[i])
	if err != nil {
		return nil, err
	}
	if len(z.data) != 1 && len(z.data) != count {
		return nil, fmt.Errorf("%w: %s zero point of %d values for %d", ErrInput, n.op, len(z.data), count)
	}
	return z.data, nil
}

// integerProduct is Σ (a − za)·(b − zb) for MatMulInteger and
// QLinearMatMul, a [M, K] by b [K, N], summed in int32.
func (n *node) integerProduct(a, b tensor, za, zb []float32) (tensor, error) {
	if len(a.shape) != 2 || len(b.shape) != 2 || a.shape[1] != b.shape[0] {
		return tensor{}, fmt.Errorf("%w: %s of %v and %v", ErrInput, n.op, a.shape, b.shape)
	}
	rows, k, cols := a.shape[0], a.shape[1], b.shape[1]
	out := tensor{shape: n.dims(0, rows, cols), data: n.buffer(0, rows*cols), kind: 'l'}
	acc := n.ints32(cols)
	for i := 0; i < rows; i++ {
		clear(acc)
		for p := 0; p < k; p++ {
			av := int32(a.data[i*k+p]) - int32(pick(za, i, 0))
			if av == 0 {
				continue
			}
			br := b.data[p*cols : (p+1)*cols]
			for j, bv := range br {
				acc[j] += av * (int32(bv) - int32(pick(zb, j, 0)))
			}
		}
		for j, v := range acc {
			out.data[i*cols+j] = float32(v)
		}
	}
	return out, nil
}

// ints32 is the node's int32 scratch with room for count values.
func (n *node) ints32(count int) []int32 {
	if cap(n.acc) < count {
		n.acc = make([]int32, count)
	}
	return n.acc[:count]
}

// matMulInteger is MatMulInteger: the int32 product of quantized values.
func (n *node) matMulInteger(a tensor, get func(string) (tensor, error)) (tensor, error) {
	b, err := get(n.in[1])
	if err != nil {
		return tensor{}, err
	}
	za, err := zeroPoint(n, get, 2, a.rows())
	if err != nil {
		return tensor{}, err
	}
	zb, err := zeroPoint(n, get, 3, b.cols())
	if err != nil {
		return tensor{}, err
	}
	return n.integerProduct(a, b, za, zb)
}

// qlinearMatMul is QLinearMatMul: the product requantized to y's scale
// and zero point.
func (n *node) qlinearMatMul(a tensor, get func(string) (tensor, error)) (tensor, error) {
	var t [7]tensor // a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp
	for i := range t {
		v, err := get(n.in[i+1])
		if err != nil {
			return tensor{}, err
		}
		t[i] = v
	}
	if len(t[0].data) != 1 || len(t[3].data) > 1 && len(t[3].data) != t[2].cols() || len(t[5].data) != 1 || len(t[6].data) != 1 {
		return tensor{}, fmt.Errorf("%w: QLinearMatMul scales must be per tensor (b's may be per column)", ErrUnsupported)
	}
	for _, z := range []struct {
		z    tensor
		want int
	}{{t[1], 1}, {t[4], len(t[3].data)}} {
		if len(z.z.data) != z.want {
			return tensor{}, fmt.Errorf("%w: QLinearMatMul zero point of %d values", ErrInput, len(z.z.data))
		}
	}
	prod, err := n.integerProduct(a, t[2], t[1].data, t[4].data)
	if err != nil {
		return tensor{}, err
	}
	lo, hi := float32(0), float32(255)
	if t[6].kind == 'i' {
		lo, hi = -128, 127
	}
	cols := prod.shape[1]
	for i, v := range prod.data {
		m := t[0].data[0] * pick(t[3].data, i%cols, 0) / t[5].data[0]
		q := float32(math.RoundToEven(float64(v*m))) + t[6].data[0]
		prod.data[i] = min(max(q, lo), hi)
	}
	prod.kind = t[6].kind
	return prod, nil
}
