package goengine

import (
	"fmt"
	"math"
	"slices"

	"github.com/outpost-edge/outpost/models/onnx/onnxpb"
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
	if n.op == "Gemm" && len(n.in) > 2 && n.in[2] != "" && (n.q == nil || n.q.bias == nil) {
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
	bp := n.packed(k, cols)
	if bp == nil { // B is computed: pack it per call
		bp = n.buffer(scratchPacked, packedLen(k, cols))
		packB(bp, b.data, k, cols, n.transB)
	}
	if zeros(a.data[:rows*k]) >= rows*k*kern.sparseAt/10 { // after a Relu: walk only the non-zeros
		idx := n.ints32(rows*k + rows + 1)
		kern.sparse(out.data, cols, a.data, rows, k, bp, cols, n.alpha, n.buffer(sparseVals, rows*k), idx[:rows*k], idx[rows*k:])
	} else {
		kern.dense(out.data, cols, a.data, rows, k, bp, cols, n.alpha)
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
	// w are the int8 weights packed three columns to an int64, kb the
	// terms of k one block may sum (see qpack).
	w  []int64
	kb int
	sw []float32
	// bias is a constant bias in the sums' units (round(b / (sx·sw))),
	// added in int32 as ONNX Runtime's QGemm and QLinearConv do, so that
	// both engines round alike; nil: the bias is added in float.
	bias []int32
	in   int
	out  int     // columns
	xs   []int64 // scratch for the shifted activations
	acc  []int32 // scratch: rows' sums, len(acc) apart (four for the vector kernel)
	nz   []int32 // scratch: a row's non-zero activations, where and what
	nzv  []int64
	// w16 are the weights for qsums16 where the build has it (see
	// vectorize), nil elsewhere; pv and pi are its scratch: a row's
	// non-zero activation pairs, what and where.
	w16    []int16
	pv, pi []int32
	// scale and fbias are a MatMulInteger's rescaling folded in (see
	// foldRescale): its int32 sums leave as float sums·scale + fbias,
	// scale a value of the run (one, or one per column).
	scale string
	fbias []float32
}

// fuse marks the Gemm and MatMul nodes that can run as qgemm.
func (e *Engine) fuse(folded map[string]*node) {
	producer := map[string]*node{}
	for _, n := range e.nodes {
		producer[n.out[0]] = n
	}
	for _, n := range e.nodes {
		conv := n.op == "Conv"
		if (n.op != "Gemm" && n.op != "MatMul" && !conv) || len(n.in) < 2 || n.transA {
			continue
		}
		if g, ok := n.attrs["group"]; conv && ok && g.GetI() != 1 {
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
		if wq.kind != 'i' || len(sx.data) != 1 || len(wdq.in) < 3 || !allZero(e.consts[wdq.in[2]].data) {
			continue
		}
		if (conv && (len(wq.shape) < 3 || len(wq.shape) > 4)) || (!conv && len(wq.shape) != 2) {
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
		// Weights as [out][in]: Gemm with transB has them so; MatMul's,
		// and Gemm's without transB, are [in][out].
		// A Conv's [M, C, (kH,) kW] are [out][in] with in = C·kH·kW, the
		// order of its windows' rows.
		rows, cols := wq.shape[0], size(wq.shape[1:])
		out, in := rows, cols
		inOut := !conv && (n.op == "MatMul" || !n.transB)
		if inOut {
			out, in = cols, rows
		}
		w := make([]int32, len(wq.data)) // [out][in]
		for r := 0; r < rows; r++ {
			for c := 0; c < cols; c++ {
				o, k := r, c
				if inOut {
					o, k = c, r
				}
				w[o*in+k] = int32(wq.data[r*cols+c])
			}
		}
		// The SWAR lanes are exact for int8 weights and |x − zx| ≤ 255;
		// values outside (int32_data is not range-checked on load) run on
		// the float path, which computes them all the same.
		if zx < -128 || zx > 255 || !int8Values(w) {
			continue
		}
		packed, kb := qpack(w, out, in)
		q := &qgemm{xq: xdq.in[0], sx: sx.data[0], zx: zx, w: packed, kb: kb, sw: make([]float32, out), in: in, out: out}
		q.vectorize(w)
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
		if q == nil {
			continue
		}
		if c, ok := e.consts[optional(n.in, 2)]; ok && (conv || (n.alpha == 1 && n.beta == 1)) {
			q.bias = intBias(c, q)
		}
		n.q = q
	}
	// A MatMul whose one reader adds a constant bias is one QGemm in ONNX
	// Runtime (MatMulAddFusion): the bias joins the sums, and the Add
	// passes the result on.
	readers := map[string][]*node{}
	for _, n := range e.nodes {
		for _, in := range n.in {
			readers[in] = append(readers[in], n)
		}
	}
	for _, n := range e.nodes {
		if n.op != "MatMul" || n.q == nil || n.out[0] == e.output || n.out[0] == e.label || len(readers[n.out[0]]) != 1 {
			continue
		}
		add := readers[n.out[0]][0]
		if add.op != "Add" || len(add.in) != 2 || add.in[0] == add.in[1] {
			continue
		}
		other := add.in[1]
		if other == n.out[0] {
			other = add.in[0]
		}
		if c, ok := e.consts[other]; ok && len(c.shape) <= 2 { // a bias of higher rank would raise the output's
			if n.q.bias = intBias(c, n.q); n.q.bias != nil {
				add.op, add.in, add.folded = "Identity", []string{n.out[0]}, true
			}
		}
	}
	// MatMulInteger with constant int8 weights, zero points 0 (dynamic
	// quantization as quant writes it, Convs lowered to it included): the
	// same kernel, the activations' zero point read per run.
	for _, n := range e.nodes {
		if n.op != "MatMulInteger" || len(n.in) < 2 {
			continue
		}
		b, ok := e.consts[n.in[1]]
		if !ok || b.kind != 'i' || len(b.shape) != 2 {
			continue
		}
		if len(n.in) > 3 && n.in[3] != "" {
			if z, ok := e.consts[n.in[3]]; !ok || !allZero(z.data) {
				continue
			}
		}
		k, cols := b.shape[0], b.shape[1]
		w := make([]int32, len(b.data)) // [out][in]
		for p := 0; p < k; p++ {
			for j := 0; j < cols; j++ {
				w[j*k+p] = int32(b.data[p*cols+j])
			}
		}
		if !int8Values(w) {
			continue
		}
		packed, kb := qpack(w, cols, k)
		n.qi = &qgemm{w: packed, kb: kb, in: k, out: cols}
		n.qi.vectorize(w)
	}
	for _, n := range e.nodes {
		if (n.op == "Gemm" || n.op == "MatMul") && n.q == nil && len(n.in) > 1 {
			if b, ok := e.consts[n.in[1]]; ok && len(b.shape) == 2 {
				n.prepack(b)
			}
		}
	}
	e.foldRescale()
	e.dropIntegerDequantize()
	e.dropIdentities()
}

// dropIdentities removes the ops the folds above turned into Identity
// (the graph's own stay: a float model's trace, which calibration reads,
// keeps every name), their readers reading their input instead. A trace
// of a quantized model then lacks those names.
func (e *Engine) dropIdentities() {
	rename := map[string]string{}
	kept := e.nodes[:0]
	for _, n := range e.nodes {
		for i, in := range n.in {
			if to, ok := rename[in]; ok {
				n.in[i] = to
			}
		}
		for _, q := range []*qgemm{n.q, n.qi} { // the names the products read besides their inputs
			if q == nil {
				continue
			}
			if to, ok := rename[q.xq]; ok {
				q.xq = to
			}
			if to, ok := rename[q.scale]; ok {
				q.scale = to
			}
		}
		if n.folded && n.out[0] != e.output && n.out[0] != e.label {
			rename[n.out[0]] = n.in[0]
			continue
		}
		kept = append(kept, n)
	}
	e.nodes = kept
}

// foldRescale folds into each packed MatMulInteger the float ops dynamic
// int8 writes after it (as ONNX Runtime's DynamicQuantizeMatMul does):
// Cast to float, Mul by the activations' scale times the weights' (one or
// one per column), and an Add of a constant bias, one per column. The
// product then leaves float, and the three pass their input on: three
// nodes and two passes over the output fewer a layer (dropIdentities then
// removes the three; a trace keeps the product's name only).
func (e *Engine) foldRescale() {
	readers, producer := map[string][]*node{}, map[string]*node{}
	for _, n := range e.nodes {
		for _, in := range n.in {
			readers[in] = append(readers[in], n)
		}
		for _, out := range n.out {
			producer[out] = n
		}
	}
	only := func(t, op string) *node {
		if r := readers[t]; len(r) == 1 && r[0].op == op && t != e.output && t != e.label {
			return r[0]
		}
		return nil
	}
	before := map[*node]*node{} // a scale's Mul → the product it must precede
	for _, n := range e.nodes {
		q := n.qi
		if q == nil {
			continue
		}
		cast := only(n.out[0], "Cast")
		if cast == nil || cast.to != onnxpb.TensorProto_FLOAT {
			continue
		}
		mul := only(cast.out[0], "Mul")
		if mul == nil || len(mul.in) != 2 {
			continue
		}
		scale := mul.in[1]
		if scale == cast.out[0] {
			scale = mul.in[0]
		}
		// The scale: the activations' (a DynamicQuantizeLinear's scalar)
		// times a constant of one value or one per column.
		sm := producer[scale]
		if sm == nil || sm.op != "Mul" || len(sm.in) != 2 {
			continue
		}
		ok := false
		for i, in := range sm.in {
			c, isConst := e.consts[sm.in[1-i]]
			// The DynamicQuantizeLinear that feeds this product (so it runs
			// before it); a constant of rank 2 at most, so that the Mul's
			// output keeps the product's rank.
			if d := producer[in]; d != nil && d.op == "DynamicQuantizeLinear" && len(d.out) > 1 && d.out[1] == in && d.out[0] == n.in[0] &&
				isConst && len(c.shape) <= 2 && (len(c.data) == 1 || (len(c.data) == q.out && len(c.shape) > 0 && c.shape[len(c.shape)-1] == q.out)) {
				ok = true
			}
		}
		if !ok {
			continue
		}
		q.scale = scale
		if _, ok := before[sm]; !ok && slices.Index(e.nodes, sm) > slices.Index(e.nodes, n) {
			before[sm] = n // the scale is made after the product: run it first
		}
		cast.op, cast.in, cast.folded = "Identity", []string{n.out[0]}, true
		mul.op, mul.in, mul.folded = "Identity", []string{cast.out[0]}, true
		if add := only(mul.out[0], "Add"); add != nil && len(add.in) == 2 {
			other := add.in[1]
			if other == mul.out[0] {
				other = add.in[0]
			}
			if c, ok := e.consts[other]; ok && c.kind == 0 && len(c.data) == q.out && len(c.shape) > 0 && len(c.shape) <= 2 && size(c.shape) == c.shape[len(c.shape)-1] {
				q.fbias = c.data
				add.op, add.in, add.folded = "Identity", []string{mul.out[0]}, true
			}
		}
	}
	if len(before) == 0 {
		return
	}
	moved := map[*node][]*node{}
	for sm, n := range before {
		moved[n] = append(moved[n], sm)
	}
	var nodes []*node
	for _, n := range e.nodes {
		if _, ok := before[n]; ok {
			continue
		}
		nodes = append(append(nodes, moved[n]...), n)
	}
	e.nodes = nodes
}

// dropIntegerDequantize removes each activation's DequantizeLinear that
// only fused int8 products read (they read its int8 input): run, its float
// output would be made and never used. A trace of the model then lacks
// those values.
func (e *Engine) dropIntegerDequantize() {
	readers := map[string][]*node{}
	for _, n := range e.nodes {
		for _, in := range n.in {
			readers[in] = append(readers[in], n)
		}
	}
	kept := e.nodes[:0]
	for _, n := range e.nodes {
		r := readers[n.out[0]]
		unused := n.op == "DequantizeLinear" && len(r) > 0 && n.out[0] != e.output && n.out[0] != e.label
		for _, m := range r {
			if m.q == nil || m.q.xq != n.in[0] || slices.Index(m.in, n.out[0]) != 0 || slices.Contains(m.in[1:], n.out[0]) {
				unused = false
			}
		}
		if !unused {
			kept = append(kept, n)
			continue
		}
		for _, m := range r {
			m.in[0] = n.in[0] // evalNode still fetches input 0; the products read only q.xq
		}
	}
	e.nodes = kept
}

// Buffers of a Gemm or MatMul node beside its output (0), transposed A
// (1) and scaled C (2): the constant B packed at load, and a computed B
// packed per call.
const (
	constPacked   = 4
	scratchPacked = 3
	sparseVals    = 5
)

// prepack packs the node's constant B once, at load.
func (n *node) prepack(b tensor) {
	k, cols := b.shape[0], b.shape[1]
	if n.transB {
		k, cols = cols, k
	}
	packB(n.buffer(constPacked, packedLen(k, cols)), b.data, k, cols, n.transB)
}

// packed is the constant B packed at load for a product of k × cols,
// or nil.
func (n *node) packed(k, cols int) []float32 {
	if len(n.bufs) <= constPacked || len(n.bufs[constPacked]) != packedLen(k, cols) || len(n.bufs[constPacked]) == 0 {
		return nil
	}
	return n.bufs[constPacked]
}

func allZero(v []float32) bool {
	for _, x := range v {
		if x != 0 {
			return false
		}
	}
	return true
}

// The int8 kernel, in pure Go without vector instructions: SWAR, three
// products per 64-bit multiply. Three weight columns share an int64 (lanes
// of 21 bits: w0 + w1·2^21 + w2·2^42), so x·(w0 + w1·2^21 + w2·2^42) adds
// x·w0, x·w1 and x·w2 to the three lanes of one accumulator. The lanes
// stay exact while each sum's magnitude is under 2^20, so k is walked in
// blocks short enough for the largest weight (65 terms for quant's 7-bit
// weights and |x − zx| ≤ 255, 32 for full-range ones), and each block's
// lanes are taken apart into int32 sums. A panel is qPanel columns
// ([panel][k][8] int64s, zero padded): eight accumulators for 24 outputs,
// where the float kernel keeps eight for eight. A 64-bit multiply is
// issued once a cycle and float multiplies and adds twice, so three lanes,
// not two, are what make it faster than float.
const (
	qLanes    = 3
	qLaneBits = 21
	qPanel    = 8 * qLanes
	qLaneMax  = 1<<(qLaneBits-1) - 1 // the largest sum a lane holds
)

// int8Values reports whether every value of w fits in int8.
func int8Values(w []int32) bool {
	for _, v := range w {
		if v < -128 || v > 127 {
			return false
		}
	}
	return true
}

// qsums16 is the vector int8 kernel where the build and the CPU have one
// (AVX2, linalg_simd_amd64.go; nil elsewhere): it writes one row's sums
// into acc, from the row's non-zero activation pairs (two int16s in each
// int32 of pv) at pair indices pi, against w16 panels of kp pairs. With
// the float kernel in AVX2 too, the SWAR lanes were 2.3× slower than it
// (BenchmarkQuantizedLatency); one VPMADDWD makes 16 products where an
// FMA makes 8.
var qsums16 func(acc []int32, pv, pi []int32, w16 []int16, kp, panels int)

// qsums16x4 is qsums16 for four rows at once, dense: pv holds each pair
// of the four rows in turn ([kp][4]), and row t's sums go to acc[t·ld:].
// Each weight vector loaded then meets four rows, as the float kernel's
// 4×16 blocks do.
var qsums16x4 func(acc []int32, ld int, pv []int32, w16 []int16, kp, panels int)

// packPair puts two shifted activations into one int32 as VPMADDWD
// reads a pair: lo in the low 16 bits, hi in the high.
func packPair[T int32 | int64](lo, hi T) int32 {
	return int32(uint32(uint16(int16(lo))) | uint32(uint16(int16(hi)))<<16)
}

// q16Panel is the columns of one int16 panel: one vector of 8 int32 sums.
const q16Panel = 8

// vectorize lays w ([out][in] int8 values) out for qsums16 when there is
// one: [panel][k/2][8 columns][2] int16, k and the columns zero padded.
// The int32 sums stay exact: |x − zx| ≤ 255 (fuse admits 8-bit values
// and zero points in their range) and |w| ≤ 128 give under 2^31 for k up
// to 2^14, bias included (a longer k keeps the SWAR kernel).
func (q *qgemm) vectorize(w []int32) {
	if qsums16 == nil || q.in > 1<<14 {
		return
	}
	kp, panels := (q.in+1)/2, (q.out+q16Panel-1)/q16Panel
	w16 := make([]int16, panels*kp*2*q16Panel)
	for j := 0; j < q.out; j++ {
		pn, c := j/q16Panel, j%q16Panel
		for p := 0; p < q.in; p++ {
			w16[(pn*kp+p/2)*2*q16Panel+2*c+p%2] = int16(w[j*q.in+p])
		}
	}
	q.w16 = w16
}

// qpack packs w ([out][in] int8 values) into panels of column triples,
// and returns how many terms of k a block may sum.
func qpack(w []int32, out, in int) ([]int64, int) {
	panels := (out + qPanel - 1) / qPanel
	dst := make([]int64, panels*in*8)
	wmax := int32(1)
	for j := 0; j < out; j++ {
		pn, acc, lane := j/qPanel, (j%qPanel)/qLanes, j%qLanes
		for p := 0; p < in; p++ {
			v := w[j*in+p]
			wmax = max(wmax, v, -v)
			dst[(pn*in+p)*8+acc] += int64(v) << (qLaneBits * lane)
		}
	}
	return dst, qLaneMax / (255 * int(wmax))
}

// run multiplies int8 activations by int8 weights with int32 sums, then
// scales back to float: y = sx·sw[j]·Σ (xq − zx)·wq[j].
func (q *qgemm) run(n *node, x tensor, alpha float32) (tensor, error) {
	if x.cols() != q.in || len(x.shape) != 2 {
		return tensor{}, fmt.Errorf("%w: %v for %d inputs", ErrInput, x.shape, q.in)
	}
	rows, cols := x.rows(), q.out
	acc := q.scratch()
	var xs []int64
	if q.w16 == nil { // the SWAR kernel reads shifted int64s; the vector one packs pairs from x
		if cap(q.xs) < len(x.data) {
			q.xs = make([]int64, len(x.data))
		}
		xs = q.xs[:len(x.data)]
		for i, v := range x.data {
			xs[i] = int64(v) - int64(q.zx)
		}
	}
	out := tensor{shape: n.dims(0, rows, cols), data: n.buffer(0, rows*cols)}
	scale := q.sx * alpha
	for i := 0; i < rows; {
		var r int
		if xs == nil {
			r = q.blockFloat(x.data, i, rows, acc)
		} else {
			r = q.block(xs, i, rows, acc)
		}
		for t := range r {
			sums := acc[t*len(acc) : t*len(acc)+cols]
			dst := out.data[(i+t)*cols : (i+t+1)*cols]
			if b := q.bias; b != nil {
				b = b[:len(dst)]
				for j := range dst {
					dst[j] = float32(sums[j]+b[j]) * scale * q.sw[j]
				}
				continue
			}
			for j := range dst {
				dst[j] = float32(sums[j]) * scale * q.sw[j]
			}
		}
		i += r
	}
	return out, nil
}

// intBias quantizes a constant bias c, one value per output, to int32 in
// q's units, or returns nil where it stays float: integers, another
// shape, or values past int32.
func intBias(c tensor, q *qgemm) []int32 {
	if c.kind != 0 || len(c.data) != q.out || len(c.shape) == 0 || size(c.shape) != c.shape[len(c.shape)-1] {
		return nil
	}
	bias := make([]int32, q.out)
	for j, v := range c.data {
		b := math.RoundToEven(float64(v) / (float64(q.sx) * float64(q.sw[j])))
		if math.IsNaN(b) || math.Abs(b) > math.MaxInt32/2 {
			return nil
		}
		bias[j] = int32(b)
	}
	return bias
}

// scratch sizes q's scratch for a run and returns one row's sums.
func (q *qgemm) scratch() []int32 {
	panels := (q.out + qPanel - 1) / qPanel
	if cap(q.acc) < 4*panels*qPanel {
		q.acc = make([]int32, 4*panels*qPanel) // four rows for qsums16x4
	}
	if cap(q.nz) < q.in {
		q.nz, q.nzv = make([]int32, q.in), make([]int64, q.in)
		q.pv, q.pi = make([]int32, 4*((q.in+1)/2)), make([]int32, (q.in+1)/2)
	}
	return q.acc[:panels*qPanel]
}

// block computes the int32 sums of rows i.. of xs (rows of q.in shifted
// activations) into acc, len(acc) apart (one row's scratch), and says
// how many rows it took: four on the vector kernel while four are left,
// else one.
func (q *qgemm) block(xs []int64, i, rows int, acc []int32) int {
	k := q.in
	if q.w16 == nil || qsums16x4 == nil || i+4 > rows {
		q.sums(xs[i*k:(i+1)*k], acc)
		return 1
	}
	kp := (k + 1) / 2
	pv := q.pv[:4*kp]
	for t := range 4 {
		xr := xs[(i+t)*k : (i+t+1)*k]
		for p := range kp {
			lo, hi := xr[2*p], int64(0)
			if 2*p+1 < k {
				hi = xr[2*p+1]
			}
			pv[4*p+t] = packPair(lo, hi)
		}
	}
	qsums16x4(acc[:cap(acc)], len(acc), pv, q.w16, kp, (q.out+q16Panel-1)/q16Panel)
	return 4
}

// blockFloat is block on the vector kernel for rows of int8 values held as
// float32 (a QuantizeLinear's output), their zero point q.zx taken off as
// the pairs are packed.
func (q *qgemm) blockFloat(x []float32, i, rows int, acc []int32) int {
	k, kp, zx := q.in, (q.in+1)/2, int32(q.zx)
	pair := func(xr []float32, p int) int32 {
		lo, hi := int32(xr[2*p])-zx, int32(0)
		if 2*p+1 < k {
			hi = int32(xr[2*p+1]) - zx
		}
		return packPair(lo, hi)
	}
	panels := (q.out + q16Panel - 1) / q16Panel
	if qsums16x4 == nil || i+4 > rows {
		xr, nz := x[i*k:(i+1)*k], 0
		for p := range kp {
			if v := pair(xr, p); v != 0 {
				q.pv[nz], q.pi[nz] = v, int32(p)
				nz++
			}
		}
		qsums16(acc, q.pv[:nz], q.pi[:nz], q.w16, kp, panels)
		return 1
	}
	pv := q.pv[:4*kp]
	for t := range 4 {
		xr := x[(i+t)*k : (i+t+1)*k]
		for p := range kp {
			pv[4*p+t] = pair(xr, p)
		}
	}
	qsums16x4(acc[:cap(acc)], len(acc), pv, q.w16, kp, panels)
	return 4
}

// sums computes one row's int32 sums Σ xr·wq[j] into acc, from
// activations xr already shifted by their zero point.
func (q *qgemm) sums(xr []int64, acc []int32) {
	if q.w16 != nil {
		// Pairs of activations, both at their zero point (a Relu's
		// zeros) skipped: the kernel walks only the others.
		nz := 0
		for p := 0; p < len(xr); p += 2 {
			lo, hi := xr[p], int64(0)
			if p+1 < len(xr) {
				hi = xr[p+1]
			}
			if lo != 0 || hi != 0 {
				q.pv[nz], q.pi[nz] = packPair(lo, hi), int32(p/2)
				nz++
			}
		}
		qsums16(acc, q.pv[:nz], q.pi[:nz], q.w16, (q.in+1)/2, (q.out+q16Panel-1)/q16Panel)
		return
	}
	clear(acc)
	k, panels := q.in, (q.out+qPanel-1)/qPanel
	// Activations at their zero point (a Relu's zeros, often half of
	// them) add nothing: with enough of them only the others are
	// multiplied, as the float kernel's sparse path does.
	nz := 0
	for p, v := range xr {
		if v != 0 {
			q.nz[nz], q.nzv[nz] = int32(p), v
			nz++
		}
	}
	if nz*10 <= k*qDenseShare {
		for pn := 0; pn < panels; pn++ {
			base := q.w[pn*k*8 : (pn+1)*k*8]
			for b0 := 0; b0 < nz; b0 += q.kb {
				b1 := min(b0+q.kb, nz)
				qsparse24((*[qPanel]int32)(acc[pn*qPanel:]), q.nzv[b0:b1], q.nz[b0:b1], base)
			}
		}
		return
	}
	for k0 := 0; k0 < k; k0 += q.kb {
		kc := min(q.kb, k-k0)
		for pn := 0; pn < panels; pn++ {
			panel := q.w[(pn*k+k0)*8 : (pn*k+k0+kc)*8]
			qdot24((*[qPanel]int32)(acc[pn*qPanel:]), xr[k0:k0+kc], panel)
		}
	}
}

// integer is MatMulInteger on q's weights: a [M, K] of 8-bit values less
// their zero point za (one for all), summed in int32.
func (q *qgemm) integer(n *node, a tensor, za float32) tensor {
	if cap(q.xs) < len(a.data) {
		q.xs = make([]int64, len(a.data))
	}
	xs := q.xs[:len(a.data)]
	for i, v := range a.data {
		xs[i] = int64(v) - int64(za)
	}
	rows, cols := a.shape[0], q.out
	acc := q.scratch()
	out := tensor{shape: n.dims(0, rows, cols), data: n.buffer(0, rows*cols), kind: 'l'}
	for i := 0; i < rows; {
		r := q.block(xs, i, rows, acc)
		for t := range r {
			for j, v := range acc[t*len(acc) : t*len(acc)+cols] {
				out.data[(i+t)*cols+j] = float32(v)
			}
		}
		i += r
	}
	return out
}

// qDenseShare (in tenths) is the share of non-zero activations up to
// which run takes the sparse path.
const qDenseShare = 6

// qsparse24 is qdot24 over the non-zero activations only: vals at the
// rows idx of panel ([k][8] column triples).
func qsparse24(acc *[qPanel]int32, vals []int64, idx []int32, panel []int64) {
	var c0, c1, c2, c3, c4, c5, c6, c7 int64
	idx = idx[:len(vals)]
	for t, v := range vals {
		p := int(idx[t]) * 8
		b := panel[p : p+8 : p+8]
		c0 += v * b[0]
		c1 += v * b[1]
		c2 += v * b[2]
		c3 += v * b[3]
		c4 += v * b[4]
		c5 += v * b[5]
		c6 += v * b[6]
		c7 += v * b[7]
	}
	lanes(acc, [8]int64{c0, c1, c2, c3, c4, c5, c6, c7})
}

// lanes takes eight accumulators apart into acc's 24 sums.
func lanes(acc *[qPanel]int32, cs [8]int64) {
	for l, c := range cs {
		a := acc[qLanes*l : qLanes*l+qLanes : qLanes*l+qLanes]
		for lane := range qLanes - 1 {
			lo := c << (64 - qLaneBits) >> (64 - qLaneBits) // the lane, sign-extended
			a[lane] += int32(lo)
			c = (c - lo) >> qLaneBits
		}
		a[qLanes-1] += int32(c)
	}
}

// qdot24 adds Σ_p x[p]·w[p][j] to acc[j] for the 24 columns of one panel
// block (x shifted activations, panel [p][8] column triples).
func qdot24(acc *[qPanel]int32, x []int64, panel []int64) {
	var c0, c1, c2, c3, c4, c5, c6, c7 int64
	for len(x) >= 2 && len(panel) >= 16 {
		b := panel[:16:16]
		v, w := x[0], x[1]
		c0 += v*b[0] + w*b[8]
		c1 += v*b[1] + w*b[9]
		c2 += v*b[2] + w*b[10]
		c3 += v*b[3] + w*b[11]
		c4 += v*b[4] + w*b[12]
		c5 += v*b[5] + w*b[13]
		c6 += v*b[6] + w*b[14]
		c7 += v*b[7] + w*b[15]
		panel = panel[16:]
		x = x[2:]
	}
	if len(x) == 1 && len(panel) >= 8 {
		b := panel[:8:8]
		v := x[0]
		c0 += v * b[0]
		c1 += v * b[1]
		c2 += v * b[2]
		c3 += v * b[3]
		c4 += v * b[4]
		c5 += v * b[5]
		c6 += v * b[6]
		c7 += v * b[7]
	}
	lanes(acc, [8]int64{c0, c1, c2, c3, c4, c5, c6, c7})
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
	out := tensor{shape: a.shape, data: n.buffer(0, len(a.data))}
	lo, hi := float32(0), float32(255)
	if zp.kind == 'i' {
		lo, hi = -128, 127
	}
	if n.op == "QuantizeLinear" {
		out.kind = zp.kind
	}
	// Runs of inner values share a channel: no division per value.
	for start := 0; start < len(a.data); start += inner {
		c := (start / inner) % mid
		sc, z := s.data[c], zp.data[c]
		src, dst := a.data[start:start+inner], out.data[start:start+inner]
		dst = dst[:len(src)]
		if n.op == "DequantizeLinear" {
			for i, v := range src {
				dst[i] = (v - z) * sc
			}
			continue
		}
		for i, v := range src {
			q := float32(math.RoundToEven(float64(v/sc))) + z
			dst[i] = min(max(q, lo), hi)
		}
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
	// The packed kernel's lanes are exact for |a − za| ≤ 255: 8-bit
	// values and a zero point in their range.
	var out tensor
	if q := n.qi; q != nil && len(a.shape) == 2 && a.shape[1] == q.in && (a.kind == 'u' || a.kind == 'i') && len(za) <= 1 {
		z := pick(za, 0, 0)
		if (a.kind == 'u' && z >= 0 && z <= 255) || (a.kind == 'i' && z >= -128 && z <= 127) {
			out = q.integer(n, a, z)
		}
	}
	if out.data == nil {
		if out, err = n.integerProduct(a, b, za, zb); err != nil {
			return tensor{}, err
		}
	}
	if n.qi == nil || n.qi.scale == "" {
		return out, nil
	}
	// The folded Cast, Mul and Add, in their order.
	s, err := get(n.qi.scale)
	if err != nil {
		return tensor{}, err
	}
	cols := n.qi.out
	if (len(s.data) != 1 && len(s.data) != cols) || out.cols() != cols {
		return tensor{}, fmt.Errorf("%w: MatMulInteger rescaled by %d values for %d columns", ErrInput, len(s.data), cols)
	}
	for r := 0; r < len(out.data); r += cols {
		row := out.data[r : r+cols]
		if len(s.data) == 1 {
			for j := range row {
				row[j] *= s.data[0]
			}
		} else {
			for j, sc := range s.data[:len(row)] {
				row[j] *= sc
			}
		}
		if b := n.qi.fbias; b != nil {
			for j, v := range b[:len(row)] {
				row[j] += v
			}
		}
	}
	out.kind = 0
	return out, nil
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

// The float kernel under Gemm, MatMul and Conv: C += alpha·A·B with B
// packed into panels of panelW columns ([panel][k][panelW], zero padded),
// so the micro-kernel reads it as one contiguous stream. The micro-kernel
// keeps one row of A against a panel in eight accumulators and unrolls k
// by four, which shortens each accumulator's chain of dependent adds:
// measured on amd64 it beat 4×4, 3×4 and 2×8 register blocks, which spill
// (Go keeps 15 vector registers for floats). Pure Go, so it builds for
// armv7.

const (
	panelW = 8
	// kBlock bounds the slice of k one pass of the micro-kernel walks, so
	// a panel's block (kBlock·panelW floats, 8 KiB) stays in L1 while every
	// row of A meets it.
	kBlock = 256
)

// packedLen is the size of B [k][n] packed.
func packedLen(k, n int) int { return (n + panelW - 1) / panelW * panelW * k }

// packB packs B into dst (packedLen(k, n) values): b is [k][n], or [n][k]
// when trans.
func packB(dst, b []float32, k, n int, trans bool) {
	dst = dst[:packedLen(k, n)]
	for j0 := 0; j0 < n; j0 += panelW {
		panel := dst[j0*k : (j0+panelW)*k]
		w := min(panelW, n-j0)
		for p := 0; p < k; p++ {
			row := panel[p*panelW : (p+1)*panelW : (p+1)*panelW]
			if trans {
				for j := 0; j < w; j++ {
					row[j] = b[(j0+j)*k+p]
				}
			} else {
				copy(row, b[p*n+j0:p*n+j0+w])
			}
			clear(row[w:])
		}
	}
}

// kernel is one implementation of the float kernel: dense is sgemm's
// contract, sparse sgemmSparse's, and sparseAt (in tenths) the share of
// zeros in A from which matmul takes the sparse one.
type kernel struct {
	name     string
	dense    func(c []float32, ldc int, a []float32, m, k int, bp []float32, n int, alpha float32)
	sparse   func(c []float32, ldc int, a []float32, m, k int, bp []float32, n int, alpha float32, vals []float32, idx, offs []int32)
	sparseAt int
}

// kernels are the implementations this build and CPU can run, the pure-Go
// one first; kern is the one Gemm, MatMul and Conv use. An init of
// linalg_simd_amd64.go (GOEXPERIMENT=simd builds) adds and selects the
// AVX2/FMA one when the CPU has both.
var (
	kernels = []kernel{{name: "go", dense: sgemm, sparse: sgemmSparse, sparseAt: 4}}
	kern    = kernels[0]
)

// sgemm adds alpha·A·B to C: a is [m][k] (row stride k), bp is B [k][n]
// packed by packB, c is [m][n] with row stride ldc.
func sgemm(c []float32, ldc int, a []float32, m, k int, bp []float32, n int, alpha float32) {
	for k0 := 0; k0 < k; k0 += kBlock {
		kc := min(kBlock, k-k0)
		for j0 := 0; j0 < n; j0 += panelW {
			panel := bp[j0*k+k0*panelW : j0*k+(k0+kc)*panelW]
			w := min(panelW, n-j0)
			for i := 0; i < m; i++ {
				var acc [panelW]float32
				dot8(&acc, a[i*k+k0:i*k+k0+kc], panel)
				dst := c[i*ldc+j0 : i*ldc+j0+w]
				for j := range dst {
					dst[j] += alpha * acc[j]
				}
			}
		}
	}
}

// dot8 is the micro-kernel: acc[j] = Σ_p a[p]·panel[p·8 + j].
func dot8(acc *[panelW]float32, a, panel []float32) {
	var c0, c1, c2, c3, c4, c5, c6, c7 float32
	for len(a) >= 4 && len(panel) >= 4*panelW {
		b := panel[: 4*panelW : 4*panelW]
		x := a[:4:4]
		v, w, y, z := x[0], x[1], x[2], x[3]
		c0 += (v*b[0] + w*b[8]) + (y*b[16] + z*b[24])
		c1 += (v*b[1] + w*b[9]) + (y*b[17] + z*b[25])
		c2 += (v*b[2] + w*b[10]) + (y*b[18] + z*b[26])
		c3 += (v*b[3] + w*b[11]) + (y*b[19] + z*b[27])
		c4 += (v*b[4] + w*b[12]) + (y*b[20] + z*b[28])
		c5 += (v*b[5] + w*b[13]) + (y*b[21] + z*b[29])
		c6 += (v*b[6] + w*b[14]) + (y*b[22] + z*b[30])
		c7 += (v*b[7] + w*b[15]) + (y*b[23] + z*b[31])
		panel = panel[4*panelW:]
		a = a[4:]
	}
	for _, v := range a {
		if len(panel) < panelW {
			break
		}
		b := panel[:panelW:panelW]
		c0 += v * b[0]
		c1 += v * b[1]
		c2 += v * b[2]
		c3 += v * b[3]
		c4 += v * b[4]
		c5 += v * b[5]
		c6 += v * b[6]
		c7 += v * b[7]
		panel = panel[panelW:]
	}
	acc[0], acc[1], acc[2], acc[3], acc[4], acc[5], acc[6], acc[7] = c0, c1, c2, c3, c4, c5, c6, c7
}

// zeros counts the zeros in v.
func zeros(v []float32) int {
	z := 0
	for _, x := range v {
		if x == 0 {
			z++
		}
	}
	return z
}

// sgemmSparse is sgemm for an A whose rows are largely zeros, as a Relu
// leaves them: each row's non-zeros are gathered once (values into vals,
// positions into idx, row starts into offs, m+1 of them), and the
// micro-kernel walks only those. k is not blocked: a panel of an MLP's
// layer (k·8 floats) stays in L1 on its own.
func sgemmSparse(c []float32, ldc int, a []float32, m, k int, bp []float32, n int, alpha float32, vals []float32, idx, offs []int32) {
	t := 0
	for i := 0; i < m; i++ {
		offs[i] = int32(t)
		for p, v := range a[i*k : (i+1)*k] {
			if v != 0 {
				vals[t], idx[t] = v, int32(p*panelW)
				t++
			}
		}
	}
	offs[m] = int32(t)
	for j0 := 0; j0 < n; j0 += panelW {
		panel := bp[j0*k : (j0+panelW)*k]
		w := min(panelW, n-j0)
		for i := 0; i < m; i++ {
			var acc [panelW]float32
			lo, hi := offs[i], offs[i+1]
			gather8(&acc, vals[lo:hi], idx[lo:hi], panel)
			dst := c[i*ldc+j0 : i*ldc+j0+w]
			for j := range dst {
				dst[j] += alpha * acc[j]
			}
		}
	}
}

// gather8 is dot8 over the rows of panel that idx names (as offsets).
func gather8(acc *[panelW]float32, vals []float32, idx []int32, panel []float32) {
	var c0, c1, c2, c3, c4, c5, c6, c7 float32
	idx = idx[:len(vals)]
	for len(vals) >= 2 && len(idx) >= 2 {
		o, q := int(idx[0]), int(idx[1])
		v, w := vals[0], vals[1]
		b := panel[o : o+panelW : o+panelW]
		d := panel[q : q+panelW : q+panelW]
		c0 += v*b[0] + w*d[0]
		c1 += v*b[1] + w*d[1]
		c2 += v*b[2] + w*d[2]
		c3 += v*b[3] + w*d[3]
		c4 += v*b[4] + w*d[4]
		c5 += v*b[5] + w*d[5]
		c6 += v*b[6] + w*d[6]
		c7 += v*b[7] + w*d[7]
		vals, idx = vals[2:], idx[2:]
	}
	if len(vals) == 1 && len(idx) == 1 {
		o, v := int(idx[0]), vals[0]
		b := panel[o : o+panelW : o+panelW]
		c0 += v * b[0]
		c1 += v * b[1]
		c2 += v * b[2]
		c3 += v * b[3]
		c4 += v * b[4]
		c5 += v * b[5]
		c6 += v * b[6]
		c7 += v * b[7]
	}
	acc[0], acc[1], acc[2], acc[3], acc[4], acc[5], acc[6], acc[7] = c0, c1, c2, c3, c4, c5, c6, c7
}

// optional is input i of in, or "" where the node has none.
func optional(in []string, i int) string {
	if i < len(in) {
		return in[i]
	}
	return ""
}
