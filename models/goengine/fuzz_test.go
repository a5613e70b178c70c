package goengine

import (
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/outpost-edge/outpost/models/onnx"
	"github.com/outpost-edge/outpost/models/onnx/onnxpb"
)

// FuzzLoad: no model panics or hangs Load, and a model that loads runs on
// rows of any width without panicking (errors are fine).
func FuzzLoad(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("..", "testdata", "skl2onnx", "*.onnx"))
	third, _ := filepath.Glob(filepath.Join("..", "testdata", "thirdparty", "*.onnx"))
	files = append(files, third...)
	for _, p := range files {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b, uint8(6))
		}
	}
	if m, err := onnx.MLP([]onnx.Dense{{W: [][]float32{{1, 2}, {3, 4}}, B: []float32{0, 1}}}, onnx.MLPOptions{Output: onnx.Softmax}); err == nil {
		f.Add(m, uint8(2))
	}
	f.Fuzz(func(t *testing.T, model []byte, features uint8) {
		e, err := Load(model)
		if err != nil {
			return
		}
		width := int(features%16) + 1
		x := make([]float32, 3*width)
		for i := range x {
			x[i] = float32(i%7) - 3
		}
		e.Run(x, width)
		e.Run(x[:width], width)
	})
}

// TestHugeEmptyShapesAreRefused: a value of shape [2^20, 2^20, 0] holds
// nothing, but kernels walking its outer dimensions would run for hours.
func TestHugeEmptyShapesAreRefused(t *testing.T) {
	model, err := onnx.NewGraph("g").Input("x", "N", 2).
		Initializer("e", nil, 1<<20, 1<<20, 0).
		Node("ReduceSum", []string{"e"}, []string{"r"}).
		Node("Add", []string{"x", "r"}, []string{"y"}).
		Output("y", "N", 2).Model("t")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Load(model); !errors.Is(err, ErrModel) {
		t.Fatalf("err = %v, want ErrModel", err)
	}
}

// TestMutatedModelsDoNotPanic: real models with attributes, dimensions,
// constants and inputs changed at random load or fail, and what loads
// runs or fails, without a panic (the first version panicked on a Gemm
// left with one input). FuzzLoad explores bytes; this explores fields.
func TestMutatedModelsDoNotPanic(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join("..", "testdata", "*", "*.onnx"))
	if len(files) == 0 {
		t.Fatal("no models")
	}
	rng := rand.New(rand.NewPCG(5, 6))
	small := func() int64 { return int64(rng.IntN(14) - 3) }
	for it := 0; it < 3000; it++ {
		raw, _ := os.ReadFile(files[rng.IntN(len(files))])
		var m onnxpb.ModelProto
		proto.Unmarshal(raw, &m)
		g := m.Graph
		for k := 0; k < 1+rng.IntN(3); k++ {
			switch rng.IntN(5) {
			case 0, 1:
				if len(g.Node) == 0 {
					continue
				}
				n := g.Node[rng.IntN(len(g.Node))]
				if len(n.Attribute) == 0 {
					continue
				}
				a := n.Attribute[rng.IntN(len(n.Attribute))]
				if a.I != nil {
					a.I = proto.Int64(small())
				}
				for i := range a.Ints {
					if rng.IntN(3) == 0 {
						a.Ints[i] = small()
					}
				}
				if rng.IntN(4) == 0 && len(a.Ints) > 0 {
					a.Ints = a.Ints[:rng.IntN(len(a.Ints))]
				}
				for i := range a.Floats {
					if rng.IntN(3) == 0 {
						a.Floats[i] = float32(small())
					}
				}
				if rng.IntN(4) == 0 && len(a.Floats) > 0 {
					a.Floats = a.Floats[:rng.IntN(len(a.Floats))]
				}
			case 2:
				if len(g.Initializer) == 0 {
					continue
				}
				in := g.Initializer[rng.IntN(len(g.Initializer))]
				for i := range in.Dims {
					if rng.IntN(2) == 0 {
						in.Dims[i] = small()
					}
				}
			case 3:
				if len(g.Node) == 0 {
					continue
				}
				n := g.Node[rng.IntN(len(g.Node))]
				if len(n.Input) > 0 && rng.IntN(2) == 0 {
					n.Input = n.Input[:rng.IntN(len(n.Input))]
				} else if len(n.Input) > 0 {
					all := []string{}
					for _, o := range g.Node {
						all = append(all, o.Output...)
					}
					n.Input[rng.IntN(len(n.Input))] = all[rng.IntN(len(all))]
				}
			case 4:
				if len(g.Initializer) == 0 {
					continue
				}
				in := g.Initializer[rng.IntN(len(g.Initializer))]
				if len(in.Int64Data) > 0 {
					in.Int64Data[rng.IntN(len(in.Int64Data))] = small()
				}
				if len(in.RawData) > 0 && in.GetDataType() == int32(onnxpb.TensorProto_INT64) {
					in.RawData[8*rng.IntN(len(in.RawData)/8)] = byte(small())
				}
			}
		}
		b, _ := proto.Marshal(&m)
		width := 1 + rng.IntN(30)
		if rng.IntN(2) == 0 {
			width = []int{6, 12, 16, 18, 300}[rng.IntN(5)]
		}
		func() {
			defer func() {
				if r := recover(); r != nil {
					t.Fatalf("mutation %d, rows of %d: %v", it, width, r)
				}
			}()
			e, err := Load(b)
			if err != nil {
				return
			}
			x := make([]float32, 3*width)
			for i := range x {
				x[i] = float32(i%5) - 2
			}
			e.Run(x, width)
			e.Run(x[:width], width)
		}()
	}
}
