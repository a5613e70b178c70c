package goengine

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/outpost-edge/outpost/models/onnx/onnxpb"
)

// tensor is a row-major value of any rank. Every element type travels as
// float32: int8/uint8 quantized values and integer indices (shapes,
// ArgMax, class ids below 2^24) are held exactly; strings (class labels)
// travel in strs.
type tensor struct {
	shape []int
	data  []float32
	strs  []string
	// kind of the values data holds exactly: 0 float, 'i' int8, 'u' uint8,
	// 'l' integers (int32, int64, bool).
	kind byte
}

// maxElements bounds a shape's dimensions, zeros left out: an empty value
// of shape [2^31, 2^31, 0] holds nothing, but a kernel walking its outer
// dimensions would never finish.
const maxElements = 1 << 30

func bounded(shape []int) bool {
	n := 1
	for _, d := range shape {
		if d < 0 || d > maxElements {
			return false
		}
		if d > 0 {
			n *= d
		}
		if n > maxElements {
			return false
		}
	}
	return true
}

func size(shape []int) int {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return n
}

// rows and cols read a value as a matrix: [n] is one row of n, and
// higher ranks fold their leading dimensions into rows.
func (t tensor) rows() int {
	if len(t.shape) < 2 {
		return 1
	}
	return size(t.shape[:len(t.shape)-1])
}

func (t tensor) cols() int {
	if len(t.shape) == 0 {
		return 1
	}
	return t.shape[len(t.shape)-1]
}

// ints reads a constant integer tensor (shapes, axes).
func (t tensor) ints() []int {
	out := make([]int, len(t.data))
	for i, v := range t.data {
		out[i] = int(v)
	}
	return out
}

