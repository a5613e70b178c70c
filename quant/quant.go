// Package quant quantizes ONNX models after training: static int8 (weights
// per channel, symmetric; activations per tensor, asymmetric, from
// calibration; QDQ ONNX on each quantized op's input and output, which
// ONNX Runtime fuses into QGemm and QLinearConv), dynamic int8
// (DynamicQuantizeLinear with MatMulInteger, Convs lowered to it by
// im2col, which ORT fuses into DynamicQuantizeMatMul; ConvInteger where
// a Conv cannot be lowered) and fp16 (weights stored in half
// precision). The pure-Go engine runs all of them. Ops it cannot quantize
// stay float.
package quant

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/outpost-edge/outpost/models/onnx/onnxpb"
)

// Modes of quantization (the manifest's quantization field).
const (
	Static  = "int8-static"
	Dynamic = "int8-dynamic"
	FP16    = "fp16"
)

// Calibration methods for activation ranges.
const (
	MinMax     = "minmax"
	Percentile = "percentile"
	MSE        = "mse"
	Entropy    = "entropy"
)

var (
	// ErrOptions means the quantization options are wrong.
	ErrOptions = errors.New("quant: invalid options")
	// ErrModel means the model cannot be quantized.
	ErrModel = errors.New("quant: cannot quantize model")
)

// Options choose how to quantize.
type Options struct {
	Mode string
	// Calibration and Samples (rows of feature vectors) are for Static.
	Calibration string
	Samples     [][]float32
	// Percentile clips activations to this percentile (e.g. 99.99) with
	// Calibration percentile.
	Percentile float64
	// FullRange uses all 8 bits for weights. By default weights use 7
	// (±63): ONNX Runtime's x86 int8 kernels multiply pairs into 16 bits
	// (VPMADDUBSW) and saturate with full-range weights and activations,
	// which showed as errors 8× larger than with 7-bit weights here.
	FullRange bool
	// PerTensor gives every weight one scale, PerChannel one per output
	// channel. By default Convs are per channel and Gemm and MatMul per
	// tensor, unless that would cost a weight more than one bit (see
	// perTensorFor).
	PerTensor, PerChannel bool
	// Symmetric centres each activation's range on zero (zero point 0)
	// instead of fitting it (asymmetric, the default).
	Symmetric bool
	// AllConvs quantizes Convs over fewer than 8 input channels too,
	// which stay float by default (int8 is slower there on CPU; but in
	// static int8 a 1-D one that feeds a quantized Conv, see feedsConv),
	// for accelerators that take int8 graphs only.
	AllConvs bool
	// Tracer computes the named values of the float model on rows of x,
	// for Static: ort.Trace when ONNX Runtime is available, or the pure-Go
	// engine's Trace. quant runs no engine of its own, so it quantizes any
	// graph some engine can run.
	Tracer Tracer
}

// Scheme says in words how o quantizes weights and activations.
func Scheme(o Options) string {
	if o.Mode == FP16 {
		return "weights fp16, activations float"
	}
	bits, per := "7-bit", "per channel on Conv, per tensor on Gemm and MatMul (per channel where that would lose more than a bit)"
	if o.FullRange {
		bits = "8-bit"
	}
	switch {
	case o.PerTensor:
		per = "per tensor"
	case o.PerChannel:
		per = "per channel"
	}
	w := fmt.Sprintf("weights int8 %s %s symmetric", bits, per)
	if o.Mode == Dynamic {
		return w + ", activations uint8 per tensor asymmetric at run time"
	}
	act := "asymmetric"
	if o.Symmetric {
		act = "symmetric"
	}
	return w + ", activations int8 per tensor " + act
}

// Tracer runs the float model on rows of x (features values each) and
// returns the named values, intermediate tensors included, flattened.
type Tracer func(model []byte, names []string, x []float32, features int) (map[string][]float32, error)

// Quantize rewrites model. Gemm (without transA), MatMul and Conv nodes
// whose weights are initializers are quantized; everything else stays
// float (FloatOps names what did).
func Quantize(model []byte, o Options) ([]byte, error) {
	var m onnxpb.ModelProto
	if err := proto.Unmarshal(model, &m); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrModel, err)
	}
	g := m.GetGraph()
	if g == nil {
		return nil, fmt.Errorf("%w: no graph", ErrModel)
	}
	for _, op := range m.GetOpsetImport() {
		if op.GetDomain() == "" && op.GetVersion() < 13 {
			return nil, fmt.Errorf("%w: opset %d; per-channel QDQ needs 13 or later", ErrModel, op.GetVersion())
		}
	}
	inits := map[string]*onnxpb.TensorProto{}
	for _, t := range g.GetInitializer() {
		inits[t.GetName()] = t
	}
	switch o.Mode {
	case Static, Dynamic, FP16:
	default:
		return nil, fmt.Errorf("%w: mode %q (int8-static, int8-dynamic or fp16)", ErrOptions, o.Mode)
	}
	if o.PerTensor && o.PerChannel {
		return nil, fmt.Errorf("%w: per tensor and per channel both asked for; choose one", ErrOptions)
	}
	limit := float32(63)
	if o.FullRange {
		limit = 127
	}
	var quantized []*onnxpb.NodeProto
	for _, n := range g.GetNode() {
		if w, _, ok := weightOf(n, inits); ok {
			if narrowConv(n, w) && !o.AllConvs && o.Mode != FP16 && !(o.Mode == Static && len(w.GetDims()) == 3 && feedsConv(g, n, inits)) {
				continue
			}
			quantized = append(quantized, n)
		}
	}
	if len(quantized) == 0 {
		return nil, fmt.Errorf("%w: no Gemm, MatMul or Conv with constant weights", ErrModel)
	}
	var err error
	nm := newNamer(g)
	switch o.Mode {
	case Static:
		err = quantizeStatic(model, g, nm, inits, quantized, limit, o)
	case Dynamic:
		err = quantizeDynamic(g, nm, inits, quantized, limit, o)
	case FP16:
		var nodes []*onnxpb.NodeProto
		for _, n := range g.GetNode() {
			if w, _, ok := weightOf(n, inits); ok {
				nodes = append(nodes, toHalf(g, w, n)...)
			} else {
				nodes = append(nodes, n)
			}
		}
		g.Node = nodes
	}
	if err != nil {
		return nil, err
	}
	g.Initializer = dropUnused(g)
	out, err := proto.Marshal(&m)
	if err != nil {
		return nil, fmt.Errorf("quant: marshal: %w", err)
	}
	return out, nil
}

