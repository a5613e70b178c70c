package goengine

import (
	"fmt"
	"math"
	"slices"
	"sort"

	"github.com/outpost-edge/outpost/models/onnx/onnxpb"
)

const mlDomain = "ai.onnx.ml"

// supported are the ops the engine runs, by domain ("" is ai.onnx).
var supported = map[string]map[string]bool{
	"": set("Gemm", "MatMul", "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min",
		"Relu", "LeakyRelu", "Tanh", "Sigmoid", "Abs", "Neg", "Exp", "Log", "Sqrt", "Clip",
		"Softmax", "LogSoftmax", "Identity", "Cast", "Constant", "Shape",
		"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Concat", "Gather", "Pad",
		"ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ArgMax", "ArgMin",
		"QuantizeLinear", "DequantizeLinear",
		"Conv", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "BatchNormalization",
		"DynamicQuantizeLinear", "MatMulInteger", "QLinearMatMul", "ConvInteger", "QLinearConv"),
	mlDomain: set("LinearClassifier", "LinearRegressor", "Scaler", "Normalizer",
		"TreeEnsembleClassifier", "TreeEnsembleRegressor", "ArrayFeatureExtractor"),
}

func set(names ...string) map[string]bool {
	m := map[string]bool{}
	for _, n := range names {
		m[n] = true
	}
	return m
}

// Ops lists the ops the engine runs, domain-qualified ("ai.onnx.Gemm",
// "ai.onnx.ml.Scaler"), sorted.
func Ops() []string {
	var out []string
	for d, ops := range supported {
		if d == "" {
			d = "ai.onnx"
		}
		for op := range ops {
			out = append(out, d+"."+op)
		}
	}
	sort.Strings(out)
	return out
}

// newNode reads a node's attributes, or says why the engine cannot run it.
func newNode(p *onnxpb.NodeProto, opsets map[string]int64) (*node, error) {
	domain := p.GetDomain()
	if domain == "ai.onnx" {
		domain = ""
	}
	shown := domain
	if shown == "" {
		shown = "ai.onnx"
	}
	op := p.GetOpType()
	if !supported[domain][op] {
		return nil, fmt.Errorf("op %s (%s)", op, shown)
	}
	need := 1
	switch op {
	case "Constant":
		need = 0
	case "Gemm", "MatMul", "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Reshape", "Gather",
		"QuantizeLinear", "DequantizeLinear", "Conv", "ArrayFeatureExtractor", "MatMulInteger", "ConvInteger":
		need = 2
	case "BatchNormalization":
		need = 5
	case "QLinearMatMul", "QLinearConv":
		need = 8
	}
	in := p.GetInput()
	if (op == "Max" || op == "Min") && len(in) != 2 {
		return nil, fmt.Errorf("op %s (%s) of %d inputs (the engine takes 2)", op, shown, len(in))
	}
	if len(p.GetOutput()) == 0 || len(in) < need || slices.Contains(in[:need], "") {
		return nil, fmt.Errorf("op %s (%s) with %d inputs and %d outputs", op, shown, len(in), len(p.GetOutput()))
	}
	n := &node{op: op, domain: domain, in: p.GetInput(), out: p.GetOutput(), opset: opsets[domain],
		attrs: map[string]*onnxpb.AttributeProto{}, alpha: 1, beta: 1, keepdims: true, to: onnxpb.TensorProto_FLOAT}
	for _, a := range p.GetAttribute() {
		n.attrs[a.GetName()] = a
	}
	switch op {
	case "Softmax", "LogSoftmax":
		n.axis = 1
		if domain == "" && n.opset >= 13 {
			n.axis = -1
		}
	case "Flatten", "QuantizeLinear", "DequantizeLinear":
		n.axis = 1
	case "LeakyRelu":
		n.alpha = 0.01
	}
	for name, a := range n.attrs {
		switch name {
		case "transA":
			n.transA = a.GetI() == 1
		case "transB":
			n.transB = a.GetI() == 1
		case "alpha":
			n.alpha = a.GetF()
		case "beta":
			n.beta = a.GetF()
		case "axis":
			n.axis = int(a.GetI())
		case "axes":
			for _, v := range a.GetInts() {
				n.axes = append(n.axes, int(v))
			}
		case "keepdims":
			n.keepdims = a.GetI() == 1
		case "select_last_index":
			if a.GetI() != 0 {
				return nil, fmt.Errorf("op %s (%s) with select_last_index", op, shown)
			}
		case "to":
			n.to = onnxpb.TensorProto_DataType(a.GetI())
			switch n.to {
			case onnxpb.TensorProto_FLOAT, onnxpb.TensorProto_DOUBLE, onnxpb.TensorProto_INT64, onnxpb.TensorProto_INT32, onnxpb.TensorProto_BOOL:
			default:
				return nil, fmt.Errorf("op Cast (%s) to %s", shown, n.to)
			}
		}
	}
	if op == "Constant" {
		v, err := constantValue(n.attrs)
		if err != nil {
			return nil, fmt.Errorf("op Constant (%s): %w", shown, err)
		}
		n.ml.value = v
	}
	return n, nil
}

