// Package goengine runs ONNX graphs in pure Go, for devices without ONNX
// Runtime (armv7): the dense models the trainer produces, and what
// exporters such as skl2onnx write for linear models, scalers, MLPs and
// tree ensembles (standard ops with numpy broadcasting, and the ai.onnx.ml
// ops), in float32. It answers the same calls as the ONNX Runtime session,
// and both pass one conformance suite. Ops lists what it runs.
package goengine

import (
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"

	"google.golang.org/protobuf/proto"

	"github.com/outpost-edge/outpost/models/onnx"
	"github.com/outpost-edge/outpost/models/onnx/onnxpb"
)

// node is one graph node with its attributes read once at load.
type node struct {
	op, domain string
	in, out    []string
	attrs      map[string]*onnxpb.AttributeProto
	opset      int64 // of the node's domain
	// Attributes the kernels read on every run.
	transA, transB bool
	alpha, beta    float32
	axis           int // Softmax, Flatten, Concat, ArgMax, (De)QuantizeLinear; negative counts from the end
	axes           []int
	keepdims       bool
	to             onnxpb.TensorProto_DataType // Cast
	q              *qgemm
	folded         bool   // an op a fold turned into Identity, dropped at load
	qi             *qgemm // MatMulInteger on constant int8 weights
	ml             mlOp
	// bufs are the node's output buffers, shapes their shapes and outs
	// the result slice: grown once and reused per run.
	bufs   [][]float32
	shapes [][]int
	outs   []tensor
	acc    []int32 // integer products' sums
	s      scratch
}

// dims is a reusable shape slice k holding d.
func (n *node) dims(k int, d ...int) []int {
	for len(n.shapes) <= k {
		n.shapes = append(n.shapes, nil)
	}
	n.shapes[k] = append(n.shapes[k][:0], d...)
	return n.shapes[k]
}

// result is n's reusable result slice holding ts.
func (n *node) result(ts ...tensor) []tensor {
	n.outs = append(n.outs[:0], ts...)
	return n.outs
}

// buffer is output k's buffer with room for n values.
func (n *node) buffer(k, size int) []float32 {
	for len(n.bufs) <= k {
		n.bufs = append(n.bufs, nil)
	}
	if cap(n.bufs[k]) < size {
		n.bufs[k] = make([]float32, size)
	}
	return n.bufs[k][:size]
}

// Engine is a loaded graph. Runs are serialised: buffers are reused.
type Engine struct {
	inputs []input
	names  []string // the inputs' names, for onnx.Match
	output string
	label  string // served by RunLabels, if named
	width  int
	consts map[string]tensor
	nodes  []*node
	mu     sync.Mutex
	vals   map[string]tensor
	// Per-run scratch, kept so a run allocates nothing once grown: Run's
	// one feed and its shape, and Match's order.
	one      [1]onnx.Feed
	oneShape [2]int64
	order    []int
}

// input is one graph input (not an initializer) as the graph declares it.
type input struct {
	name string
	elem onnxpb.TensorProto_DataType
	// dims are the declared dimensions, -1 where symbolic; ranked is
	// false where the graph declares no shape at all (any feed fits).
	dims   []int64
	ranked bool
	shape  []int // this run's
}

// Options choose what a loaded engine serves.
type Options struct {
	// Output names the scores output. Empty: the graph's only output, or
	// its only float output (onnx.ScoresOutput), as ONNX Runtime's session.
	Output string
	// Label names an exporter's label output for RunLabels; empty: labels
	// are not computed, and their branch is not loaded.
	Label string
}

// Load parses an ONNX model and checks that every op it needs is
// supported; it serves the default scores output.
func Load(model []byte) (*Engine, error) { return LoadWith(model, Options{}) }

