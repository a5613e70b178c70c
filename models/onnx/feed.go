package onnx

import (
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/outpost-edge/outpost/models/onnx/onnxpb"
)

// Feed is one graph input's batch: Shape[0] is the batch size, Data is
// row-major. A UINT8 input takes Data's values (0..255) converted to bytes.
type Feed struct {
	Name  string
	Shape []int64
	Data  []float32
}

// Check reports whether f's Data fills its Shape exactly.
func (f Feed) Check() error {
	n := int64(1)
	for _, d := range f.Shape {
		if d < 0 {
			return fmt.Errorf("%w: input %s: shape %v has a negative dimension", ErrShape, f.Name, f.Shape)
		}
		// Saturate rather than overflow: no slice holds 2^62 values.
		if d > 0 && n > math.MaxInt64/4/d {
			return fmt.Errorf("%w: input %s: shape %v is too large", ErrShape, f.Name, f.Shape)
		}
		n *= d
	}
	if n != int64(len(f.Data)) {
		return fmt.Errorf("%w: input %s: %d values for shape %v (%d)", ErrShape, f.Name, len(f.Data), f.Shape, n)
	}
	return nil
}

// Fits reports whether f fits an input declared with dims: the same rank,
// and the same size wherever a dimension is fixed. A dimension ≤ 0 (a
// symbolic name, or -1 as ONNX Runtime reports one) takes any size.
func (f Feed) Fits(dims []int64) error {
	if len(f.Shape) != len(dims) {
		return fmt.Errorf("%w: input %s: rank %d (shape %v), the graph declares rank %d (%v)", ErrShape, f.Name, len(f.Shape), f.Shape, len(dims), dims)
	}
	for i, d := range dims {
		if d > 0 && f.Shape[i] != d {
			return fmt.Errorf("%w: input %s: dimension %d is %d, the graph declares %d (%v)", ErrShape, f.Name, i, f.Shape[i], d, dims)
		}
	}
	return nil
}

// CheckValues reports whether every value of f is exact in elem, the
// input's declared element type: integer types hold whole numbers in
// their range, since converting 3.7 or 300 to a byte would silently
// change the data. Float types take anything.
func (f Feed) CheckValues(elem onnxpb.TensorProto_DataType) error {
	lo, hi := 0.0, 0.0
	switch elem {
	case onnxpb.TensorProto_UINT8:
		lo, hi = 0, math.MaxUint8
	case onnxpb.TensorProto_INT8:
		lo, hi = math.MinInt8, math.MaxInt8
	case onnxpb.TensorProto_INT32, onnxpb.TensorProto_INT64:
		// float32 holds integers exactly up to 2^24 only.
		lo, hi = -(1 << 24), 1<<24
	default:
		return nil
	}
	for i, v := range f.Data {
		if !(float64(v) >= lo && float64(v) <= hi) || v != float32(math.Trunc(float64(v))) {
			return fmt.Errorf("%w: input %s: value %d is %v, not a %s", ErrShape, f.Name, i, v, elem)
		}
	}
	return nil
}

// Match pairs feeds with a graph's inputs: order[i] is the index in feeds
// of inputs[i]'s feed, written into dst's memory. Every input must be fed
// exactly once, and every feed must name an input.
func Match(dst []int, inputs []string, feeds []Feed) ([]int, error) {
	order := dst[:0]
	for _, in := range inputs {
		k := -1
		for j, f := range feeds {
			if f.Name != in {
				continue
			}
			if k >= 0 {
				return nil, fmt.Errorf("%w: input %s is fed twice", ErrShape, in)
			}
			k = j
		}
		if k < 0 {
			return nil, fmt.Errorf("%w: input %s is not fed (the graph takes %s)", ErrShape, in, strings.Join(inputs, ", "))
		}
		order = append(order, k)
	}
	if len(feeds) != len(inputs) {
		for _, f := range feeds {
			if !slices.Contains(inputs, f.Name) {
				return nil, fmt.Errorf("%w: the graph has no input %q (it takes %s)", ErrShape, f.Name, strings.Join(inputs, ", "))
			}
		}
	}
	return order, nil
}