// quantizeStatic is QDQ as ONNX Runtime fuses it: int8 weights behind
// DequantizeLinear, and one QuantizeLinear/DequantizeLinear pair on each
// activation that enters a quantized op (its input) or leaves one (its
// output, or its Relu's): with both sides quantized, ORT's optimiser turns
// Gemm (MatMul+Add after its MatMulAddFusion) into QGemm, MatMul into
// QLinearMatMul and Conv into QLinearConv, and drops the Relu into the
// output's zero point. A pair is placed once per tensor, right after the
// op that makes it, and every reader of the tensor reads the pair's output.
func quantizeStatic(model []byte, g *onnxpb.GraphProto, nm *namer, inits map[string]*onnxpb.TensorProto, quantized []*onnxpb.NodeProto, limit float32, o Options) error {
	if len(o.Samples) == 0 {
		return fmt.Errorf("%w: static quantization needs calibration samples", ErrOptions)
	}
	if o.Tracer == nil {
		return fmt.Errorf("%w: static quantization needs a tracer to calibrate on (ort.Trace, or the pure-Go engine's Trace)", ErrOptions)
	}
	readers := map[string][]*onnxpb.NodeProto{}
	for _, n := range g.GetNode() {
		for _, in := range n.GetInput() {
			readers[in] = append(readers[in], n)
		}
	}
	outputs := map[string]bool{}
	for _, out := range g.GetOutput() {
		outputs[out.GetName()] = true
	}
	var targets []string
	seen := map[string]bool{}
	add := func(t string) {
		if !seen[t] {
			seen[t] = true
			targets = append(targets, t)
		}
	}
	for _, n := range quantized {
		if in := n.GetInput()[0]; !outputs[in] {
			add(in)
		}
		// The tail: past a MatMul's bias Add (ORT fuses the pair into
		// Gemm, then QGemm) and a Relu (its output's zero point).
		tail := n.GetOutput()[0]
		if r := readers[tail]; n.GetOpType() == "MatMul" && len(r) == 1 && r[0].GetOpType() == "Add" && len(r[0].GetInput()) == 2 {
			other := r[0].GetInput()[0]
			if other == tail {
				other = r[0].GetInput()[1]
			}
			if b := inits[other]; b != nil {
				tail = r[0].GetOutput()[0]
				flattenBias(b, readers)
			}
		}
		if n.GetOpType() == "Gemm" && len(n.GetInput()) > 2 && inits[n.GetInput()[2]] != nil {
			flattenBias(inits[n.GetInput()[2]], readers)
		}
		if r := readers[tail]; len(r) == 1 && r[0].GetOpType() == "Relu" && !outputs[tail] {
			tail = r[0].GetOutput()[0]
		}
		// A graph output too (the logits of a final Gemm, as
		// onnxruntime.quantization does): ORT leaves a Gemm float when its
		// output has no QuantizeLinear.
		add(tail)
	}
	// Through the ops ORT runs on int8 between quantized ones: a pool, a
	// Flatten or Reshape after a quantized tensor is quantized too, so that
	// no DequantizeLinear stops the integer path. Pass-through ops keep
	// their input's scale (ORT drops the pair only then); average pools
	// calibrate their own.
	same := map[string]string{}
	for _, n := range g.GetNode() {
		if len(n.GetInput()) == 0 || len(n.GetOutput()) != 1 || !seen[n.GetInput()[0]] || outputs[n.GetOutput()[0]] {
			continue
		}
		out := n.GetOutput()[0]
		switch {
		case passThrough(n.GetOpType()):
			// Also when out is already a target (the input of a later
			// Conv): its pair must carry the input's scale all the same.
			same[out] = n.GetInput()[0]
			add(out)
		case n.GetOpType() == "GlobalAveragePool" || n.GetOpType() == "AveragePool":
			add(out)
		}
	}
	// What decides (a graph output, or what a Softmax, Sigmoid or ArgMax
	// reads, directly or through pass-through ops) keeps its whole range
	// whatever the method: clipping the largest logits would make them
	// equal and change the decision.
	decisive := map[string]bool{}
	for changed := true; changed; {
		changed = false
		for _, t := range targets {
			if decisive[t] {
				continue
			}
			d := outputs[t]
			for _, r := range readers[t] {
				switch op := r.GetOpType(); {
				case op == "Softmax" || op == "LogSoftmax" || op == "Sigmoid" || op == "ArgMax":
					d = true
				case passThrough(op) && len(r.GetOutput()) > 0 && (outputs[r.GetOutput()[0]] || decisive[r.GetOutput()[0]]):
					d = true
				}
			}
			if d {
				decisive[t], changed = true, true
			}
		}
	}
	ranges, err := calibrate(model, targets, o, decisive)
	if err != nil {
		return err
	}
	// A pass-through chain takes the range of the tensor it starts from.
	for _, t := range targets {
		root := t
		for in, ok := same[root]; ok; in, ok = same[root] {
			root = in
		}
		ranges[t] = ranges[root]
	}
	// Symmetric ranges only for tensors of both signs: a Relu's output
	// keeps zero at the bottom of its range, so that ORT folds the Relu
	// into the zero point instead of running it in float.
	nonNegative := map[string]bool{}
	for _, t := range targets {
		nonNegative[t] = ranges[t][0] >= 0
	}
	deqs := map[*onnxpb.NodeProto]*onnxpb.NodeProto{}
	for _, n := range quantized {
		w, axis, _ := weightOf(n, inits)
		perTensor, err := perTensorFor(n, w, axis, limit, o)
		if err != nil {
			return err
		}
		deq, err := quantizeWeight(g, nm.next("w"), w, axis, limit, perTensor)
		if err != nil {
			return err
		}
		n.Input[1] = deq.Output[0]
		deqs[n] = deq
	}
	// The pairs, keyed by the node after which they go ("" : first).
	after := map[string][]*onnxpb.NodeProto{}
	for _, t := range targets {
		pair := quantizeActivation(g, nm.next("a"), t, ranges[t], o.Symmetric && !nonNegative[t])
		if outputs[t] {
			// The graph output keeps its name, on the DequantizeLinear.
			float := t + "_float"
			for _, n := range g.GetNode() {
				for i, out := range n.GetOutput() {
					if out == t {
						n.Output[i] = float
					}
				}
			}
			pair[0].Input[0], pair[1].Output[0] = float, t
			after[producer(g, float)] = append(after[producer(g, float)], pair...)
			continue
		}
		for _, r := range readers[t] {
			for i, in := range r.Input {
				if in == t {
					r.Input[i] = pair[1].Output[0]
				}
			}
		}
		after[producer(g, t)] = append(after[producer(g, t)], pair...)
	}
	var nodes []*onnxpb.NodeProto
	nodes = append(nodes, after[""]...)
	for _, n := range g.GetNode() {
		if d, ok := deqs[n]; ok {
			nodes = append(nodes, d)
		}
		nodes = append(nodes, n)
		nodes = append(nodes, after[n.GetOutput()[0]]...)
	}
	g.Node = nodes
	return nil
}

