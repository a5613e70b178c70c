// Package onnx builds and reads ONNX models with the generated protobuf types
// in onnxpb. Graphs the trainer produces are written here, in Go, without
// Python in the loop.
package onnx

import (
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/outpost-edge/outpost/models/onnx/onnxpb"
)

// Versions the builder writes. ORT 1.24 accepts IR ≤ 13 and opsets 7–25;
// IR 8 with opset 13 is the conservative choice every runtime loads.
const (
	IRVersion = 8
	Opset     = 13
)

// Graph accumulates a single ONNX graph.
type Graph struct {
	g   *onnxpb.GraphProto
	err error
}

// NewGraph starts an empty graph.
func NewGraph(name string) *Graph {
	return &Graph{g: &onnxpb.GraphProto{Name: proto.String(name)}}
}

// Dim is one tensor dimension: a size ≥ 1, or a symbolic name such as "N"
// for the batch.
type Dim any

// Input declares a float32 graph input.
func (b *Graph) Input(name string, dims ...Dim) *Graph {
	b.g.Input = append(b.g.Input, b.valueInfo(name, dims))
	return b
}

// Output declares a float32 graph output.
func (b *Graph) Output(name string, dims ...Dim) *Graph {
	b.g.Output = append(b.g.Output, b.valueInfo(name, dims))
	return b
}

// Initializer adds a constant float32 tensor (weights, biases).
func (b *Graph) Initializer(name string, data []float32, dims ...int64) *Graph {
	n := int64(1)
	for _, d := range dims {
		n *= d
	}
	if n != int64(len(data)) {
		b.fail(fmt.Errorf("%w: initializer %s has %d values for shape %v", ErrShape, name, len(data), dims))
		return b
	}
	b.g.Initializer = append(b.g.Initializer, &onnxpb.TensorProto{
		Name:      proto.String(name),
		DataType:  proto.Int32(int32(onnxpb.TensorProto_FLOAT)),
		Dims:      dims,
		FloatData: append([]float32(nil), data...),
	})
	return b
}

// Attr is one node attribute.
type Attr struct {
	Name  string
	Value any // int64, float32, string, []int64
}

// Node appends an operator node.
func (b *Graph) Node(op string, inputs, outputs []string, attrs ...Attr) *Graph {
	n := &onnxpb.NodeProto{
		OpType: proto.String(op),
		Name:   proto.String(fmt.Sprintf("%s_%d", op, len(b.g.Node))),
		Input:  inputs,
		Output: outputs,
	}
	for _, a := range attrs {
		ap := &onnxpb.AttributeProto{Name: proto.String(a.Name)}
		switch v := a.Value.(type) {
		case int64:
			ap.Type, ap.I = onnxpb.AttributeProto_INT.Enum(), proto.Int64(v)
		case float32:
			ap.Type, ap.F = onnxpb.AttributeProto_FLOAT.Enum(), proto.Float32(v)
		case string:
			ap.Type, ap.S = onnxpb.AttributeProto_STRING.Enum(), []byte(v)
		case []int64:
			ap.Type, ap.Ints = onnxpb.AttributeProto_INTS.Enum(), v
		default:
			b.fail(fmt.Errorf("%w: attribute %s of type %T", ErrUnsupported, a.Name, a.Value))
			return b
		}
		n.Attribute = append(n.Attribute, ap)
	}
	b.g.Node = append(b.g.Node, n)
	return b
}

// rename makes the last node that writes from write to instead.
func (b *Graph) rename(from, to string) {
	for i := len(b.g.Node) - 1; i >= 0; i-- {
		for j, o := range b.g.Node[i].Output {
			if o == from {
				b.g.Node[i].Output[j] = to
				return
			}
		}
	}
}

// Model wraps the graph into a serialised ModelProto.
func (b *Graph) Model(producer string) ([]byte, error) {
	if b.err != nil {
		return nil, b.err
	}
	m := &onnxpb.ModelProto{
		IrVersion:    proto.Int64(IRVersion),
		ProducerName: proto.String(producer),
		OpsetImport:  []*onnxpb.OperatorSetIdProto{{Domain: proto.String(""), Version: proto.Int64(Opset)}},
		Graph:        b.g,
	}
	data, err := proto.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("onnx: marshal: %w", err)
	}
	return data, nil
}

func (b *Graph) valueInfo(name string, dims []Dim) *onnxpb.ValueInfoProto {
	shape := &onnxpb.TensorShapeProto{}
	for _, d := range dims {
		switch v := d.(type) {
		case int:
			shape.Dim = append(shape.Dim, &onnxpb.TensorShapeProto_Dimension{Value: &onnxpb.TensorShapeProto_Dimension_DimValue{DimValue: int64(v)}})
		case string:
			shape.Dim = append(shape.Dim, &onnxpb.TensorShapeProto_Dimension{Value: &onnxpb.TensorShapeProto_Dimension_DimParam{DimParam: v}})
		default:
			b.fail(fmt.Errorf("%w: dimension %v of %s", ErrUnsupported, d, name))
		}
	}
	return &onnxpb.ValueInfoProto{
		Name: proto.String(name),
		Type: &onnxpb.TypeProto{Value: &onnxpb.TypeProto_TensorType{TensorType: &onnxpb.TypeProto_Tensor{
			ElemType: proto.Int32(int32(onnxpb.TensorProto_FLOAT)),
			Shape:    shape,
		}}},
	}
}

func (b *Graph) fail(err error) {
	if b.err == nil {
		b.err = err
	}
}

// Logistic builds y = sigmoid(x·Wᵀ + b) for x of shape [N, features]: the
// smallest model the trainer produces, and the one the runtime tests use.
func Logistic(weights [][]float32, bias []float32) ([]byte, error) {
	return MLP([]Dense{{W: weights, B: bias}}, MLPOptions{Output: Sigmoid})
}