// LoadWith parses an ONNX model for the scores output o names. Only the
// nodes that output depends on are kept, so an exporter's label branch
// (ArgMax, ArrayFeatureExtractor, Cast to string) costs nothing; every
// unsupported op among them is named at once, with its domain.
func LoadWith(model []byte, o Options) (*Engine, error) {
	var m onnxpb.ModelProto
	if err := proto.Unmarshal(model, &m); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrModel, err)
	}
	g := m.GetGraph()
	if g == nil {
		return nil, fmt.Errorf("%w: no graph", ErrModel)
	}
	info, err := onnx.Inspect(model)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrModel, err)
	}
	out, err := onnx.ScoresOutput(info.Outputs, o.Output)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrModel, err)
	}
	if out.Kind != "" || out.Type != "FLOAT" {
		return nil, fmt.Errorf("%w: scores output %s is %s%s, want float", ErrModel, out.Name, out.Type, out.Kind)
	}
	e := &Engine{consts: map[string]tensor{}, output: out.Name, label: o.Label, vals: map[string]tensor{}}
	if o.Label != "" {
		if _, err := onnx.ScoresOutput(info.Outputs, o.Label); err != nil {
			return nil, fmt.Errorf("%w: label: %w", ErrModel, err)
		}
	}
	if len(out.Shape) == 2 {
		fmt.Sscan(out.Shape[1], &e.width)
	}
	opsets := map[string]int64{}
	for _, os := range m.GetOpsetImport() {
		d := os.GetDomain()
		if d == "ai.onnx" {
			d = ""
		}
		opsets[d] = os.GetVersion()
	}
	weights := map[string]bool{}
	for _, t := range g.GetInitializer() {
		weights[t.GetName()] = true
	}
	for _, in := range g.GetInput() {
		if weights[in.GetName()] {
			continue
		}
		tt := in.GetType().GetTensorType()
		if tt == nil {
			return nil, fmt.Errorf("%w: input %s is not a tensor", ErrUnsupported, in.GetName())
		}
		gi := input{name: in.GetName(), elem: onnxpb.TensorProto_DataType(tt.GetElemType()), ranked: tt.GetShape() != nil}
		if _, ok := inputKinds[gi.elem]; !ok {
			return nil, fmt.Errorf("%w: input %s of type %s", ErrUnsupported, gi.name, gi.elem)
		}
		for _, d := range tt.GetShape().GetDim() {
			v := int64(-1) // symbolic or unknown, as ONNX Runtime reports it
			if _, fixed := d.GetValue().(*onnxpb.TensorShapeProto_Dimension_DimValue); fixed {
				v = d.GetDimValue()
			}
			gi.dims = append(gi.dims, v)
		}
		e.inputs = append(e.inputs, gi)
		e.names = append(e.names, gi.name)
	}
	if len(e.inputs) == 0 {
		return nil, fmt.Errorf("%w: no input", ErrModel)
	}
	served := []string{e.output}
	if e.label != "" {
		served = append(served, e.label)
	}
	needed := onnx.Feeding(g.GetNode(), served...)
	// Name every unsupported op and attribute before any weight is read.
	var problems []string
	used := map[string]bool{e.output: true, e.label: true}
	for _, n := range needed {
		for _, in := range n.GetInput() {
			used[in] = true
		}
		nd, err := newNode(n, opsets)
		if err != nil {
			problems = append(problems, err.Error())
			continue
		}
		e.nodes = append(e.nodes, nd)
	}
	if len(problems) > 0 {
		sort.Strings(problems)
		return nil, fmt.Errorf("%w: %s", ErrUnsupported, strings.Join(slices.Compact(problems), "; "))
	}
	for _, t := range g.GetInitializer() {
		if !used[t.GetName()] {
			continue // feeds only outputs the engine does not serve
		}
		mt, err := fromProto(t)
		if err != nil {
			return nil, err
		}
		e.consts[t.GetName()] = mt
	}
	for _, nd := range e.nodes {
		if nd.domain == mlDomain {
			if err := nd.prepareML(); err != nil {
				return nil, err
			}
		}
	}
	folded, err := e.fold()
	if err != nil {
		return nil, err
	}
	e.fuse(folded)
	return e, nil
}

// fold evaluates, once, the nodes whose inputs are all constants (a
// weight's DequantizeLinear, a Cast from fp16, a shape), and returns the
// folded nodes by output name.
func (e *Engine) fold() (map[string]*node, error) {
	folded := map[string]*node{}
	constOnly := func(name string) (tensor, error) {
		if m, ok := e.consts[name]; ok {
			return m, nil
		}
		return tensor{}, fmt.Errorf("%w: %s is not constant", ErrModel, name)
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
		outs, err := e.evalNode(n, constOnly)
		if err != nil {
			return nil, err
		}
		for k, o := range outs[:min(len(outs), len(n.out))] {
			e.consts[n.out[k]] = o
			folded[n.out[k]] = n
		}
		n.bufs = nil // the constants own them now
	}
	e.nodes = kept
	return folded, nil
}

// inputKinds are the input element types the engine takes, and the kind
// their values carry (see tensor).
var inputKinds = map[onnxpb.TensorProto_DataType]byte{
	onnxpb.TensorProto_FLOAT:  0,
	onnxpb.TensorProto_DOUBLE: 0,
	onnxpb.TensorProto_UINT8:  'u',
	onnxpb.TensorProto_INT8:   'i',
	onnxpb.TensorProto_INT32:  'l',
	onnxpb.TensorProto_INT64:  'l',
}

// Run evaluates the graph on rows of `features` values and returns the
// scores, row-major. The graph must have one input: Run is RunFeeds with
// one feed of shape [rows, features].
func (e *Engine) Run(x []float32, features int) ([]float32, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.evalRows(x, features); err != nil {
		return nil, err
	}
	return append([]float32(nil), e.vals[e.output].data...), nil
}

// RunFeeds evaluates the graph on one feed per graph input and returns the
// scores, row-major. The feeds' data is read during the call only.
func (e *Engine) RunFeeds(feeds []onnx.Feed) ([]float32, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.eval(feeds); err != nil {
		return nil, err
	}
	return append([]float32(nil), e.vals[e.output].data...), nil
}

