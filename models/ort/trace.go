//go:build cgo

package ort

import (
	"errors"
	"fmt"

	ortgo "github.com/yalue/onnxruntime_go"
	"google.golang.org/protobuf/proto"

	"github.com/outpost-edge/outpost/models/onnx"
	"github.com/outpost-edge/outpost/models/onnx/onnxpb"
)

// Trace runs model on rows of x and returns the values named in names
// (intermediate tensors included, flattened row-major), by making them
// extra graph outputs. Calibration uses it for graphs the pure-Go engine
// cannot run. The model has one input; TraceFeeds takes several.
func Trace(model []byte, names []string, x []float32, features int) (map[string][]float32, error) {
	if features < 1 || len(x)%features != 0 {
		return nil, fmt.Errorf("%w: %d values are not rows of %d features", ErrInput, len(x), features)
	}
	ins, _, err := ortgo.GetInputOutputInfoWithONNXData(model)
	if err != nil || len(ins) != 1 {
		return nil, fmt.Errorf("%w: trace needs one input (the model has %d): %v", ErrModel, len(ins), err)
	}
	return TraceFeeds(model, names, []onnx.Feed{{Name: ins[0].Name, Shape: []int64{int64(len(x) / features), int64(features)}, Data: x}})
}

// TraceFeeds is Trace for a model's feeds, one per graph input.
func TraceFeeds(model []byte, names []string, feeds []onnx.Feed) (map[string][]float32, error) {
	var m onnxpb.ModelProto
	if err := proto.Unmarshal(model, &m); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrModel, err)
	}
	g := m.GetGraph()
	inputs := map[string]bool{}
	for _, in := range g.GetInput() {
		inputs[in.GetName()] = true
	}
	outputs := map[string]bool{}
	for _, o := range g.GetOutput() {
		outputs[o.GetName()] = true
	}
	out := map[string][]float32{}
	var want []string
	for _, n := range names {
		switch {
		case inputs[n]:
			for _, f := range feeds {
				if f.Name == n {
					out[n] = f.Data // the model's own input
				}
			}
		case !outputs[n]:
			g.Output = append(g.Output, &onnxpb.ValueInfoProto{Name: proto.String(n), Type: &onnxpb.TypeProto{
				Value: &onnxpb.TypeProto_TensorType{TensorType: &onnxpb.TypeProto_Tensor{ElemType: proto.Int32(int32(onnxpb.TensorProto_FLOAT))}}}})
			fallthrough
		default:
			want = append(want, n)
		}
	}
	if len(want) == 0 {
		return out, nil
	}
	data, err := proto.Marshal(&m)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrModel, err)
	}
	infos, _, err := ortgo.GetInputOutputInfoWithONNXData(data)
	if err != nil {
		return nil, fmt.Errorf("%w: inspect model: %w", ErrModel, err)
	}
	ins, err := inputsOf(infos)
	if err != nil {
		return nil, err
	}
	inNames := make([]string, len(ins))
	for i, in := range ins {
		inNames[i] = in.name
	}
	order, err := onnx.Match(nil, inNames, feeds)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInput, err)
	}
	s, err := ortgo.NewDynamicAdvancedSessionWithONNXData(data, inNames, want, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: trace session: %w", ErrModel, err)
	}
	defer s.Destroy()
	tensors := make([]ortgo.Value, len(ins))
	defer func() {
		for _, t := range tensors {
			if t != nil {
				t.Destroy()
			}
		}
	}()
	for i, in := range ins {
		f := feeds[order[i]]
		if err := errors.Join(f.Check(), f.Fits(in.dims), f.CheckValues(in.elem)); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInput, err)
		}
		if tensors[i], err = newTensor(in.elem, f); err != nil {
			return nil, fmt.Errorf("%w: input %s: %w", ErrInput, in.name, err)
		}
	}
	vals := make([]ortgo.Value, len(want)) // nil: ONNX Runtime allocates them
	if err := s.Run(tensors, vals); err != nil {
		return nil, fmt.Errorf("%w: trace run: %w", ErrRuntime, err)
	}
	for i, v := range vals {
		t, ok := v.(*ortgo.Tensor[float32])
		if !ok {
			v.Destroy()
			return nil, fmt.Errorf("%w: traced value %s is not float", ErrModel, want[i])
		}
		out[want[i]] = append([]float32(nil), t.GetData()...)
		v.Destroy()
	}
	return out, nil
}