// flattenBias makes a [1, N] bias [N] when one node reads it: ORT turns
// only a 1-D float bias into QGemm's int32 one (skl2onnx writes [1, N],
// and its Gemms stayed float).
func flattenBias(b *onnxpb.TensorProto, readers map[string][]*onnxpb.NodeProto) {
	if d := b.GetDims(); len(d) == 2 && d[0] == 1 && len(readers[b.GetName()]) == 1 {
		b.Dims = []int64{d[1]}
	}
}

// passThrough ops move values without changing them: their output
// quantizes with their input's scale, and ORT runs them on int8 when both
// sides carry the same pair.
func passThrough(op string) bool {
	switch op {
	case "MaxPool", "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze":
		return true
	}
	return false
}

// producer is the first output of the node that makes t, or "" for a
// graph input.
func producer(g *onnxpb.GraphProto, t string) string {
	for _, n := range g.GetNode() {
		for _, out := range n.GetOutput() {
			if out == t {
				return n.GetOutput()[0]
			}
		}
	}
	return ""
}

// weightOf returns the float weight initializer of a Gemm (with transB,
// weights [out, in], channels on axis 0; without, [in, out] and axis 1),
// MatMul (weights [in, out], channels on axis 1) or Conv (weights [out,
// in, kernel...], axis 0).
func weightOf(n *onnxpb.NodeProto, inits map[string]*onnxpb.TensorProto) (*onnxpb.TensorProto, int64, bool) {
	if len(n.GetInput()) < 2 {
		return nil, 0, false
	}
	w, ok := inits[n.GetInput()[1]]
	if !ok || w.GetDataType() != int32(onnxpb.TensorProto_FLOAT) {
		return nil, 0, false
	}
	if n.GetOpType() == "Conv" { // weights [out channels, in/group, kernel...]
		return w, 0, len(w.GetDims()) >= 3
	}
	if len(w.GetDims()) != 2 {
		return nil, 0, false
	}
	switch n.GetOpType() {
	case "MatMul":
		return w, 1, true
	case "Gemm": // weights [N, K] with transB, else [K, N] as MatMul's
		axis := int64(1)
		for _, a := range n.GetAttribute() {
			if a.GetName() == "transA" && a.GetI() != 0 {
				return nil, 0, false
			}
			if a.GetName() == "transB" && a.GetI() == 1 {
				axis = 0
			}
		}
		return w, axis, true
	}
	return nil, 0, false
}

func floats(t *onnxpb.TensorProto) []float32 {
	if raw := t.GetRawData(); len(raw) > 0 {
		out := make([]float32, len(raw)/4)
		for i := range out {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
		}
		return out
	}
	return t.GetFloatData()
}

// int8Weight quantizes w with one symmetric scale per output channel
// (axis 0 or 1), or one for all (perTensor), to ±limit.
func int8Weight(w *onnxpb.TensorProto, axis int64, limit float32, perTensor bool) ([]byte, []float32, error) {
	data, channels, ch, err := weightChannels(w, axis, perTensor)
	if err != nil {
		return nil, nil, err
	}
	amax := make([]float32, channels)
	for i, v := range data {
		amax[ch(i)] = max(amax[ch(i)], float32(math.Abs(float64(v))))
	}
	scales := make([]float32, channels)
	for c, a := range amax {
		scales[c] = a / limit
		if a == 0 {
			scales[c] = 1 // an all-zero channel: any scale reproduces it
		}
	}
	q := make([]byte, len(data))
	for i, v := range data {
		x := math.RoundToEven(float64(v / scales[ch(i)]))
		q[i] = byte(int8(max(-float64(limit), min(float64(limit), x))))
	}
	return q, scales, nil
}

// weightChannels returns w's values, how many scales it gets, and which
// scale each value takes.
func weightChannels(w *onnxpb.TensorProto, axis int64, perTensor bool) ([]float32, int, func(int) int, error) {
	dims := w.GetDims()
	total := 1
	for _, d := range dims {
		total *= int(d)
	}
	data := floats(w)
	if len(data) != total || total == 0 {
		return nil, 0, nil, fmt.Errorf("%w: weight %s has %d values for %v", ErrModel, w.GetName(), len(data), dims)
	}
	channels, per := int(dims[0]), total/int(dims[0])
	ch := func(i int) int { return i / per }
	switch {
	case perTensor:
		channels, ch = 1, func(int) int { return 0 }
	case axis == 1:
		cols := int(dims[1])
		channels, ch = cols, func(i int) int { return i % cols }
	}
	return data, channels, ch, nil
}

// perTensorFor says whether n's weight w gets one scale. Unless o forces
// a choice, a Conv's weights are per channel (a folded batch norm gives
// its channels ranges far apart) and a Gemm's or MatMul's per tensor, as
// TFLite's int8 spec and onnxruntime.quantization do: ONNX Runtime's
// QGemm requantizes per-channel outputs more slowly, 6-15% a run at
// batch 1 (BenchmarkWeightGranularity). A Gemm or MatMul stays per channel
// when one scale would lose it more than a bit: a squared error over 4×
// the per-channel one.
func perTensorFor(n *onnxpb.NodeProto, w *onnxpb.TensorProto, axis int64, limit float32, o Options) (bool, error) {
	switch {
	case o.PerTensor:
		return true, nil
	case o.PerChannel || n.GetOpType() == "Conv":
		return false, nil
	}
	var errs [2]float64
	for k, perTensor := range []bool{false, true} {
		q, scales, err := int8Weight(w, axis, limit, perTensor)
		if err != nil {
			return false, err
		}
		data, _, ch, err := weightChannels(w, axis, perTensor)
		if err != nil {
			return false, err
		}
		for i, v := range data {
			d := float64(v) - float64(int8(q[i]))*float64(scales[ch(i)])
			errs[k] += d * d
		}
	}
	return errs[1] <= 4*errs[0], nil
}

