// Package goengine runs small ONNX graphs in pure Go, for devices without
// ONNX Runtime: the dense models the trainer produces (Gemm or MatMul+Add
// with Relu, Tanh, Sigmoid or Softmax), in float32. It answers the same
// calls as the ONNX Runtime session, and both pass one conformance suite.
package goengine

import (
	"encoding/binary"
	"fmt"
	"math"

	"google.golang.org/protobuf/proto"

	"github.com/outpost-edge/outpost/models/onnx/onnxpb"
)

// matrix is a row-major [rows, cols] tensor.
type matrix struct {
	rows, cols int
	data       []float32
	// kind of the values data holds exactly: 0 float, 'i' int8, 'u' uint8
	// (quantized values travel as float32, which holds them exactly).
	kind byte
}

type node struct {
	op      string
	in, out []string
	transB  bool
	alpha   float32
	beta    float32
	axis    int // DequantizeLinear/QuantizeLinear per-channel axis
	q       *qgemm
}

// Engine is a loaded graph.
type Engine struct {
	input, output string
	width         int
	consts        map[string]matrix
	nodes         []node
}

// Load parses an ONNX model and checks that every op is supported.
func Load(model []byte) (*Engine, error) {
	var m onnxpb.ModelProto
	if err := proto.Unmarshal(model, &m); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrModel, err)
	}
	g := m.GetGraph()
	if g == nil || len(g.GetOutput()) != 1 {
		return nil, fmt.Errorf("%w: need a graph with one output", ErrModel)
	}
	e := &Engine{consts: map[string]matrix{}, output: g.GetOutput()[0].GetName()}
	// Name an unsupported op before any weight it would need.
	for _, n := range g.GetNode() {
		if !supported[n.GetOpType()] {
			return nil, fmt.Errorf("%w: op %s", ErrUnsupported, n.GetOpType())
		}
	}
	for _, t := range g.GetInitializer() {
		mt, err := tensor(t)
		if err != nil {
			return nil, err
		}
		e.consts[t.GetName()] = mt
	}
	for _, in := range g.GetInput() {
		if _, isConst := e.consts[in.GetName()]; !isConst {
			if e.input != "" {
				return nil, fmt.Errorf("%w: more than one input", ErrModel)
			}
			e.input = in.GetName()
		}
	}
	if dims := g.GetOutput()[0].GetType().GetTensorType().GetShape().GetDim(); len(dims) == 2 {
		e.width = int(dims[1].GetDimValue())
	}
	for _, n := range g.GetNode() {
		nd := node{op: n.GetOpType(), in: n.GetInput(), out: n.GetOutput(), alpha: 1, beta: 1, axis: 1}
		for _, a := range n.GetAttribute() {
			switch a.GetName() {
			case "transB":
				nd.transB = a.GetI() == 1
			case "transA":
				if a.GetI() != 0 {
					return nil, fmt.Errorf("%w: Gemm transA", ErrUnsupported)
				}
			case "alpha":
				nd.alpha = a.GetF()
			case "beta":
				nd.beta = a.GetF()
			case "axis": // Softmax, Flatten: the feature axis of [rows, cols]; (De)QuantizeLinear: 0 or 1
				ax := a.GetI()
				if ax == -1 {
					ax = 1
				}
				if ax != 1 && !(ax == 0 && (nd.op == "QuantizeLinear" || nd.op == "DequantizeLinear")) {
					return nil, fmt.Errorf("%w: %s axis %d", ErrUnsupported, nd.op, a.GetI())
				}
				nd.axis = int(ax)
			case "to": // Cast: only to float, the engine's one value type
				if a.GetI() != int64(onnxpb.TensorProto_FLOAT) {
					return nil, fmt.Errorf("%w: Cast to %d", ErrUnsupported, a.GetI())
				}
			case "axes": // ReduceMean over the feature axis only
				if ax := a.GetInts(); len(ax) != 1 || (ax[0] != 1 && ax[0] != -1) {
					return nil, fmt.Errorf("%w: ReduceMean axes %v", ErrUnsupported, ax)
				}
			case "keepdims":
				if a.GetI() != 1 {
					return nil, fmt.Errorf("%w: ReduceMean keepdims 0", ErrUnsupported)
				}
			}
		}
		e.nodes = append(e.nodes, nd)
	}
	folded, err := e.fold()
	if err != nil {
		return nil, err
	}
	e.fuse(folded)
	return e, nil
}