// constantValue reads a Constant node's value attribute.
func constantValue(attrs map[string]*onnxpb.AttributeProto) (tensor, error) {
	if a, ok := attrs["value"]; ok {
		return fromProto(a.GetT())
	}
	if a, ok := attrs["value_float"]; ok {
		return tensor{shape: []int{}, data: []float32{a.GetF()}}, nil
	}
	if a, ok := attrs["value_floats"]; ok {
		return tensor{shape: []int{len(a.GetFloats())}, data: a.GetFloats()}, nil
	}
	if a, ok := attrs["value_int"]; ok {
		return tensor{shape: []int{}, data: []float32{float32(a.GetI())}, kind: 'l'}, nil
	}
	if a, ok := attrs["value_ints"]; ok {
		t := tensor{shape: []int{len(a.GetInts())}, kind: 'l'}
		for _, v := range a.GetInts() {
			t.data = append(t.data, float32(v))
		}
		return t, nil
	}
	return tensor{}, fmt.Errorf("no value attribute this engine reads")
}

// axisOf resolves a possibly negative axis for a value of rank r.
func axisOf(axis, r int) (int, error) {
	if axis < 0 {
		axis += r
	}
	if axis < 0 || axis >= r {
		return 0, fmt.Errorf("%w: axis %d for rank %d", ErrInput, axis, r)
	}
	return axis, nil
}

// axesInput is the axes of a reduction, Squeeze or Unsqueeze: the
// attribute (older opsets) or the optional second input.
func (n *node) axesInput(get func(string) (tensor, error)) ([]int, error) {
	if len(n.in) > 1 && n.in[1] != "" {
		t, err := get(n.in[1])
		if err != nil {
			return nil, err
		}
		return t.ints(), nil
	}
	return n.axes, nil
}