// quantizeWeight replaces w by int8 values with one symmetric scale per
// output channel (or per tensor) and returns the DequantizeLinear node
// that restores it, named base.
func quantizeWeight(g *onnxpb.GraphProto, base string, w *onnxpb.TensorProto, axis int64, limit float32, perTensor bool) (*onnxpb.NodeProto, error) {
	q, scales, err := int8Weight(w, axis, limit, perTensor)
	if err != nil {
		return nil, err
	}
	channels := len(scales)
	dims := []int64{int64(channels)}
	attrs := []*onnxpb.AttributeProto{{Name: proto.String("axis"), Type: onnxpb.AttributeProto_INT.Enum(), I: proto.Int64(axis)}}
	if perTensor {
		dims, attrs = nil, nil // scalars
	}
	g.Initializer = append(g.Initializer,
		&onnxpb.TensorProto{Name: proto.String(base + "_q"), DataType: proto.Int32(int32(onnxpb.TensorProto_INT8)), Dims: w.GetDims(), RawData: q},
		&onnxpb.TensorProto{Name: proto.String(base + "_s"), DataType: proto.Int32(int32(onnxpb.TensorProto_FLOAT)), Dims: dims, FloatData: scales},
		&onnxpb.TensorProto{Name: proto.String(base + "_z"), DataType: proto.Int32(int32(onnxpb.TensorProto_INT8)), Dims: dims, RawData: make([]byte, channels)},
	)
	return &onnxpb.NodeProto{OpType: proto.String("DequantizeLinear"), Name: proto.String(base + "_DQ"),
		Input: []string{base + "_q", base + "_s", base + "_z"}, Output: []string{base + "_dq"}, Attribute: attrs, DocString: proto.String(w.GetName())}, nil
}

// quantizeDynamic is dynamic int8 as ONNX Runtime defines it: each
// quantized op's input is quantized at run time by DynamicQuantizeLinear
// (uint8, per tensor) and multiplied with int8 weights (per channel) by
// MatMulInteger; the int32 sums are cast to float and scaled, and the
// bias added, which ORT fuses into one DynamicQuantizeMatMul. A Conv
// whose input shape is fixed is lowered to that MatMul (im2col, below);
// any other stays a ConvInteger, which ORT runs unfused and several times
// slower than float. A Gemm with alpha or beta other than 1 stays float.
func quantizeDynamic(g *onnxpb.GraphProto, nm *namer, inits map[string]*onnxpb.TensorProto, quantized []*onnxpb.NodeProto, limit float32, o Options) error {
	shapes := staticShapes(g, inits)
	rewrite := map[*onnxpb.NodeProto][]*onnxpb.NodeProto{}
	dq := map[string]string{} // input tensor → its DynamicQuantizeLinear base, shared by readers
	for _, n := range quantized {
		w, axis, _ := weightOf(n, inits)
		var alpha, beta float32 = 1, 1
		for _, a := range n.GetAttribute() {
			switch a.GetName() {
			case "alpha":
				alpha = a.GetF()
			case "beta":
				beta = a.GetF()
			}
		}
		if n.GetOpType() == "Gemm" && (alpha != 1 || beta != 1) {
			continue
		}
		bias := ""
		if len(n.GetInput()) > 2 && n.GetInput()[2] != "" {
			bias = n.GetInput()[2]
		}
		perTensor, err := perTensorFor(n, w, axis, limit, o)
		if err != nil {
			return err
		}
		if n.GetOpType() == "Conv" {
			if bias != "" && inits[bias] == nil {
				return fmt.Errorf("%w: Conv %s has a bias that is not a constant", ErrModel, n.GetOutput()[0])
			}
			nodes, ok, err := im2col(g, nm, n, shapes[n.GetInput()[0]], w, inits[bias], limit, perTensor)
			if err != nil {
				return err
			}
			if ok {
				rewrite[n] = nodes
				continue
			}
		}
		q, scales, err := int8Weight(w, axis, limit, perTensor)
		if err != nil {
			return err
		}
		name, id := n.GetOutput()[0], nm.next("p")
		dims := w.GetDims()
		scaleDims := []int64{int64(len(scales))}
		if n.GetOpType() == "Gemm" && axis == 0 { // [N, K] → [K, N] for MatMulInteger
			q, dims = transposeBytes(q, int(dims[0]), int(dims[1])), []int64{dims[1], dims[0]}
		}
		if n.GetOpType() == "Conv" { // scales [1, M, 1, ...] against [N, M, spatial...]
			scaleDims = make([]int64, len(dims))
			for i := range scaleDims {
				scaleDims[i] = 1
			}
			scaleDims[1] = int64(len(scales))
			if bias != "" {
				biasDims := append([]int64(nil), scaleDims...)
				biasDims[1] = dims[0]
				g.Initializer = append(g.Initializer, &onnxpb.TensorProto{Name: proto.String(id + "_b"), DataType: proto.Int32(int32(onnxpb.TensorProto_FLOAT)), Dims: biasDims, FloatData: floats(inits[bias])})
				bias = id + "_b"
			}
		}
		x := n.GetInput()[0]
		var nodes []*onnxpb.NodeProto
		base, ok := dq[x]
		if !ok {
			base = nm.next("d")
			dq[x] = base
			nodes = append(nodes, dynamicQuantize(x, base))
		}
		g.Initializer = append(g.Initializer,
			&onnxpb.TensorProto{Name: proto.String(id + "_w"), DataType: proto.Int32(int32(onnxpb.TensorProto_INT8)), Dims: dims, RawData: q},
			&onnxpb.TensorProto{Name: proto.String(id + "_ws"), DataType: proto.Int32(int32(onnxpb.TensorProto_FLOAT)), Dims: scaleDims, FloatData: scales})
		op, attrs := "MatMulInteger", []*onnxpb.AttributeProto(nil)
		if n.GetOpType() == "Conv" {
			op, attrs = "ConvInteger", n.GetAttribute()
		}
		rewrite[n] = append(nodes, integerProduct(op, attrs, base, id, bias, name)...)
	}
	var nodes []*onnxpb.NodeProto
	for _, n := range g.GetNode() {
		if r, ok := rewrite[n]; ok {
			nodes = append(nodes, r...)
		} else {
			nodes = append(nodes, n)
		}
	}
	g.Node = nodes
	return nil
}

