package quant

import (
	"github.com/outpost-edge/outpost/models/onnx/onnxpb"
)

// batch marks the first dimension: whatever the caller feeds.
const batch = -1

// staticShapes returns the shape of each tensor that is fixed but for its
// first (batch) dimension, which is batch: from the graph's inputs and
// value_info, carried through the ops CNNs are made of. A tensor that is
// missing has a shape known only at run time, and the ops that read it
// are quantized without needing it.
func staticShapes(g *onnxpb.GraphProto, inits map[string]*onnxpb.TensorProto) map[string][]int64 {
	shapes := map[string][]int64{}
	declare := func(v *onnxpb.ValueInfoProto) {
		dims := v.GetType().GetTensorType().GetShape().GetDim()
		if len(dims) == 0 {
			return
		}
		s := []int64{batch}
		for _, d := range dims[1:] {
			if d.GetDimValue() <= 0 {
				return
			}
			s = append(s, d.GetDimValue())
		}
		shapes[v.GetName()] = s
	}
	for _, v := range g.GetInput() {
		if _, ok := inits[v.GetName()]; !ok {
			declare(v)
		}
	}
	for _, v := range g.GetValueInfo() {
		declare(v)
	}
	for _, n := range g.GetNode() {
		if len(n.GetOutput()) == 0 || len(n.GetInput()) == 0 {
			continue
		}
		if _, ok := shapes[n.GetOutput()[0]]; ok {
			continue
		}
		if s := shapeOf(n, shapes, inits); s != nil {
			shapes[n.GetOutput()[0]] = s
		}
	}
	return shapes
}

// shapeOf is the shape of n's first output, or nil when it is not fixed.
func shapeOf(n *onnxpb.NodeProto, shapes map[string][]int64, inits map[string]*onnxpb.TensorProto) []int64 {
	in := shapes[n.GetInput()[0]]
	if in == nil {
		return nil
	}
	ints := map[string][]int64{}
	var axis, ceil int64 = 1, 0
	autoPad := ""
	for _, a := range n.GetAttribute() {
		switch a.GetName() {
		case "axis":
			axis = a.GetI()
		case "ceil_mode":
			ceil = a.GetI()
		case "auto_pad":
			autoPad = string(a.GetS())
		default:
			ints[a.GetName()] = a.GetInts()
		}
	}
	switch n.GetOpType() {
	case "Relu", "LeakyRelu", "Sigmoid", "Tanh", "Clip", "Elu", "HardSigmoid", "HardSwish", "Softplus",
		"Neg", "Abs", "Exp", "Sqrt", "Erf", "Identity", "Dropout", "Cast", "BatchNormalization", "Softmax":
		return in
	case "Add", "Sub", "Mul", "Div", "Max", "Min", "Pow", "PRelu":
		if len(n.GetInput()) != 2 {
			return nil
		}
		other := shapes[n.GetInput()[1]]
		if c, ok := inits[n.GetInput()[1]]; ok {
			other = c.GetDims()
		}
		return broadcast(in, other)
	case "Conv", "MaxPool", "AveragePool":
		rank := len(in) - 2
		if rank < 1 {
			return nil
		}
		out := []int64{batch, in[1]}
		kernel := ints["kernel_shape"]
		if n.GetOpType() == "Conv" {
			w, ok := inits[n.GetInput()[1]]
			if !ok || len(w.GetDims()) != rank+2 {
				return nil
			}
			out[1], kernel = w.GetDims()[0], w.GetDims()[2:]
			ceil = 0
		}
		if len(kernel) != rank {
			return nil
		}
		p, ok := window(in[2:], kernel, ints["strides"], ints["dilations"], ints["pads"], autoPad)
		if !ok {
			return nil
		}
		for d := range rank {
			span := p.padded[d] - p.dilations[d]*(kernel[d]-1) - 1
			o := span/p.strides[d] + 1
			// ceil_mode: one more window, unless it would start in the
			// end padding (ONNX ignores those).
			if ceil != 0 && span%p.strides[d] != 0 && (o)*p.strides[d] < in[2+d]+p.begin[d] {
				o++
			}
			if span < 0 {
				return nil
			}
			out = append(out, o)
		}
		return out
	case "GlobalAveragePool", "GlobalMaxPool":
		out := []int64{batch, in[1]}
		for range in[2:] {
			out = append(out, 1)
		}
		return out
	case "Flatten":
		if axis != 1 {
			return nil
		}
		return []int64{batch, product(in[1:])}
	case "Transpose":
		perm := ints["perm"]
		if len(perm) != len(in) || perm[0] != 0 {
			return nil
		}
		out := make([]int64, len(in))
		for i, p := range perm {
			if p < 0 || int(p) >= len(in) {
				return nil
			}
			out[i] = in[p]
		}
		return out
	case "Reshape":
		if len(n.GetInput()) < 2 {
			return nil
		}
		c, ok := inits[n.GetInput()[1]]
		if !ok {
			return nil
		}
		to := int64s(c)
		if len(to) == 0 || (to[0] != 0 && to[0] != -1) {
			return nil
		}
		out, free := []int64{batch}, -1
		for i, d := range to[1:] {
			switch {
			case d == -1 && free < 0 && to[0] == 0:
				free = i + 1
				out = append(out, 1)
			case d > 0:
				out = append(out, d)
			default:
				return nil
			}
		}
		if free > 0 {
			rest := product(out[1:])
			if rest == 0 || product(in[1:])%rest != 0 {
				return nil
			}
			out[free] = product(in[1:]) / rest
		}
		if to[0] == -1 && product(out[1:]) != product(in[1:]) {
			return nil // the batch would change
		}
		return out
	}
	return nil
}