// evalNode computes one node's outputs from its inputs.
func (e *Engine) evalNode(n *node, get func(string) (tensor, error)) ([]tensor, error) {
	if n.op == "Constant" {
		return n.result(n.ml.value), nil
	}
	a, err := get(n.in[0])
	if err != nil {
		return nil, err
	}
	in := func(i int) (tensor, error) {
		if i >= len(n.in) || n.in[i] == "" {
			return tensor{}, fmt.Errorf("%w: %s needs input %d", ErrModel, n.op, i)
		}
		return get(n.in[i])
	}
	one := func(t tensor, err error) ([]tensor, error) {
		if err != nil {
			return nil, err
		}
		return n.result(t), nil
	}
	if n.domain == mlDomain {
		return e.evalML(n, a, get)
	}
	switch n.op {
	case "Gemm", "MatMul":
		return one(n.gemm(a, get))
	case "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min":
		b, err := in(1)
		if err != nil {
			return nil, err
		}
		shape, err := broadcastShape(n.dims(0), a.shape, b.shape)
		if err != nil {
			return nil, fmt.Errorf("%w: %s of %v and %v", ErrInput, n.op, a.shape, b.shape)
		}
		n.shapes[0] = shape // keep what it grew
		dst := n.buffer(0, size(shape))
		n.s.broadcast(binaryOps[n.op], a, b, shape, dst)
		return one(tensor{shape: shape, data: dst}, nil)
	case "Identity":
		return one(a, nil)
	case "Cast":
		return one(n.cast(a), nil)
	case "Shape":
		t := tensor{shape: []int{len(a.shape)}, data: n.buffer(0, len(a.shape)), kind: 'l'}
		for i, d := range a.shape {
			t.data[i] = float32(d)
		}
		return one(t, nil)
	case "Reshape":
		s, err := in(1)
		if err != nil {
			return nil, err
		}
		t, err := reshape(n.dims(0), a, s.data, n.attrs["allowzero"].GetI() == 1)
		if err == nil {
			n.shapes[0] = t.shape // keep what it grew
		}
		return one(t, err)
	case "Flatten":
		ax := n.axis
		if ax < 0 {
			ax += len(a.shape)
		}
		if ax < 0 || ax > len(a.shape) {
			return nil, fmt.Errorf("%w: Flatten axis %d of %v", ErrInput, n.axis, a.shape)
		}
		return one(view(a, n.dims(0, size(a.shape[:ax]), size(a.shape[ax:]))), nil)
	case "Squeeze", "Unsqueeze":
		axes, err := n.axesInput(get)
		if err != nil {
			return nil, err
		}
		return one(squeeze(a, axes, n.op == "Unsqueeze"))
	case "Transpose":
		return one(n.transpose(a))
	case "Pad":
		return one(n.pad(a, get))
	case "Concat":
		return one(n.concat(get))
	case "Gather":
		idx, err := in(1)
		if err != nil {
			return nil, err
		}
		return one(n.gather(a, idx))
	case "ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin":
		axes, err := n.axesInput(get)
		if err != nil {
			return nil, err
		}
		return one(n.reduce(a, axes))
	case "ArgMax", "ArgMin":
		return one(n.argmax(a))
	case "Softmax", "LogSoftmax":
		return one(n.softmax(a))
	case "Clip":
		return one(n.clip(a, get))
	case "QuantizeLinear", "DequantizeLinear":
		return one(n.quantOp(a, get))
	case "Conv":
		return one(n.conv(a, get))
	case "MaxPool", "AveragePool":
		return one(n.pool(a))
	case "GlobalAveragePool", "GlobalMaxPool":
		return one(n.globalPool(a))
	case "BatchNormalization":
		return one(n.batchNorm(a, get))
	case "DynamicQuantizeLinear":
		return n.dynamicQuantize(a), nil
	case "MatMulInteger":
		return one(n.matMulInteger(a, get))
	case "QLinearMatMul":
		return one(n.qlinearMatMul(a, get))
	case "ConvInteger":
		return one(n.convInteger(a, get))
	case "QLinearConv":
		return one(n.qlinearConv(a, get))
	}
	return one(n.unary(a), nil)
}

// view is t with another shape and the same values.
func view(t tensor, shape []int) tensor {
	t.shape = shape
	return t
}

// reshape reads the target shape spec (a constant's values) into dst.
func reshape(dst []int, a tensor, spec []float32, allowZero bool) (tensor, error) {
	shape := dst[:0]
	for range spec {
		shape = append(shape, 0)
	}
	infer := -1
	known := 1
	for i, v := range spec {
		d := int(v)
		switch {
		case d == 0 && !allowZero:
			if i >= len(a.shape) {
				return tensor{}, fmt.Errorf("%w: Reshape %v of %v", ErrInput, spec, a.shape)
			}
			d = a.shape[i]
		case d < -1:
			return tensor{}, fmt.Errorf("%w: Reshape %v", ErrInput, spec)
		case d == -1:
			if infer >= 0 {
				return tensor{}, fmt.Errorf("%w: Reshape %v has two -1", ErrInput, spec)
			}
			infer = i
			continue
		}
		shape[i] = d
		known *= d
	}
	total := size(a.shape)
	if infer >= 0 {
		if known == 0 || total%known != 0 {
			return tensor{}, fmt.Errorf("%w: Reshape %v of %v", ErrInput, spec, a.shape)
		}
		shape[infer] = total / known
	} else if known != total || !bounded(shape) {
		return tensor{}, fmt.Errorf("%w: Reshape %v of %v", ErrInput, spec, a.shape)
	}
	return view(a, shape), nil
}