// FloatOps names the Gemm, MatMul and Conv nodes of a quantized model
// whose weights are still float, with the reason where quant knows it.
// An unreadable model has none.
func FloatOps(model []byte) []string {
	var m onnxpb.ModelProto
	if proto.Unmarshal(model, &m) != nil {
		return nil
	}
	inits := map[string]*onnxpb.TensorProto{}
	for _, t := range m.GetGraph().GetInitializer() {
		inits[t.GetName()] = t
	}
	var out []string
	for _, n := range m.GetGraph().GetNode() {
		w, _, ok := weightOf(n, inits)
		if !ok {
			continue
		}
		why := ""
		switch {
		case narrowConv(n, w):
			why = fmt.Sprintf(" (%d input channels: int8 would be slower; --all-convs quantizes it)", w.GetDims()[1])
		case n.GetOpType() == "Gemm":
			why = " (alpha or beta other than 1)"
		}
		out = append(out, fmt.Sprintf("%s %s%s", n.GetOpType(), n.GetOutput()[0], why))
	}
	return out
}

// minConvChannels is the fewest input channels (per group) of a Conv
// that int8 quantizes unless Options.AllConvs. Below it, a first layer on
// raw RGB or 3-axis samples, each window holds so few values that the
// integer product saves less than its overhead costs: on the 96×96 image
// CNN (ONNX Runtime, one thread, batch 1) the 3-channel layer took 76 µs
// as a static QLinearConv and 226 µs as a dynamic gathered product,
// against 49 µs float. Leaving it float made the one-layer 3-channel CNNs
// 0.90-0.96× float in static int8 instead of 0.37-0.87×.
const minConvChannels = 8

// feedsConv says whether what n makes (through a Relu) is read by a Conv
// quant quantizes. In static int8 that tensor is quantized in any case,
// so a narrow 1-D Conv before it is quantized too: the QuantizeLinear
// moves to its input, a tenth the size, and ONNX Runtime's 1-D
// QLinearConv is about as fast as its float Conv (a 2-D one runs in ORT's
// blocked float kernel, which int8 does not beat). On the sensor CNN at
// batch 32 the first layer and its QuantizeLinear took 150 µs float and
// 131 µs int8, at batch 1 12.5 and 12.7 µs.
func feedsConv(g *onnxpb.GraphProto, n *onnxpb.NodeProto, inits map[string]*onnxpb.TensorProto) bool {
	out := n.GetOutput()[0]
	readers := func(t string) []*onnxpb.NodeProto {
		var r []*onnxpb.NodeProto
		for _, m := range g.GetNode() {
			if slices.Contains(m.GetInput(), t) {
				r = append(r, m)
			}
		}
		return r
	}
	r := readers(out)
	if len(r) == 1 && r[0].GetOpType() == "Relu" {
		r = readers(r[0].GetOutput()[0])
	}
	for _, m := range r {
		if w, _, ok := weightOf(m, inits); ok && m.GetOpType() == "Conv" && !narrowConv(m, w) {
			return true
		}
	}
	return false
}

// narrowConv says whether n is an ungrouped Conv over fewer than
// minConvChannels input channels. Grouped and depthwise Convs (one
// channel per group) are not: they sit between wide layers, and leaving
// them float would break the integer path.
func narrowConv(n *onnxpb.NodeProto, w *onnxpb.TensorProto) bool {
	if n.GetOpType() != "Conv" {
		return false
	}
	for _, a := range n.GetAttribute() {
		if a.GetName() == "group" && a.GetI() != 1 {
			return false
		}
	}
	return w.GetDims()[1] < minConvChannels
}

// dynamicQuantize quantizes x at run time into base_q, base_s (its
// scale) and base_z (its zero point).
func dynamicQuantize(x, base string) *onnxpb.NodeProto {
	return &onnxpb.NodeProto{OpType: proto.String("DynamicQuantizeLinear"), Name: proto.String(base + "_DQL"),
		Input: []string{x}, Output: []string{base + "_q", base + "_s", base + "_z"}}
}

// integerProduct multiplies the dynamically quantized base_q by the int8
// weights name_w with op (MatMulInteger or ConvInteger), then casts the
// int32 sums to float, scales them by base_s × name_ws and adds bias
// (none if ""), into out.
func integerProduct(op string, attrs []*onnxpb.AttributeProto, base, name, bias, out string) []*onnxpb.NodeProto {
	final := out
	if bias != "" {
		final = name + "_nb"
	}
	nodes := []*onnxpb.NodeProto{
		{OpType: proto.String(op), Name: proto.String(name + "_int"), Attribute: attrs,
			Input: []string{base + "_q", name + "_w", base + "_z"}, Output: []string{name + "_i32"}},
		{OpType: proto.String("Cast"), Name: proto.String(name + "_cast"), Input: []string{name + "_i32"}, Output: []string{name + "_f"},
			Attribute: []*onnxpb.AttributeProto{{Name: proto.String("to"), Type: onnxpb.AttributeProto_INT.Enum(), I: proto.Int64(int64(onnxpb.TensorProto_FLOAT))}}},
		{OpType: proto.String("Mul"), Name: proto.String(name + "_scales"), Input: []string{base + "_s", name + "_ws"}, Output: []string{name + "_s"}},
		{OpType: proto.String("Mul"), Name: proto.String(name + "_rescale"), Input: []string{name + "_f", name + "_s"}, Output: []string{final}},
	}
	if bias != "" {
		nodes = append(nodes, &onnxpb.NodeProto{OpType: proto.String("Add"), Name: proto.String(name + "_add"), Input: []string{final, bias}, Output: []string{out}})
	}
	return nodes
}

func transposeBytes(q []byte, rows, cols int) []byte {
	t := make([]byte, len(q))
	for r := 0; r < rows; r++ {
		for c := 0; c < cols; c++ {
			t[c*rows+r] = q[r*cols+c]
		}
	}
	return t
}