// fold evaluates, once, the nodes whose inputs are all constants (a
// weight's DequantizeLinear or Cast from fp16), and returns the folded
// nodes by output name.
func (e *Engine) fold() (map[string]node, error) {
	folded := map[string]node{}
	constOnly := func(name string) (matrix, error) {
		if m, ok := e.consts[name]; ok {
			return m, nil
		}
		return matrix{}, fmt.Errorf("%w: %s is not constant", ErrModel, name)
	}
	kept := e.nodes[:0]
	for _, n := range e.nodes {
		allConst := true
		for _, in := range n.in {
			if _, ok := e.consts[in]; in != "" && !ok {
				allConst = false
			}
		}
		if !allConst {
			kept = append(kept, n)
			continue
		}
		out, err := e.evalNode(n, constOnly)
		if err != nil {
			return nil, err
		}
		e.consts[n.out[0]] = out
		folded[n.out[0]] = n
	}
	e.nodes = kept
	return folded, nil
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
}

// fuse marks the Gemm and MatMul nodes that can run as qgemm.
func (e *Engine) fuse(folded map[string]node) {
	producer := map[string]node{}
	for _, n := range e.nodes {
		producer[n.out[0]] = n
	}
	for i, n := range e.nodes {
		if (n.op != "Gemm" && n.op != "MatMul") || len(n.in) < 2 {
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
		rows, cols := wq.rows, wq.cols
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
			e.nodes[i].q = q
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
func (q *qgemm) run(x matrix, alpha float32) (matrix, error) {
	if x.cols != q.in {
		return matrix{}, fmt.Errorf("%w: [%d,%d] for %d inputs", ErrInput, x.rows, x.cols, q.in)
	}
	xs := make([]int32, len(x.data))
	for i, v := range x.data {
		xs[i] = int32(v) - int32(q.zx)
	}
	n, k := len(q.sw), q.in
	out := matrix{rows: x.rows, cols: n, data: make([]float32, x.rows*n)}
	for i := 0; i < x.rows; i++ {
		xr := xs[i*k : (i+1)*k]
		for j := 0; j < n; j++ {
			wr := q.w[j*k : (j+1)*k]
			wr = wr[:len(xr)] // one bounds check, not one per element
			var acc int32
			for p, xv := range xr {
				acc += xv * wr[p]
			}
			out.data[i*n+j] = float32(acc) * q.sx * q.sw[j] * alpha
		}
	}
	return out, nil
}

// supported are the ops the engine runs, on [rows, cols] values.
var supported = map[string]bool{"Gemm": true, "MatMul": true, "Add": true, "Relu": true, "Tanh": true, "Sigmoid": true,
	"Softmax": true, "Identity": true, "Flatten": true, "Sub": true, "Mul": true, "ReduceMean": true,
	"QuantizeLinear": true, "DequantizeLinear": true, "Cast": true}

func tensor(t *onnxpb.TensorProto) (matrix, error) {
	var data []float32
	var kind byte
	raw := t.GetRawData()
	switch onnxpb.TensorProto_DataType(t.GetDataType()) {
	case onnxpb.TensorProto_FLOAT:
		data = t.GetFloatData()
		if len(raw) > 0 {
			data = make([]float32, len(raw)/4)
			for i := range data {
				data[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
			}
		}
	case onnxpb.TensorProto_INT8, onnxpb.TensorProto_UINT8:
		kind = 'u'
		if t.GetDataType() == int32(onnxpb.TensorProto_INT8) {
			kind = 'i'
		}
		if len(raw) > 0 {
			data = make([]float32, len(raw))
			for i, b := range raw {
				if kind == 'i' {
					data[i] = float32(int8(b))
				} else {
					data[i] = float32(b)
				}
			}
		} else {
			for _, v := range t.GetInt32Data() {
				data = append(data, float32(v))
			}
		}
	case onnxpb.TensorProto_FLOAT16:
		if len(raw) > 0 {
			data = make([]float32, len(raw)/2)
			for i := range data {
				data[i] = half(binary.LittleEndian.Uint16(raw[2*i:]))
			}
		} else {
			for _, v := range t.GetInt32Data() {
				data = append(data, half(uint16(v)))
			}
		}
	default:
		return matrix{}, fmt.Errorf("%w: initializer %s of type %s", ErrUnsupported, t.GetName(), onnxpb.TensorProto_DataType(t.GetDataType()))
	}
	dims := t.GetDims()
	switch len(dims) {
	case 0:
		return matrix{rows: 1, cols: 1, data: data, kind: kind}, nil
	case 1:
		return matrix{rows: 1, cols: int(dims[0]), data: data, kind: kind}, nil
	case 2:
		return matrix{rows: int(dims[0]), cols: int(dims[1]), data: data, kind: kind}, nil
	}
	return matrix{}, fmt.Errorf("%w: initializer %s has rank %d", ErrUnsupported, t.GetName(), len(dims))
}

// Run evaluates the graph on rows of `features` values.
func (e *Engine) Run(x []float32, features int) ([]float32, error) {
	vals, err := e.eval(x, features)
	if err != nil {
		return nil, err
	}
	return vals[e.output].data, nil
}

// Trace evaluates the graph and returns every intermediate value by name
// (rows × cols, row-major): what calibration needs.
func (e *Engine) Trace(x []float32, features int) (map[string][]float32, error) {
	vals, err := e.eval(x, features)
	if err != nil {
		return nil, err
	}
	out := make(map[string][]float32, len(vals))
	for k, v := range vals {
		out[k] = v.data
	}
	return out, nil
}

func (e *Engine) eval(x []float32, features int) (map[string]matrix, error) {
	if features < 1 || len(x)%features != 0 {
		return nil, fmt.Errorf("%w: %d values are not rows of %d features", ErrInput, len(x), features)
	}
	vals := map[string]matrix{e.input: {rows: len(x) / features, cols: features, data: x}}
	get := func(name string) (matrix, error) {
		if m, ok := vals[name]; ok {
			return m, nil
		}
		if m, ok := e.consts[name]; ok {
			return m, nil
		}
		return matrix{}, fmt.Errorf("%w: value %s is undefined", ErrModel, name)
	}
	for _, n := range e.nodes {
		out, err := e.evalNode(n, get)
		if err != nil {
			return nil, err
		}
		vals[n.out[0]] = out
	}
	if _, err := get(e.output); err != nil {
		return nil, err
	}
	return vals, nil
}

func matmul(a, b matrix, transB bool, alpha float32) (matrix, error) {
	n, k := b.cols, b.rows
	if transB {
		n, k = b.rows, b.cols
	}
	if a.cols != k {
		return matrix{}, fmt.Errorf("%w: [%d,%d] × [%d,%d]", ErrInput, a.rows, a.cols, b.rows, b.cols)
	}
	out := matrix{rows: a.rows, cols: n, data: make([]float32, a.rows*n)}
	for i := 0; i < a.rows; i++ {
		row := a.data[i*k : (i+1)*k]
		dst := out.data[i*n : (i+1)*n]
		if transB { // dot products over contiguous rows of b
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
			br := b.data[p*n : (p+1)*n]
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

// addRow adds a [1, cols] (or [cols]) bias to every row.
func addRow(m *matrix, bias matrix, beta float32) error {
	if bias.rows != 1 || bias.cols != m.cols {
		return fmt.Errorf("%w: bias [%d,%d] for [%d,%d]", ErrUnsupported, bias.rows, bias.cols, m.rows, m.cols)
	}
	for i := range m.data {
		m.data[i] += beta * bias.data[i%m.cols]
	}
	return nil
}

// quantOp runs QuantizeLinear (y = saturate(round(x/s) + zp)) or
// DequantizeLinear (y = (x - zp)·s), per tensor or per row (axis 0) or
// column (axis 1).
func (e *Engine) quantOp(n node, a matrix, get func(string) (matrix, error)) (matrix, error) {
	s, err := get(n.in[1])
	if err != nil {
		return matrix{}, err
	}
	zp := matrix{rows: 1, cols: 1, data: []float32{0}, kind: 'u'}
	if len(n.in) > 2 && n.in[2] != "" {
		if zp, err = get(n.in[2]); err != nil {
			return matrix{}, err
		}
	}
	if len(s.data) != len(zp.data) {
		return matrix{}, fmt.Errorf("%w: %s has %d scales and %d zero points", ErrModel, n.op, len(s.data), len(zp.data))
	}
	channel := func(i int) int { return 0 }
	if len(s.data) > 1 {
		want := a.cols
		channel = func(i int) int { return i % a.cols }
		if n.axis == 0 {
			want = a.rows
			channel = func(i int) int { return i / a.cols }
		}
		if len(s.data) != want {
			return matrix{}, fmt.Errorf("%w: %s has %d scales for axis %d of [%d,%d]", ErrModel, n.op, len(s.data), n.axis, a.rows, a.cols)
		}
	}
	out := matrix{rows: a.rows, cols: a.cols, data: make([]float32, len(a.data))}
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

// evalNode computes one node's output from its inputs.
func (e *Engine) evalNode(n node, get func(string) (matrix, error)) (matrix, error) {
	a, err := get(n.in[0])
	if err != nil {
		return matrix{}, err
	}
	var out matrix
	switch n.op {
	case "Gemm", "MatMul":
		if n.q != nil {
			xq, err := get(n.q.xq)
			if err != nil {
				return matrix{}, err
			}
			if out, err = n.q.run(xq, n.alpha); err != nil {
				return matrix{}, err
			}
		} else {
			b, err := get(n.in[1])
			if err != nil {
				return matrix{}, err
			}
			if out, err = matmul(a, b, n.transB, n.alpha); err != nil {
				return matrix{}, err
			}
		}
		if n.op == "Gemm" && len(n.in) > 2 {
			c, err := get(n.in[2])
			if err != nil {
				return matrix{}, err
			}
			if err := addRow(&out, c, n.beta); err != nil {
				return matrix{}, err
			}
		}
	case "Add":
		b, err := get(n.in[1])
		if err != nil {
			return matrix{}, err
		}
		out = matrix{rows: a.rows, cols: a.cols, data: append([]float32(nil), a.data...)}
		if err := addRow(&out, b, 1); err != nil {
			return matrix{}, err
		}
	case "Sub", "Mul":
		b, err := get(n.in[1])
		if err != nil {
			return matrix{}, err
		}
		if out, err = elementwise(n.op, a, b); err != nil {
			return matrix{}, err
		}
	case "Identity", "Flatten": // values are [rows, cols] already
		out = a
	case "Cast": // to float (checked at load): quantized values are floats already
		out = a
		out.kind = 0
	case "QuantizeLinear", "DequantizeLinear":
		if out, err = e.quantOp(n, a, get); err != nil {
			return matrix{}, err
		}
	case "ReduceMean":
		out = matrix{rows: a.rows, cols: 1, data: make([]float32, a.rows)}
		for r := 0; r < a.rows; r++ {
			var sum float64
			for _, v := range a.data[r*a.cols : (r+1)*a.cols] {
				sum += float64(v)
			}
			out.data[r] = float32(sum / float64(a.cols))
		}
	default:
		out = apply(n.op, a)
	}
	return out, nil
}

// half converts an IEEE 754 binary16 value.
func half(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	frac := uint32(h) & 0x3ff
	switch {
	case exp == 0 && frac == 0:
		return math.Float32frombits(sign)
	case exp == 0: // subnormal
		return float32(math.Copysign(float64(frac)/1024*math.Pow(2, -14), float64(int32(sign)|1)))
	case exp == 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | frac<<13)
	}
	return math.Float32frombits(sign | (exp+112)<<23 | frac<<13)
}

// elementwise applies Sub or Mul to two values of the same shape.
func elementwise(op string, a, b matrix) (matrix, error) {
	if a.rows != b.rows || a.cols != b.cols {
		return matrix{}, fmt.Errorf("%w: %s of [%d,%d] and [%d,%d]", ErrUnsupported, op, a.rows, a.cols, b.rows, b.cols)
	}
	out := matrix{rows: a.rows, cols: a.cols, data: make([]float32, len(a.data))}
	for i := range a.data {
		if op == "Sub" {
			out.data[i] = a.data[i] - b.data[i]
		} else {
			out.data[i] = a.data[i] * b.data[i]
		}
	}
	return out, nil
}

func apply(op string, a matrix) matrix {
	out := matrix{rows: a.rows, cols: a.cols, data: make([]float32, len(a.data))}
	for i, v := range a.data {
		switch op {
		case "Relu":
			out.data[i] = max(v, 0)
		case "Tanh":
			out.data[i] = float32(math.Tanh(float64(v)))
		case "Sigmoid":
			out.data[i] = float32(1 / (1 + math.Exp(-float64(v))))
		}
	}
	if op == "Softmax" {
		for r := 0; r < a.rows; r++ {
			row := a.data[r*a.cols : (r+1)*a.cols]
			mx := row[0]
			for _, v := range row {
				mx = max(mx, v)
			}
			var sum float64
			for j, v := range row {
				e := math.Exp(float64(v - mx))
				out.data[r*a.cols+j] = float32(e)
				sum += e
			}
			for j := range row {
				out.data[r*a.cols+j] = float32(float64(out.data[r*a.cols+j]) / sum)
			}
		}
	}
	return out
}

// Outputs is the output width per row, from the graph's declared shape.
func (e *Engine) Outputs() int { return e.width }

// Close releases nothing; it is here to match the ONNX Runtime session.
func (e *Engine) Close() error { return nil }

// Int8Layers counts the Gemm and MatMul nodes that run in integer
// arithmetic (statically quantized, as quant writes them).
func (e *Engine) Int8Layers() int {
	n := 0
	for _, nd := range e.nodes {
		if nd.q != nil {
			n++
		}
	}
	return n
}