func squeeze(a tensor, axes []int, unsqueeze bool) (tensor, error) {
	if unsqueeze {
		r := len(a.shape) + len(axes)
		ones := make([]bool, r)
		for _, ax := range axes {
			ax, err := axisOf(ax, r)
			if err != nil {
				return tensor{}, err
			}
			if ones[ax] {
				return tensor{}, fmt.Errorf("%w: Unsqueeze axes %v", ErrInput, axes)
			}
			ones[ax] = true
		}
		shape := make([]int, 0, r)
		j := 0
		for i := range r {
			if ones[i] {
				shape = append(shape, 1)
			} else {
				shape = append(shape, a.shape[j])
				j++
			}
		}
		return view(a, shape), nil
	}
	drop := make([]bool, len(a.shape))
	for _, ax := range axes {
		ax, err := axisOf(ax, len(a.shape))
		if err != nil {
			return tensor{}, err
		}
		if a.shape[ax] != 1 {
			return tensor{}, fmt.Errorf("%w: Squeeze axis %d of %v", ErrInput, ax, a.shape)
		}
		drop[ax] = true
	}
	var shape []int
	for i, d := range a.shape {
		if !drop[i] && (len(axes) > 0 || d != 1) {
			shape = append(shape, d)
		}
	}
	return view(a, shape), nil
}

func (n *node) cast(a tensor) tensor {
	switch n.to {
	case onnxpb.TensorProto_FLOAT, onnxpb.TensorProto_DOUBLE:
		a.kind = 0
		return a
	}
	if a.kind == 'l' {
		return a
	}
	out := tensor{shape: a.shape, data: n.buffer(0, len(a.data)), kind: 'l'}
	for i, v := range a.data {
		if n.to == onnxpb.TensorProto_BOOL {
			out.data[i] = 0
			if v != 0 {
				out.data[i] = 1
			}
			continue
		}
		out.data[i] = float32(math.Trunc(float64(v))) // as C's conversion: toward zero
	}
	return out
}

func (n *node) unary(a tensor) tensor {
	out := tensor{shape: a.shape, data: n.buffer(0, len(a.data))}
	dst := out.data
	src := a.data[:len(dst)]
	switch n.op {
	case "Relu":
		for i, v := range src {
			dst[i] = max(v, 0)
		}
	case "LeakyRelu":
		for i, v := range src {
			if v < 0 {
				v *= n.alpha
			}
			dst[i] = v
		}
	case "Tanh":
		for i, v := range src {
			dst[i] = float32(math.Tanh(float64(v)))
		}
	case "Sigmoid":
		for i, v := range src {
			dst[i] = sigmoid(v)
		}
	case "Abs":
		for i, v := range src {
			dst[i] = float32(math.Abs(float64(v)))
		}
	case "Neg":
		for i, v := range src {
			dst[i] = -v
		}
	case "Exp":
		for i, v := range src {
			dst[i] = float32(math.Exp(float64(v)))
		}
	case "Log":
		for i, v := range src {
			dst[i] = float32(math.Log(float64(v)))
		}
	case "Sqrt":
		for i, v := range src {
			dst[i] = float32(math.Sqrt(float64(v)))
		}
	}
	return out
}

func sigmoid(v float32) float32 { return float32(1 / (1 + math.Exp(-float64(v)))) }