// im2col lowers Conv n, whose input has the fixed shape in, to the
// dynamic MatMul form: the input moved channels-last (and padded), each
// output position's window gathered into a row of kernel × channels
// values (one Gather with constant indices), the rows multiplied by the
// [kernel × channels, filters] int8 weights, and the result reshaped and
// moved back channels-first. ONNX Runtime fuses the product into
// DynamicQuantizeMatMul and its transpose optimiser cancels the layout
// moves between consecutive convs (through Relu and the like). ok is
// false for what it does not lower: groups, or a shape not fixed.
func im2col(g *onnxpb.GraphProto, nm *namer, n *onnxpb.NodeProto, in []int64, w, b *onnxpb.TensorProto, limit float32, perTensor bool) ([]*onnxpb.NodeProto, bool, error) {
	wd := w.GetDims()
	rank := len(wd) - 2
	if in == nil || len(in) != rank+2 || in[1] != wd[1] {
		return nil, false, nil
	}
	ints := map[string][]int64{}
	autoPad := ""
	for _, a := range n.GetAttribute() {
		switch a.GetName() {
		case "group":
			if a.GetI() != 1 {
				return nil, false, nil
			}
		case "auto_pad":
			autoPad = string(a.GetS())
		default:
			ints[a.GetName()] = a.GetInts()
		}
	}
	kernel := wd[2:]
	if k := ints["kernel_shape"]; len(k) != 0 && !slices.Equal(k, kernel) {
		return nil, false, nil
	}
	geo, ok := window(in[2:], kernel, ints["strides"], ints["dilations"], ints["pads"], autoPad)
	if !ok {
		return nil, false, nil
	}
	filters, channels := wd[0], wd[1]
	outDims, positions := []int64{}, int64(1)
	for d := range rank {
		span := geo.padded[d] - geo.dilations[d]*(kernel[d]-1) - 1
		if span < 0 {
			return nil, false, nil // a kernel past the input: left to ConvInteger, which says so
		}
		o := span/geo.strides[d] + 1
		outDims = append(outDims, o)
		positions *= o
	}
	taps := product(kernel)
	if positions*taps > 1<<24 || product(geo.padded) > 1<<24 {
		return nil, false, nil // indices past what the pure-Go engine's float32 values hold exactly
	}
	// Weights [F, C, taps] → [taps × C, F]: row t·C + c is tap t of channel c.
	src := floats(w)
	if int64(len(src)) != filters*channels*taps {
		return nil, false, fmt.Errorf("%w: weight %s has %d values for %v", ErrModel, w.GetName(), len(src), wd)
	}
	k := taps * channels
	wm := make([]float32, k*filters)
	for f := range filters {
		for c := range channels {
			for t := range taps {
				wm[(t*channels+c)*filters+f] = src[(f*channels+c)*taps+t]
			}
		}
	}
	mat := &onnxpb.TensorProto{Name: proto.String(w.GetName()), DataType: proto.Int32(int32(onnxpb.TensorProto_FLOAT)), Dims: []int64{k, filters}, FloatData: wm}
	q, scales, err := int8Weight(mat, 1, limit, perTensor)
	if err != nil {
		return nil, false, err
	}
	name, base := n.GetOutput()[0], nm.next("c")
	i64 := func(suffix string, v ...int64) string {
		g.Initializer = append(g.Initializer, &onnxpb.TensorProto{Name: proto.String(base + suffix), DataType: proto.Int32(int32(onnxpb.TensorProto_INT64)), Dims: []int64{int64(len(v))}, Int64Data: v})
		return base + suffix
	}
	node := func(op, out string, inputs []string, attrs ...*onnxpb.AttributeProto) *onnxpb.NodeProto {
		return &onnxpb.NodeProto{OpType: proto.String(op), Name: proto.String(out), Input: inputs, Output: []string{out}, Attribute: attrs}
	}
	perm := func(p ...int64) *onnxpb.AttributeProto {
		return &onnxpb.AttributeProto{Name: proto.String("perm"), Type: onnxpb.AttributeProto_INTS.Enum(), Ints: p}
	}
	last, first := []int64{0}, []int64{0, int64(rank + 1)} // [N, C, S...] → [N, S..., C] and back
	for d := range rank {
		last, first = append(last, int64(d+2)), append(first, int64(d+1))
	}
	last = append(last, 1)
	nodes := []*onnxpb.NodeProto{node("Transpose", base+"_cl", []string{n.GetInput()[0]}, perm(last...))}
	cur := base + "_cl"
	pointwise := taps == 1 && product(geo.strides) == 1 && product(geo.padded) == product(in[2:])
	if !pointwise {
		if product(geo.padded) != product(in[2:]) {
			pads := make([]int64, 2*(rank+2))
			for d := range rank {
				pads[1+d] = geo.begin[d]
				pads[rank+2+1+d] = geo.padded[d] - in[2+d] - geo.begin[d]
			}
			nodes = append(nodes, node("Pad", base+"_pad", []string{cur, i64("_pads", pads...)}))
			cur = base + "_pad"
		}
		nodes = append(nodes, node("Reshape", base+"_flat", []string{cur, i64("_flat_shape", -1, product(geo.padded), channels)}))
		// The index of output position o's tap t in the padded, flattened
		// spatial dimensions is Σ_d (o_d·stride_d + t_d·dilation_d)·size_d:
		// a sum of 2·rank small vectors, each spread along its own axis of
		// [positions..., taps...], stored instead of the full table (which
		// took 5% of a quantized CNN's size). ONNX Runtime folds the sum
		// at load.
		var terms []string
		size := int64(1)
		for d := rank - 1; d >= 0; d-- {
			for _, part := range []struct {
				axis       int
				n, stepped int64
			}{{d, outDims[d], geo.strides[d]}, {rank + d, kernel[d], geo.dilations[d]}} {
				dims := make([]int64, 2*rank)
				for i := range dims {
					dims[i] = 1
				}
				dims[part.axis] = part.n
				var raw []byte
				for i := range part.n {
					raw = binary.LittleEndian.AppendUint32(raw, uint32(i*part.stepped*size))
				}
				t := fmt.Sprintf("%s_idx%d", base, len(terms))
				g.Initializer = append(g.Initializer, &onnxpb.TensorProto{Name: proto.String(t), DataType: proto.Int32(int32(onnxpb.TensorProto_INT32)), Dims: dims, RawData: raw})
				if len(terms) > 0 {
					sum := fmt.Sprintf("%s_idxsum%d", base, len(terms))
					nodes = append(nodes, node("Add", sum, []string{terms[len(terms)-1], t}))
					t = sum
				}
				terms = append(terms, t)
			}
			size *= geo.padded[d]
		}
		nodes = append(nodes, node("Reshape", base+"_idx", []string{terms[len(terms)-1], i64("_idx_shape", positions*taps)}))
		nodes = append(nodes, node("Gather", base+"_windows", []string{base + "_flat", base + "_idx"},
			&onnxpb.AttributeProto{Name: proto.String("axis"), Type: onnxpb.AttributeProto_INT.Enum(), I: proto.Int64(1)}))
		cur = base + "_windows"
	}
	nodes = append(nodes, node("Reshape", base+"_rows", []string{cur, i64("_rows_shape", -1, k)}))
	g.Initializer = append(g.Initializer,
		&onnxpb.TensorProto{Name: proto.String(base + "_w"), DataType: proto.Int32(int32(onnxpb.TensorProto_INT8)), Dims: []int64{k, filters}, RawData: q},
		&onnxpb.TensorProto{Name: proto.String(base + "_ws"), DataType: proto.Int32(int32(onnxpb.TensorProto_FLOAT)), Dims: []int64{int64(len(scales))}, FloatData: scales})
	bias := ""
	if b != nil {
		bias = b.GetName()
	}
	nodes = append(nodes, dynamicQuantize(base+"_rows", base+"_d"))
	nodes = append(nodes, integerProduct("MatMulInteger", nil, base+"_d", base, bias, base+"_product")...)
	nodes = append(nodes,
		node("Reshape", base+"_out", []string{base + "_product", i64("_out_shape", append(append([]int64{-1}, outDims...), filters)...)}),
		&onnxpb.NodeProto{OpType: proto.String("Transpose"), Name: proto.String(name + "_cf"), Input: []string{base + "_out"}, Output: []string{name}, Attribute: []*onnxpb.AttributeProto{perm(first...)}})
	return nodes, true, nil
}