// fromProto reads an initializer or a Constant's value.
func fromProto(t *onnxpb.TensorProto) (tensor, error) {
	var data []float32
	var strs []string
	var kind byte
	raw := t.GetRawData()
	fixed := func(width int, read func([]byte) float32) {
		data = make([]float32, len(raw)/width)
		for i := range data {
			data[i] = read(raw[width*i:])
		}
	}
	switch onnxpb.TensorProto_DataType(t.GetDataType()) {
	case onnxpb.TensorProto_FLOAT:
		data = t.GetFloatData()
		if len(raw) > 0 {
			fixed(4, func(b []byte) float32 { return math.Float32frombits(binary.LittleEndian.Uint32(b)) })
		}
	case onnxpb.TensorProto_DOUBLE:
		for _, v := range t.GetDoubleData() {
			data = append(data, float32(v))
		}
		if len(raw) > 0 {
			fixed(8, func(b []byte) float32 { return float32(math.Float64frombits(binary.LittleEndian.Uint64(b))) })
		}
	case onnxpb.TensorProto_INT8, onnxpb.TensorProto_UINT8:
		kind = 'u'
		if t.GetDataType() == int32(onnxpb.TensorProto_INT8) {
			kind = 'i'
		}
		if len(raw) > 0 {
			fixed(1, func(b []byte) float32 {
				if kind == 'i' {
					return float32(int8(b[0]))
				}
				return float32(b[0])
			})
		} else {
			for _, v := range t.GetInt32Data() {
				data = append(data, float32(v))
			}
		}
	case onnxpb.TensorProto_INT32, onnxpb.TensorProto_BOOL:
		kind = 'l'
		for _, v := range t.GetInt32Data() {
			data = append(data, float32(v))
		}
		if len(raw) > 0 && t.GetDataType() == int32(onnxpb.TensorProto_BOOL) {
			fixed(1, func(b []byte) float32 { return float32(b[0]) })
		} else if len(raw) > 0 {
			fixed(4, func(b []byte) float32 { return float32(int32(binary.LittleEndian.Uint32(b))) })
		}
	case onnxpb.TensorProto_INT64:
		kind = 'l'
		for _, v := range t.GetInt64Data() {
			data = append(data, float32(v))
		}
		if len(raw) > 0 {
			fixed(8, func(b []byte) float32 { return float32(int64(binary.LittleEndian.Uint64(b))) })
		}
	case onnxpb.TensorProto_FLOAT16:
		if len(raw) > 0 {
			fixed(2, func(b []byte) float32 { return half(binary.LittleEndian.Uint16(b)) })
		} else {
			for _, v := range t.GetInt32Data() {
				data = append(data, half(uint16(v)))
			}
		}
	case onnxpb.TensorProto_STRING:
		for _, s := range t.GetStringData() {
			strs = append(strs, string(s))
		}
	default:
		return tensor{}, fmt.Errorf("%w: initializer %s of type %s", ErrUnsupported, t.GetName(), onnxpb.TensorProto_DataType(t.GetDataType()))
	}
	shape := make([]int, len(t.GetDims()))
	for i, d := range t.GetDims() {
		if d < 0 || d > maxElements {
			return tensor{}, fmt.Errorf("%w: initializer %s has dimension %d", ErrModel, t.GetName(), d)
		}
		shape[i] = int(d)
	}
	if !bounded(shape) {
		return tensor{}, fmt.Errorf("%w: initializer %s has shape %v", ErrModel, t.GetName(), shape)
	}
	if n := size(shape); n != len(data) && n != len(strs) {
		return tensor{}, fmt.Errorf("%w: initializer %s has %d values for shape %v", ErrModel, t.GetName(), max(len(data), len(strs)), shape)
	}
	return tensor{shape: shape, data: data, strs: strs, kind: kind}, nil
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

// broadcastShape is the ONNX/numpy multidirectional broadcast of a and b,
// into dst's memory: shapes align on the right, and a dimension of 1
// stretches.
func broadcastShape(dst, a, b []int) ([]int, error) {
	r := max(len(a), len(b))
	out := dst[:0]
	for range r {
		out = append(out, 0)
	}
	for i := 1; i <= r; i++ {
		da, db := 1, 1
		if i <= len(a) {
			da = a[len(a)-i]
		}
		if i <= len(b) {
			db = b[len(b)-i]
		}
		switch {
		case da == db || db == 1:
			out[r-i] = da
		case da == 1:
			out[r-i] = db
		default:
			return nil, fmt.Errorf("%w: shapes %v and %v do not broadcast", ErrInput, a, b)
		}
	}
	return out, nil
}

// strides of x's elements when read in an output of shape out (rank of
// out, x aligned on the right): 0 where x is broadcast.
func broadcastStrides(x, out []int, dst []int) []int {
	dst = dst[:0]
	stride := 1
	for i := len(out) - 1; i >= 0; i-- {
		xi := i - (len(out) - len(x))
		s := 0
		if xi >= 0 && x[xi] != 1 {
			s = stride
		}
		if xi >= 0 {
			stride *= x[xi]
		}
		dst = append(dst, s)
	}
	// reverse: dst was built from the last dimension
	for i, j := 0, len(dst)-1; i < j; i, j = i+1, j-1 {
		dst[i], dst[j] = dst[j], dst[i]
	}
	return dst
}

// binaryOps are the elementwise ops with two broadcast inputs.
var binaryOps = map[string]func(dst, a, b []float32, sa, sb int){
	"Add": func(dst, a, b []float32, sa, sb int) {
		for i := range dst {
			dst[i] = a[i*sa] + b[i*sb]
		}
	},
	"Sub": func(dst, a, b []float32, sa, sb int) {
		for i := range dst {
			dst[i] = a[i*sa] - b[i*sb]
		}
	},
	"Mul": func(dst, a, b []float32, sa, sb int) {
		for i := range dst {
			dst[i] = a[i*sa] * b[i*sb]
		}
	},
	"Div": func(dst, a, b []float32, sa, sb int) {
		for i := range dst {
			dst[i] = a[i*sa] / b[i*sb]
		}
	},
	"Pow": func(dst, a, b []float32, sa, sb int) {
		for i := range dst {
			dst[i] = float32(math.Pow(float64(a[i*sa]), float64(b[i*sb])))
		}
	},
	"Max": func(dst, a, b []float32, sa, sb int) {
		for i := range dst {
			dst[i] = max(a[i*sa], b[i*sb])
		}
	},
	"Min": func(dst, a, b []float32, sa, sb int) {
		for i := range dst {
			dst[i] = min(a[i*sa], b[i*sb])
		}
	},
}

// scratch holds what broadcasting needs per call, so a run allocates
// nothing once its buffers have grown.
type scratch struct {
	sa, sb, idx []int
}

// broadcast applies kernel to a and b, broadcast to shape out, into dst:
// the innermost dimension is one kernel call, the outer ones walk an
// index counter.
func (s *scratch) broadcast(kernel func(dst, a, b []float32, sa, sb int), a, b tensor, out []int, dst []float32) {
	if len(dst) == 0 {
		return
	}
	if len(out) == 0 {
		kernel(dst, a.data, b.data, 0, 0)
		return
	}
	s.sa = broadcastStrides(a.shape, out, s.sa)
	s.sb = broadcastStrides(b.shape, out, s.sb)
	r := len(out)
	inner := out[r-1]
	ia, ib := s.sa[r-1], s.sb[r-1]
	if cap(s.idx) < r {
		s.idx = make([]int, r)
	}
	idx := s.idx[:r]
	clear(idx)
	offA, offB := 0, 0
	for o := 0; o < len(dst); o += inner {
		kernel(dst[o:o+inner], a.data[offA:], b.data[offB:], ia, ib)
		// Advance the counter over the outer dimensions.
		for d := r - 2; d >= 0; d-- {
			idx[d]++
			offA += s.sa[d]
			offB += s.sb[d]
			if idx[d] < out[d] {
				break
			}
			offA -= s.sa[d] * out[d]
			offB -= s.sb[d] * out[d]
			idx[d] = 0
		}
	}
}