func (n *node) clip(a tensor, get func(string) (tensor, error)) (tensor, error) {
	lo, hi := float32(math.Inf(-1)), float32(math.Inf(1))
	if v, ok := n.attrs["min"]; ok {
		lo = v.GetF()
	}
	if v, ok := n.attrs["max"]; ok {
		hi = v.GetF()
	}
	for i, p := range []*float32{&lo, &hi} {
		if len(n.in) > i+1 && n.in[i+1] != "" {
			t, err := get(n.in[i+1])
			if err != nil {
				return tensor{}, err
			}
			if len(t.data) != 1 {
				return tensor{}, fmt.Errorf("%w: Clip bound of %d values", ErrInput, len(t.data))
			}
			*p = t.data[0]
		}
	}
	out := tensor{shape: a.shape, data: n.buffer(0, len(a.data))}
	for i, v := range a.data {
		out.data[i] = min(max(v, lo), hi)
	}
	return out, nil
}

// around splits shape at axis: the product before it, its size, and the
// product after it.
func around(shape []int, axis int) (outer, mid, inner int) {
	return size(shape[:axis]), shape[axis], size(shape[axis+1:])
}

func (n *node) softmax(a tensor) (tensor, error) {
	r := len(a.shape)
	ax, err := axisOf(n.axis, r)
	if err != nil {
		return tensor{}, err
	}
	outer, mid, inner := around(a.shape, ax)
	if n.opset < 13 { // older opsets: softmax over everything from axis on
		outer, mid, inner = size(a.shape[:ax]), size(a.shape[ax:]), 1
	}
	out := tensor{shape: a.shape, data: n.buffer(0, len(a.data))}
	for o := 0; o < outer; o++ {
		for in := 0; in < inner; in++ {
			base := o*mid*inner + in
			mx := float32(math.Inf(-1))
			for k := 0; k < mid; k++ {
				mx = max(mx, a.data[base+k*inner])
			}
			var sum float64
			for k := 0; k < mid; k++ {
				ex := math.Exp(float64(a.data[base+k*inner] - mx))
				out.data[base+k*inner] = float32(ex)
				sum += ex
			}
			for k := 0; k < mid; k++ {
				i := base + k*inner
				if n.op == "LogSoftmax" {
					out.data[i] = a.data[i] - mx - float32(math.Log(sum))
				} else {
					out.data[i] = float32(float64(out.data[i]) / sum)
				}
			}
		}
	}
	return out, nil
}

func (n *node) argmax(a tensor) (tensor, error) {
	ax, err := axisOf(n.axis, len(a.shape))
	if err != nil {
		return tensor{}, err
	}
	outer, mid, inner := around(a.shape, ax)
	shape := append([]int(nil), a.shape...)
	shape[ax] = 1
	if !n.keepdims {
		shape = append(shape[:ax], shape[ax+1:]...)
	}
	out := tensor{shape: shape, data: n.buffer(0, outer*inner), kind: 'l'}
	for o := 0; o < outer; o++ {
		for in := 0; in < inner; in++ {
			base := o*mid*inner + in
			best, at := a.data[base], 0
			for k := 1; k < mid; k++ {
				v := a.data[base+k*inner]
				if n.op == "ArgMax" && v > best || n.op == "ArgMin" && v < best {
					best, at = v, k
				}
			}
			out.data[o*inner+in] = float32(at)
		}
	}
	return out, nil
}