// quantizeActivation returns a QuantizeLinear/DequantizeLinear pair
// (int8, per tensor; asymmetric unless symmetric) for tensor x, with the
// calibrated range. Signed activations with signed weights (S8S8) are
// what ONNX Runtime recommends on x86-64: U8S8 can saturate in its AVX2
// kernels.
func quantizeActivation(g *onnxpb.GraphProto, base, x string, r [2]float32, symmetric bool) []*onnxpb.NodeProto {
	lo, hi := min(r[0], 0), max(r[1], 0) // zero must be exact
	scale := (hi - lo) / 255
	if symmetric {
		scale = max(-lo, hi) / 127
	}
	if scale == 0 {
		scale = 1
	}
	zp := int8(max(-128, min(127, math.Round(float64(-128-lo/scale)))))
	if symmetric {
		zp = 0
	}
	g.Initializer = append(g.Initializer,
		&onnxpb.TensorProto{Name: proto.String(base + "_s"), DataType: proto.Int32(int32(onnxpb.TensorProto_FLOAT)), FloatData: []float32{scale}},
		&onnxpb.TensorProto{Name: proto.String(base + "_z"), DataType: proto.Int32(int32(onnxpb.TensorProto_INT8)), RawData: []byte{byte(zp)}},
	)
	return []*onnxpb.NodeProto{
		{OpType: proto.String("QuantizeLinear"), Name: proto.String(base + "_Q"), Input: []string{x, base + "_s", base + "_z"}, Output: []string{base + "_q"}},
		{OpType: proto.String("DequantizeLinear"), Name: proto.String(base + "_DQ"), Input: []string{base + "_q", base + "_s", base + "_z"}, Output: []string{base + "_dq"}},
	}
}

// toHalf stores w in fp16 and casts it back to float for n.
func toHalf(g *onnxpb.GraphProto, w *onnxpb.TensorProto, n *onnxpb.NodeProto) []*onnxpb.NodeProto {
	data := floats(w)
	raw := make([]byte, 2*len(data))
	for i, v := range data {
		binary.LittleEndian.PutUint16(raw[2*i:], toFloat16(v))
	}
	name := w.GetName()
	g.Initializer = append(g.Initializer, &onnxpb.TensorProto{Name: proto.String(name + "_fp16"), DataType: proto.Int32(int32(onnxpb.TensorProto_FLOAT16)), Dims: w.GetDims(), RawData: raw})
	n.Input[1] = name + "_f32"
	return []*onnxpb.NodeProto{
		{OpType: proto.String("Cast"), Name: proto.String(name + "_cast"), Input: []string{name + "_fp16"}, Output: []string{name + "_f32"},
			Attribute: []*onnxpb.AttributeProto{{Name: proto.String("to"), Type: onnxpb.AttributeProto_INT.Enum(), I: proto.Int64(int64(onnxpb.TensorProto_FLOAT))}}},
		n,
	}
}

// toFloat16 rounds to the nearest IEEE 754 binary16 (ties to even).
func toFloat16(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int32(b>>23&0xff) - 127 + 15
	frac := b & 0x7fffff
	switch {
	case int32(b>>23&0xff) == 0xff: // inf, nan
		if frac != 0 {
			return sign | 0x7e00
		}
		return sign | 0x7c00
	case exp >= 0x1f:
		return sign | 0x7c00
	case exp <= 0:
		if exp < -10 {
			return sign
		}
		frac |= 0x800000
		shift := uint32(14 - exp)
		half := frac >> shift
		rem := frac & (1<<shift - 1)
		mid := uint32(1) << (shift - 1)
		if rem > mid || (rem == mid && half&1 == 1) {
			half++
		}
		return sign | uint16(half)
	}
	half := uint32(exp)<<10 | frac>>13
	rem := frac & 0x1fff
	if rem > 0x1000 || (rem == 0x1000 && half&1 == 1) {
		half++
	}
	return sign | uint16(half)
}

// dropUnused removes initializers no node reads any more.
func dropUnused(g *onnxpb.GraphProto) []*onnxpb.TensorProto {
	used := map[string]bool{}
	for _, n := range g.GetNode() {
		for _, in := range n.GetInput() {
			used[in] = true
		}
	}
	var out []*onnxpb.TensorProto
	for _, t := range g.GetInitializer() {
		if used[t.GetName()] {
			out = append(out, t)
		}
	}
	return out
}

// calibrate runs the float model on the samples with o.Tracer and returns
// the range of each target value, by the method; full ones by min-max.
func calibrate(model []byte, targets []string, o Options, full map[string]bool) (map[string][2]float32, error) {
	tracer := o.Tracer
	features := len(o.Samples[0])
	var x []float32
	for i, s := range o.Samples {
		if len(s) != features {
			return nil, fmt.Errorf("%w: sample %d has %d values, want %d", ErrOptions, i, len(s), features)
		}
		x = append(x, s...)
	}
	vals, err := tracer(model, targets, x, features)
	if err != nil {
		return nil, fmt.Errorf("quant: calibration run: %w", err)
	}
	out := make(map[string][2]float32, len(targets))
	for _, name := range targets {
		v, ok := vals[name]
		if !ok || len(v) == 0 {
			return nil, fmt.Errorf("%w: calibration produced no values for %s", ErrModel, name)
		}
		for _, x := range v {
			if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
				return nil, fmt.Errorf("%w: %s is NaN or infinite on the calibration rows", ErrModel, name)
			}
		}
		switch {
		case full[name]:
			out[name] = minMax(v)
			continue
		}
		switch o.Calibration {
		case "", MinMax:
			out[name] = minMax(v)
		case Percentile:
			p := o.Percentile
			if p <= 50 || p > 100 {
				return nil, fmt.Errorf("%w: percentile %v (50 < p ≤ 100)", ErrOptions, p)
			}
			out[name] = percentile(v, p)
		case MSE:
			out[name] = mseRange(v)
		case Entropy:
			out[name] = entropyRange(v)
		default:
			return nil, fmt.Errorf("%w: calibration %q (minmax, percentile, mse or entropy)", ErrOptions, o.Calibration)
		}
	}
	return out, nil
}