// geometry is a conv or pool window over padded spatial dimensions.
type geometry struct {
	strides, dilations, begin, padded []int64
}

// window resolves strides, dilations and pads (explicit or auto_pad) for
// spatial dimensions in and kernel.
func window(in, kernel, strides, dilations, pads []int64, autoPad string) (geometry, bool) {
	rank := len(in)
	fill := func(v []int64, def int64) ([]int64, bool) {
		if len(v) == 0 {
			v = make([]int64, rank)
			for i := range v {
				v[i] = def
			}
		}
		for _, x := range v {
			if x < 1 {
				return nil, false
			}
		}
		return v, len(v) == rank
	}
	var ok1, ok2 bool
	p := geometry{}
	p.strides, ok1 = fill(strides, 1)
	p.dilations, ok2 = fill(dilations, 1)
	if !ok1 || !ok2 {
		return p, false
	}
	end := make([]int64, rank)
	p.begin = make([]int64, rank)
	switch autoPad {
	case "", "NOTSET":
		if len(pads) != 0 && len(pads) != 2*rank {
			return p, false
		}
		if len(pads) == 2*rank {
			copy(p.begin, pads[:rank])
			copy(end, pads[rank:])
		}
	case "VALID":
	case "SAME_UPPER", "SAME_LOWER":
		for d := range rank {
			out := (in[d] + p.strides[d] - 1) / p.strides[d]
			total := max(0, (out-1)*p.strides[d]+p.dilations[d]*(kernel[d]-1)+1-in[d])
			p.begin[d], end[d] = total/2, total-total/2
			if autoPad == "SAME_LOWER" {
				p.begin[d], end[d] = end[d], p.begin[d]
			}
		}
	default:
		return p, false
	}
	for d := range rank {
		if p.begin[d] < 0 || end[d] < 0 {
			return p, false
		}
		p.padded = append(p.padded, in[d]+p.begin[d]+end[d])
	}
	return p, true
}

// broadcast is the numpy broadcast of a and b, or nil when it is not
// fixed or does not exist (b nil: unknown).
func broadcast(a, b []int64) []int64 {
	if b == nil || len(b) > len(a) {
		return nil
	}
	out := append([]int64(nil), a...)
	for i := range b {
		x, y := &out[len(a)-len(b)+i], b[i]
		switch {
		case y == 1 || y == *x:
		case *x == 1 && y > 0:
			*x = y
		default:
			return nil
		}
	}
	return out
}

func product(v []int64) int64 {
	p := int64(1)
	for _, x := range v {
		p *= x
	}
	return p
}

// int64s reads an INT64 tensor's values.
func int64s(t *onnxpb.TensorProto) []int64 {
	if t.GetDataType() != int32(onnxpb.TensorProto_INT64) {
		return nil
	}
	if raw := t.GetRawData(); len(raw) > 0 {
		out := make([]int64, len(raw)/8)
		for i := range out {
			for b := 7; b >= 0; b-- {
				out[i] = out[i]<<8 | int64(raw[8*i+b])
			}
		}
		return out
	}
	return t.GetInt64Data()
}