func (n *node) reduce(a tensor, axes []int) (tensor, error) {
	r := len(a.shape)
	reduced := make([]bool, r)
	if len(axes) == 0 {
		if n.attrs["noop_with_empty_axes"].GetI() == 1 {
			return a, nil
		}
		for i := range reduced {
			reduced[i] = true
		}
	}
	for _, ax := range axes {
		ax, err := axisOf(ax, r)
		if err != nil {
			return tensor{}, err
		}
		reduced[ax] = true
	}
	var shape []int
	// strides: where input element i lands in the output.
	strides := make([]int, r)
	stride := 1
	for i := r - 1; i >= 0; i-- {
		if !reduced[i] {
			strides[i] = stride
			stride *= a.shape[i]
		}
	}
	for i, d := range a.shape {
		switch {
		case !reduced[i]:
			shape = append(shape, d)
		case n.keepdims:
			shape = append(shape, 1)
		}
	}
	out := tensor{shape: shape, data: n.buffer(0, size(shape))}
	init := float32(0)
	switch n.op {
	case "ReduceMax":
		init = float32(math.Inf(-1))
	case "ReduceMin":
		init = float32(math.Inf(1))
	}
	for i := range out.data {
		out.data[i] = init
	}
	if r == 0 {
		copy(out.data, a.data)
		return out, nil
	}
	idx := make([]int, r)
	off := 0
	for _, v := range a.data {
		switch n.op {
		case "ReduceMax":
			out.data[off] = max(out.data[off], v)
		case "ReduceMin":
			out.data[off] = min(out.data[off], v)
		default:
			out.data[off] += v
		}
		for d := r - 1; d >= 0; d-- {
			idx[d]++
			off += strides[d]
			if idx[d] < a.shape[d] {
				break
			}
			off -= strides[d] * a.shape[d]
			idx[d] = 0
		}
	}
	if n.op == "ReduceMean" && len(out.data) > 0 {
		k := float32(len(a.data) / len(out.data))
		for i := range out.data {
			out.data[i] /= k
		}
	}
	return out, nil
}

func (n *node) transpose(a tensor) (tensor, error) {
	r := len(a.shape)
	perm := make([]int, r)
	if p, ok := n.attrs["perm"]; ok {
		if len(p.GetInts()) != r {
			return tensor{}, fmt.Errorf("%w: Transpose perm %v for rank %d", ErrInput, p.GetInts(), r)
		}
		seen := make([]bool, r)
		for i, v := range p.GetInts() {
			if v < 0 || int(v) >= r || seen[v] {
				return tensor{}, fmt.Errorf("%w: Transpose perm %v", ErrInput, p.GetInts())
			}
			perm[i], seen[v] = int(v), true
		}
	} else {
		for i := range perm {
			perm[i] = r - 1 - i
		}
	}
	shape := make([]int, r)
	inStrides := make([]int, r)
	stride := 1
	for i := r - 1; i >= 0; i-- {
		inStrides[i] = stride
		stride *= a.shape[i]
	}
	// steps: the input stride of each output dimension.
	steps := make([]int, r)
	for i, p := range perm {
		shape[i] = a.shape[p]
		steps[i] = inStrides[p]
	}
	out := tensor{shape: shape, data: n.buffer(0, len(a.data)), kind: a.kind}
	idx := make([]int, r)
	off := 0
	for i := range out.data {
		out.data[i] = a.data[off]
		for d := r - 1; d >= 0; d-- {
			idx[d]++
			off += steps[d]
			if idx[d] < shape[d] {
				break
			}
			off -= steps[d] * shape[d]
			idx[d] = 0
		}
	}
	return out, nil
}