// RunLabels evaluates the graph and returns the label output Options.Label
// names, one per row: class names, or integer classes in decimal.
func (e *Engine) RunLabels(x []float32, features int) ([]string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.label == "" {
		return nil, fmt.Errorf("%w: no label output was named at load", ErrModel)
	}
	if err := e.evalRows(x, features); err != nil {
		return nil, err
	}
	v, ok := e.vals[e.label]
	if !ok {
		if v, ok = e.consts[e.label]; !ok {
			return nil, fmt.Errorf("%w: value %s is undefined", ErrModel, e.label)
		}
	}
	if v.strs != nil {
		return append([]string(nil), v.strs...), nil
	}
	out := make([]string, len(v.data))
	for i, f := range v.data {
		out[i] = strconv.FormatInt(int64(f), 10)
	}
	return out, nil
}

// Trace evaluates the graph and returns every intermediate value by name
// (row-major): what calibration needs.
func (e *Engine) Trace(x []float32, features int) (map[string][]float32, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.evalRows(x, features); err != nil {
		return nil, err
	}
	return e.traced(), nil
}

// TraceFeeds is Trace for a graph's feeds.
func (e *Engine) TraceFeeds(feeds []onnx.Feed) (map[string][]float32, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.eval(feeds); err != nil {
		return nil, err
	}
	return e.traced(), nil
}

func (e *Engine) traced() map[string][]float32 {
	out := make(map[string][]float32, len(e.vals))
	for k, v := range e.vals {
		out[k] = append([]float32(nil), v.data...)
	}
	return out
}

// evalRows evaluates the graph's one input on rows of features values.
func (e *Engine) evalRows(x []float32, features int) error {
	if len(e.inputs) != 1 {
		return fmt.Errorf("%w: the graph takes %d inputs (%s); feed them by name", ErrInput, len(e.inputs), strings.Join(e.names, ", "))
	}
	if features < 1 || len(x)%features != 0 {
		return fmt.Errorf("%w: %d values are not rows of %d features", ErrInput, len(x), features)
	}
	// The feed lives in the engine, so Run allocates no slice for it.
	e.oneShape = [2]int64{int64(len(x) / features), int64(features)}
	e.one[0] = onnx.Feed{Name: e.inputs[0].name, Shape: e.oneShape[:], Data: x}
	err := e.eval(e.one[:])
	e.one[0].Data = nil // keep no reference to the caller's rows
	return err
}

// bind checks the feeds against the graph's inputs and makes them the
// run's input values.
func (e *Engine) bind(feeds []onnx.Feed) error {
	order, err := onnx.Match(e.order, e.names, feeds)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInput, err)
	}
	e.order = order
	for i := range e.inputs {
		in := &e.inputs[i]
		f := feeds[order[i]]
		if err := f.Check(); err != nil {
			return fmt.Errorf("%w: %w", ErrInput, err)
		}
		if in.ranked {
			if err := f.Fits(in.dims); err != nil {
				return fmt.Errorf("%w: %w", ErrInput, err)
			}
		}
		if err := f.CheckValues(in.elem); err != nil {
			return fmt.Errorf("%w: %w", ErrInput, err)
		}
		in.shape = in.shape[:0]
		for _, d := range f.Shape {
			in.shape = append(in.shape, int(d))
		}
		if !bounded(in.shape) {
			return fmt.Errorf("%w: input %s has shape %v", ErrInput, in.name, f.Shape)
		}
		e.vals[in.name] = tensor{shape: in.shape, data: f.Data, kind: inputKinds[in.elem]}
	}
	return nil
}

func (e *Engine) eval(feeds []onnx.Feed) error {
	clear(e.vals)
	if err := e.bind(feeds); err != nil {
		return err
	}
	get := func(name string) (tensor, error) {
		if m, ok := e.vals[name]; ok {
			return m, nil
		}
		if m, ok := e.consts[name]; ok {
			return m, nil
		}
		return tensor{}, fmt.Errorf("%w: value %s is undefined", ErrModel, name)
	}
	for _, n := range e.nodes {
		outs, err := e.evalNode(n, get)
		if err != nil {
			return fmt.Errorf("%s %s: %w", n.op, n.out[0], err)
		}
		for k, o := range outs[:min(len(outs), len(n.out))] {
			e.vals[n.out[k]] = o
		}
	}
	out, err := get(e.output)
	if err != nil {
		return err
	}
	e.vals[e.output] = out
	return nil
}

// Outputs is the scores' width per row, from the graph's declared shape.
func (e *Engine) Outputs() int { return e.width }

// Close releases nothing; it is here to match the ONNX Runtime session.
func (e *Engine) Close() error { return nil }

// Int8Layers counts the products that run on the packed int8 kernel: Gemm
// and MatMul nodes statically quantized as quant writes them, and
// MatMulInteger on constant int8 weights (dynamic).
func (e *Engine) Int8Layers() int {
	n := 0
	for _, nd := range e.nodes {
		if nd.q != nil || nd.qi != nil {
			n++
		}
	}
	return n
}