// CalibrateRange is the range method picks for values v (percentile at
// 99.99).
func CalibrateRange(method string, v []float32) [2]float32 {
	switch method {
	case Percentile:
		return percentile(v, 99.99)
	case MSE:
		return mseRange(v)
	case Entropy:
		return entropyRange(v)
	}
	return minMax(v)
}

func minMax(v []float32) [2]float32 {
	lo, hi := v[0], v[0]
	for _, x := range v {
		lo, hi = min(lo, x), max(hi, x)
	}
	return [2]float32{lo, hi}
}

func percentile(v []float32, p float64) [2]float32 {
	s := append([]float32(nil), v...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	at := func(q float64) float32 { return s[int(math.Round(q/100*float64(len(s)-1)))] }
	return [2]float32{at(100 - p), at(p)}
}

// mseRange shrinks the min-max range by the factor that minimises the
// mean squared error of quantizing v to 256 levels with that range.
func mseRange(v []float32) [2]float32 {
	full := minMax(v)
	best, bestErr := full, math.Inf(1)
	for f := 1.0; f >= 0.3; f -= 0.02 {
		r := [2]float32{full[0] * float32(f), full[1] * float32(f)}
		lo, hi := min(r[0], 0), max(r[1], 0)
		scale := float64(hi-lo) / 255
		if scale == 0 {
			return full
		}
		zp := math.Round(float64(-lo) / scale)
		var e float64
		for _, x := range v {
			q := math.Max(0, math.Min(255, math.RoundToEven(float64(x)/scale)+zp))
			d := (q-zp)*scale - float64(x)
			e += d * d
		}
		if e < bestErr {
			best, bestErr = r, e
		}
	}
	return best
}

// entropyRange clips v's range at the threshold whose 128-level
// quantization of the histogram of |v| (2048 bins) loses the least
// information: the smallest KL divergence between the clipped
// distribution and its quantized copy, as TensorRT's and ONNX Runtime's
// entropy calibrators choose it.
func entropyRange(v []float32) [2]float32 {
	full := minMax(v)
	amax := max(-full[0], full[1])
	const bins, levels = 2048, 128
	if amax == 0 || math.IsNaN(float64(amax)) || math.IsInf(float64(amax), 0) {
		return full
	}
	hist := make([]float64, bins)
	for _, x := range v {
		if x != 0 && !math.IsNaN(float64(x)) && !math.IsInf(float64(x), 0) { // zero is exact at any threshold (a Relu's many zeros would pull it down)
			hist[min(bins-1, int(float64(abs32(x))/float64(amax)*bins))]++
		}
	}
	best, bestKL := bins, math.Inf(1)
	p := make([]float64, bins)
	q := make([]float64, bins)
	for i := levels; i <= bins; i++ {
		copy(p, hist[:i])
		for _, c := range hist[i:] {
			p[i-1] += c // what the threshold clips lands in its last bin
		}
		// q: p's first i bins merged into levels, spread back over the bins
		// that were not empty.
		for k := range levels {
			lo, hi := k*i/levels, (k+1)*i/levels
			var sum, nonzero float64
			for j := lo; j < hi; j++ {
				sum += hist[j]
				if hist[j] > 0 {
					nonzero++
				}
			}
			for j := lo; j < hi; j++ {
				q[j] = 0
				if hist[j] > 0 {
					q[j] = sum / nonzero
				}
			}
		}
		if kl := divergence(p[:i], q[:i]); kl < bestKL {
			best, bestKL = i, kl
		}
	}
	t := (float32(best) + 0.5) / bins * amax
	return [2]float32{max(full[0], -t), min(full[1], t)}
}

// divergence is KL(p || q) of two histograms, each normalised; bins where
// q is empty but p is not get a small q, so one outlier cannot make it
// infinite.
func divergence(p, q []float64) float64 {
	var sp, sq float64
	for i := range p {
		sp += p[i]
		sq += q[i]
	}
	if sp == 0 || sq == 0 {
		return math.Inf(1)
	}
	var kl float64
	for i := range p {
		if p[i] == 0 {
			continue
		}
		pi, qi := p[i]/sp, max(q[i]/sq, 1e-12)
		kl += pi * math.Log(pi/qi)
	}
	return kl
}

func abs32(x float32) float32 { return float32(math.Abs(float64(x))) }

// namer names what quantization adds: a short base (a prefix and a
// number) that no name in the graph starts, and suffixes after it. On a
// small model, names grown from the exporter's (next_activations1_qdq_scale,
// repeated in every node that reads it) were a tenth of the quantized
// file: scikit-learn's 16-64-128-64-8 MLP came out at 0.31× float.
type namer struct {
	used []string
	n    int
}

func newNamer(g *onnxpb.GraphProto) *namer {
	nm := &namer{}
	for _, n := range g.GetNode() {
		nm.used = append(nm.used, n.GetName())
		nm.used = append(nm.used, n.GetInput()...)
		nm.used = append(nm.used, n.GetOutput()...)
	}
	for _, t := range g.GetInitializer() {
		nm.used = append(nm.used, t.GetName())
	}
	for _, vs := range [][]*onnxpb.ValueInfoProto{g.GetInput(), g.GetOutput(), g.GetValueInfo()} {
		for _, v := range vs {
			nm.used = append(nm.used, v.GetName())
		}
	}
	return nm
}

// next is a fresh base: prefix and a number, neither a name of the graph
// nor the start of one before an underscore.
func (nm *namer) next(prefix string) string {
	for {
		nm.n++
		base := fmt.Sprintf("%s%d", prefix, nm.n)
		if !slices.ContainsFunc(nm.used, func(u string) bool { return u == base || strings.HasPrefix(u, base+"_") }) {
			return base
		}
	}
}