// pad is Pad in constant mode: pads (an input from opset 11, with an
// optional constant_value; an attribute before) add values at the begin
// and end of each dimension, or remove them where negative.
func (n *node) pad(a tensor, get func(string) (tensor, error)) (tensor, error) {
	if m := string(n.attrs["mode"].GetS()); m != "" && m != "constant" {
		return tensor{}, fmt.Errorf("%w: Pad mode %q (the engine pads with a constant)", ErrModel, m)
	}
	r := len(a.shape)
	var pads []int
	value := n.attrs["value"].GetF()
	if n.opset >= 11 {
		if len(n.in) < 2 || n.in[1] == "" {
			return tensor{}, fmt.Errorf("%w: Pad needs its pads input", ErrModel)
		}
		p, err := get(n.in[1])
		if err != nil {
			return tensor{}, err
		}
		pads = p.ints()
		if len(n.in) > 2 && n.in[2] != "" {
			v, err := get(n.in[2])
			if err != nil {
				return tensor{}, err
			}
			if len(v.data) != 1 {
				return tensor{}, fmt.Errorf("%w: Pad constant_value of %d values", ErrInput, len(v.data))
			}
			value = v.data[0]
		}
		if len(n.in) > 3 && n.in[3] != "" {
			return tensor{}, fmt.Errorf("%w: Pad with axes (the engine takes pads for every dimension)", ErrModel)
		}
	} else {
		for _, v := range n.attrs["pads"].GetInts() {
			pads = append(pads, int(v))
		}
	}
	if len(pads) != 2*r {
		return tensor{}, fmt.Errorf("%w: Pad of %d pads for rank %d", ErrInput, len(pads), r)
	}
	if r == 0 {
		return a, nil
	}
	shape := make([]int, r)
	for d := range r {
		shape[d] = a.shape[d] + pads[d] + pads[r+d]
		if shape[d] < 0 {
			return tensor{}, fmt.Errorf("%w: Pad %v removes more than %v holds", ErrInput, pads, a.shape)
		}
	}
	if !bounded(shape) {
		return tensor{}, fmt.Errorf("%w: Pad to %v", ErrInput, shape)
	}
	out := tensor{shape: shape, data: n.buffer(0, size(shape)), kind: a.kind}
	for i := range out.data {
		out.data[i] = value
	}
	// Copy row by row along the last dimension, skipping rows outside.
	last := r - 1
	lo, hi := max(0, -pads[last]), min(a.shape[last], shape[last]-pads[last])
	idx := make([]int, r)
	for row := 0; row < size(a.shape[:last]) && lo < hi; row++ {
		off, inside := 0, true
		for d := range last {
			o := idx[d] + pads[d]
			inside = inside && o >= 0 && o < shape[d]
			off = off*shape[d] + o
		}
		if inside {
			src := row * a.shape[last]
			dst := off*shape[last] + pads[last]
			copy(out.data[dst+lo:dst+hi], a.data[src+lo:src+hi])
		}
		for d := last - 1; d >= 0; d-- {
			if idx[d]++; idx[d] < a.shape[d] {
				break
			}
			idx[d] = 0
		}
	}
	return out, nil
}

func (n *node) concat(get func(string) (tensor, error)) (tensor, error) {
	var parts []tensor
	for _, name := range n.in {
		t, err := get(name)
		if err != nil {
			return tensor{}, err
		}
		parts = append(parts, t)
	}
	r := len(parts[0].shape)
	ax, err := axisOf(n.axis, r)
	if err != nil {
		return tensor{}, err
	}
	shape := append([]int(nil), parts[0].shape...)
	shape[ax] = 0
	for _, p := range parts {
		if len(p.shape) != r {
			return tensor{}, fmt.Errorf("%w: Concat of ranks %d and %d", ErrInput, r, len(p.shape))
		}
		for i := range p.shape {
			if i != ax && p.shape[i] != parts[0].shape[i] {
				return tensor{}, fmt.Errorf("%w: Concat of %v and %v on axis %d", ErrInput, parts[0].shape, p.shape, ax)
			}
		}
		shape[ax] += p.shape[ax]
	}
	out := tensor{shape: shape, data: n.buffer(0, size(shape))}
	outer := size(shape[:ax])
	at := 0
	for o := 0; o < outer; o++ {
		for _, p := range parts {
			block := size(p.shape[ax:])
			at += copy(out.data[at:], p.data[o*block:(o+1)*block])
		}
	}
	return out, nil
}

func (n *node) gather(a, idx tensor) (tensor, error) {
	ax, err := axisOf(n.axis, len(a.shape))
	if err != nil {
		return tensor{}, err
	}
	outer, mid, inner := around(a.shape, ax)
	shape := append(append(append([]int(nil), a.shape[:ax]...), idx.shape...), a.shape[ax+1:]...)
	out := tensor{shape: shape, data: n.buffer(0, outer*len(idx.data)*inner), kind: a.kind}
	at := 0
	for o := 0; o < outer; o++ {
		for _, v := range idx.data {
			k := int(v)
			if k < 0 {
				k += mid
			}
			if k < 0 || k >= mid {
				return tensor{}, fmt.Errorf("%w: Gather index %d of %d", ErrInput, int(v), mid)
			}
			at += copy(out.data[at:], a.data[(o*mid+k)*inner:(o*mid+k+1)*inner])
		}
	}
	return out, nil
}
