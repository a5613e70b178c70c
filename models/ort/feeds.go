//go:build cgo

package ort

import (
	"fmt"

	ortgo "github.com/yalue/onnxruntime_go"

	"github.com/outpost-edge/outpost/models/onnx"
	"github.com/outpost-edge/outpost/models/onnx/onnxpb"
)

// input is one graph input as the model declares it.
type input struct {
	name string
	elem onnxpb.TensorProto_DataType // ONNX Runtime's element enum is ONNX's
	dims []int64                     // -1 where symbolic
}

// feedTypes are the input element types a feed's float32 values convert to.
var feedTypes = map[onnxpb.TensorProto_DataType]bool{
	onnxpb.TensorProto_FLOAT: true, onnxpb.TensorProto_DOUBLE: true,
	onnxpb.TensorProto_UINT8: true, onnxpb.TensorProto_INT8: true,
	onnxpb.TensorProto_INT32: true, onnxpb.TensorProto_INT64: true,
}

func inputsOf(ins []ortgo.InputOutputInfo) ([]input, error) {
	if len(ins) == 0 {
		return nil, fmt.Errorf("%w: the model has no input", ErrModel)
	}
	out := make([]input, len(ins))
	for i, in := range ins {
		elem := onnxpb.TensorProto_DataType(in.DataType)
		if in.OrtValueType != ortgo.ONNXTypeTensor || !feedTypes[elem] {
			return nil, fmt.Errorf("%w: input %s is %s, want a tensor of %v", ErrModel, in.Name, &in, []string{"float", "double", "uint8", "int8", "int32", "int64"})
		}
		out[i] = input{name: in.Name, elem: elem, dims: in.Dimensions}
	}
	return out, nil
}

// RunFeeds infers one batch given as one feed per graph input, and returns
// the scores, row-major. Calls are serialised, as Run's.
func (s *Session) RunFeeds(feeds []onnx.Feed) ([]float32, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out, err := s.runFeeds(feeds)
	if err != nil {
		return nil, err
	}
	out = append([]float32(nil), out...)
	s.releaseShared()
	return out, nil
}

// RunFeedsShared is RunFeeds without the copy of the result: the slice is
// the output tensor's memory, valid until the next call on this session.
func (s *Session) RunFeedsShared(feeds []onnx.Feed) ([]float32, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.runFeeds(feeds)
}

// runFeeds checks the feeds as the pure-Go engine does, so both refuse the
// same feeds with the same words, and runs them on tensors made per call;
// the output stays in s.shared until the next call.
func (s *Session) runFeeds(feeds []onnx.Feed) ([]float32, error) {
	s.releaseShared()
	order, err := onnx.Match(s.order, s.names, feeds)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInput, err)
	}
	s.order = order
	vals := make([]ortgo.Value, len(s.inputs))
	defer func() {
		for _, v := range vals {
			if v != nil {
				v.Destroy()
			}
		}
	}()
	for i, in := range s.inputs {
		f := feeds[order[i]]
		if err := f.Check(); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInput, err)
		}
		if err := f.Fits(in.dims); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInput, err)
		}
		if err := f.CheckValues(in.elem); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInput, err)
		}
		if vals[i], err = newTensor(in.elem, f); err != nil {
			return nil, fmt.Errorf("%w: input %s: %w", ErrInput, in.name, err)
		}
	}
	outs := []ortgo.Value{nil} // ONNX Runtime allocates it: its batch is the graph's to say
	if err := s.s.Run(vals, outs); err != nil {
		return nil, fmt.Errorf("%w: run: %w", ErrRuntime, err)
	}
	t, ok := outs[0].(*ortgo.Tensor[float32])
	if !ok {
		outs[0].Destroy()
		return nil, fmt.Errorf("%w: output %s is not float32", ErrModel, s.out)
	}
	s.shared = t
	return t.GetData(), nil
}

func (s *Session) releaseShared() {
	if s.shared != nil {
		s.shared.Destroy()
		s.shared = nil
	}
}

// newTensor holds f's values as the input's element type. A float input
// reads f.Data in place: the tensor lives only for the call.
func newTensor(elem onnxpb.TensorProto_DataType, f onnx.Feed) (ortgo.Value, error) {
	shape := ortgo.NewShape(f.Shape...)
	switch elem {
	case onnxpb.TensorProto_FLOAT:
		return ortgo.NewTensor(shape, f.Data)
	case onnxpb.TensorProto_DOUBLE:
		return ortgo.NewTensor(shape, convert[float64](f.Data))
	case onnxpb.TensorProto_UINT8:
		return ortgo.NewTensor(shape, convert[uint8](f.Data))
	case onnxpb.TensorProto_INT8:
		return ortgo.NewTensor(shape, convert[int8](f.Data))
	case onnxpb.TensorProto_INT32:
		return ortgo.NewTensor(shape, convert[int32](f.Data))
	case onnxpb.TensorProto_INT64:
		return ortgo.NewTensor(shape, convert[int64](f.Data))
	}
	return nil, fmt.Errorf("%w: element type %s", ErrModel, elem)
}

// convert assumes CheckValues passed: integer types get whole numbers in range.
func convert[T float64 | uint8 | int8 | int32 | int64](x []float32) []T {
	out := make([]T, len(x))
	for i, v := range x {
		out[i] = T(v)
	}
	return out
}
