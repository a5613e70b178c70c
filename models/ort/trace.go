package ort

import (
	"fmt"

	ortgo "github.com/yalue/onnxruntime_go"
	"google.golang.org/protobuf/proto"

	"github.com/outpost-edge/outpost/models/onnx/onnxpb"
)

// Trace runs model on rows of x and returns the values named in names
// (intermediate tensors included, flattened row-major), by making them
// extra graph outputs. Calibration uses it for graphs the pure-Go engine
// cannot run.
func Trace(model []byte, names []string, x []float32, features int) (map[string][]float32, error) {
	if features < 1 || len(x)%features != 0 {
		return nil, fmt.Errorf("%w: %d values are not rows of %d features", ErrInput, len(x), features)
	}
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
			out[n] = x // the model's own input
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
	ins, _, err := ortgo.GetInputOutputInfoWithONNXData(data)
	if err != nil || len(ins) != 1 {
		return nil, fmt.Errorf("%w: trace needs one input: %v", ErrModel, err)
	}
	s, err := ortgo.NewDynamicAdvancedSessionWithONNXData(data, []string{ins[0].Name}, want, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: trace session: %w", ErrModel, err)
	}
	defer s.Destroy()
	in, err := ortgo.NewTensor(ortgo.NewShape(int64(len(x)/features), int64(features)), x)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInput, err)
	}
	defer in.Destroy()
	vals := make([]ortgo.Value, len(want)) // nil: ONNX Runtime allocates them
	if err := s.Run([]ortgo.Value{in}, vals); err != nil {
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
