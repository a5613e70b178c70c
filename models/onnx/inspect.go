package onnx

import (
	"fmt"
	"sort"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/outpost-edge/outpost/models/onnx/onnxpb"
)

// Info summarises any ONNX model: what `outpostctl model inspect` prints.
type Info struct {
	IRVersion  int64            `json:"ir_version"`
	Opsets     map[string]int64 `json:"opsets"` // domain ("" is ai.onnx) → version
	Producer   string           `json:"producer,omitempty"`
	Graph      string           `json:"graph,omitempty"`
	Inputs     []Tensor         `json:"inputs"`
	Outputs    []Tensor         `json:"outputs"`
	Ops        map[string]int   `json:"ops"` // op type → node count
	Nodes      int              `json:"nodes"`
	Parameters int64            `json:"parameters"` // elements in all initializers
	ParamBytes int64            `json:"parameter_bytes"`
	Size       int              `json:"size"` // bytes of the file
}

// Tensor is a graph input or output.
type Tensor struct {
	Name  string   `json:"name"`
	Type  string   `json:"type"`  // FLOAT, INT8, ...
	Shape []string `json:"shape"` // a number, a symbolic name, or "?"
	// Kind is empty for a tensor; otherwise what the value is instead, such
	// as "sequence of map(int64, tensor(float))" (what ZipMap writes).
	Kind string `json:"kind,omitempty"`
}

// Inspect parses an ONNX file and summarises it. Inputs that are also
// initializers (older exporters list weights as inputs) are left out.
func Inspect(model []byte) (*Info, error) {
	var m onnxpb.ModelProto
	if err := proto.Unmarshal(model, &m); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrModel, err)
	}
	g := m.GetGraph()
	if g == nil {
		return nil, fmt.Errorf("%w: no graph", ErrModel)
	}
	if m.GetIrVersion() < 3 {
		return nil, fmt.Errorf("%w: IR version %d", ErrModel, m.GetIrVersion())
	}
	info := &Info{IRVersion: m.GetIrVersion(), Opsets: map[string]int64{}, Producer: strings.TrimSpace(m.GetProducerName() + " " + m.GetProducerVersion()),
		Graph: g.GetName(), Ops: map[string]int{}, Nodes: len(g.GetNode()), Size: len(model)}
	for _, o := range m.GetOpsetImport() {
		info.Opsets[o.GetDomain()] = o.GetVersion()
	}
	weights := map[string]bool{}
	for _, t := range g.GetInitializer() {
		weights[t.GetName()] = true
		n := int64(1)
		for _, d := range t.GetDims() {
			n *= d
		}
		info.Parameters += n
		info.ParamBytes += n * elemSize(t.GetDataType())
	}
	for _, v := range g.GetInput() {
		if !weights[v.GetName()] {
			info.Inputs = append(info.Inputs, tensorInfo(v))
		}
	}
	for _, v := range g.GetOutput() {
		info.Outputs = append(info.Outputs, tensorInfo(v))
	}
	for _, n := range g.GetNode() {
		op := n.GetOpType()
		if d := n.GetDomain(); d != "" && d != "ai.onnx" {
			op = d + "." + op
		}
		info.Ops[op]++
	}
	if len(info.Inputs) == 0 || len(info.Outputs) == 0 {
		return nil, fmt.Errorf("%w: graph has %d inputs and %d outputs", ErrModel, len(info.Inputs), len(info.Outputs))
	}
	return info, nil
}

func tensorInfo(v *onnxpb.ValueInfoProto) Tensor {
	if v.GetType().GetTensorType() == nil {
		return Tensor{Name: v.GetName(), Type: "UNDEFINED", Kind: typeString(v.GetType())}
	}
	tt := v.GetType().GetTensorType()
	t := Tensor{Name: v.GetName(), Type: onnxpb.TensorProto_DataType(tt.GetElemType()).String()}
	for _, d := range tt.GetShape().GetDim() {
		switch {
		case d.GetDimParam() != "":
			t.Shape = append(t.Shape, d.GetDimParam())
		case d.GetDimValue() > 0:
			t.Shape = append(t.Shape, fmt.Sprint(d.GetDimValue()))
		default:
			t.Shape = append(t.Shape, "?")
		}
	}
	return t
}

// typeString names a non-tensor type the way ONNX writes it.
func typeString(t *onnxpb.TypeProto) string {
	elem := func(e int32) string { return strings.ToLower(onnxpb.TensorProto_DataType(e).String()) }
	switch {
	case t == nil:
		return "no type"
	case t.GetTensorType() != nil:
		return "tensor(" + elem(t.GetTensorType().GetElemType()) + ")"
	case t.GetSequenceType() != nil:
		return "sequence of " + typeString(t.GetSequenceType().GetElemType())
	case t.GetMapType() != nil:
		return "map(" + elem(t.GetMapType().GetKeyType()) + ", " + typeString(t.GetMapType().GetValueType()) + ")"
	case t.GetOptionalType() != nil:
		return "optional " + typeString(t.GetOptionalType().GetElemType())
	}
	return "unknown type"
}

func elemSize(dt int32) int64 {
	switch onnxpb.TensorProto_DataType(dt) {
	case onnxpb.TensorProto_INT8, onnxpb.TensorProto_UINT8, onnxpb.TensorProto_BOOL:
		return 1
	case onnxpb.TensorProto_FLOAT16, onnxpb.TensorProto_BFLOAT16, onnxpb.TensorProto_INT16, onnxpb.TensorProto_UINT16:
		return 2
	case onnxpb.TensorProto_DOUBLE, onnxpb.TensorProto_INT64, onnxpb.TensorProto_UINT64:
		return 8
	}
	return 4
}

// String renders Info for a terminal.
func (i *Info) String() string {
	var b strings.Builder
	var opsets []string
	for d, v := range i.Opsets {
		if d == "" {
			d = "ai.onnx"
		}
		opsets = append(opsets, fmt.Sprintf("%s %d", d, v))
	}
	sort.Strings(opsets)
	fmt.Fprintf(&b, "graph       %s\nproducer    %s\nir version  %d\nopsets      %s\n", i.Graph, i.Producer, i.IRVersion, strings.Join(opsets, ", "))
	for _, t := range i.Inputs {
		fmt.Fprintf(&b, "input       %s %s [%s]\n", t.Name, t.Type, strings.Join(t.Shape, ", "))
	}
	for _, t := range i.Outputs {
		fmt.Fprintf(&b, "output      %s %s [%s]\n", t.Name, t.Type, strings.Join(t.Shape, ", "))
	}
	ops := make([]string, 0, len(i.Ops))
	for op, n := range i.Ops {
		ops = append(ops, fmt.Sprintf("%s×%d", op, n))
	}
	sort.Strings(ops)
	fmt.Fprintf(&b, "ops         %d nodes: %s\nparameters  %d (%d bytes)\nsize        %d bytes\n", i.Nodes, strings.Join(ops, " "), i.Parameters, i.ParamBytes, i.Size)
	return b.String()
}
