package goengine

import (
	"errors"
	"math"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/outpost-edge/outpost/models/onnx"
	"github.com/outpost-edge/outpost/models/onnx/onnxpb"
)

// retype gives graph inputs another element type: the builder declares
// float inputs only.
func retype(t *testing.T, model []byte, types map[string]onnxpb.TensorProto_DataType) []byte {
	t.Helper()
	var m onnxpb.ModelProto
	if err := proto.Unmarshal(model, &m); err != nil {
		t.Fatal(err)
	}
	for _, in := range m.Graph.Input {
		if dt, ok := types[in.GetName()]; ok {
			in.Type.GetTensorType().ElemType = proto.Int32(int32(dt))
		}
	}
	out, err := proto.Marshal(&m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// twoInputs: a [N,3] and b [N,1,4] → Gemm(Concat(a, Flatten(b))) → [N,2].
func twoInputs(t *testing.T, w, c []float32) []byte {
	t.Helper()
	m, err := onnx.NewGraph("two").Input("a", "N", 3).Input("b", "N", 1, 4).
		Initializer("w", w, 2, 7).Initializer("c", c, 2).
		Node("Flatten", []string{"b"}, []string{"bf"}).
		Node("Concat", []string{"a", "bf"}, []string{"x"}, onnx.Attr{Name: "axis", Value: int64(1)}).
		Node("Gemm", []string{"x", "w", "c"}, []string{"y"}, onnx.Attr{Name: "transB", Value: int64(1)}).
		Output("y", "N", 2).Model("t")
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// image: a uint8 img [N,2,2,3] → Cast → [ReduceMean over H and W (per
// channel), Gemm(Flatten)] → [N,4].
func image(t *testing.T, w []float32, c float32) []byte {
	t.Helper()
	m, err := onnx.NewGraph("image").Input("img", "N", 2, 2, 3).
		Initializer("w", w, 1, 12).Initializer("c", []float32{c}, 1).
		Node("Cast", []string{"img"}, []string{"f"}, onnx.Attr{Name: "to", Value: int64(onnxpb.TensorProto_FLOAT)}).
		Node("ReduceMean", []string{"f"}, []string{"m"}, onnx.Attr{Name: "axes", Value: []int64{1, 2}}, onnx.Attr{Name: "keepdims", Value: int64(0)}).
		Node("Flatten", []string{"f"}, []string{"fl"}).
		Node("Gemm", []string{"fl", "w", "c"}, []string{"g"}, onnx.Attr{Name: "transB", Value: int64(1)}).
		Node("Concat", []string{"m", "g"}, []string{"y"}, onnx.Attr{Name: "axis", Value: int64(1)}).
		Output("y", "N", 4).Model("t")
	if err != nil {
		t.Fatal(err)
	}
	return retype(t, m, map[string]onnxpb.TensorProto_DataType{"img": onnxpb.TensorProto_UINT8})
}

func near(t *testing.T, got []float32, want []float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d values, want %d", len(got), len(want))
	}
	for i := range want {
		if d := math.Abs(float64(got[i]) - want[i]); !(d <= 1e-5) {
			t.Fatalf("value %d = %v, want %v", i, got[i], want[i])
		}
	}
}

var (
	twoW = []float32{0.5, -1, 0.25, 2, 0, -0.5, 1, -0.75, 0.1, 0.2, 0.3, -0.4, 0.6, -1.5}
	twoC = []float32{0.125, -0.25}
)

func TestRunFeedsTwoInputs(t *testing.T) {
	e, err := Load(twoInputs(t, twoW, twoC))
	if err != nil {
		t.Fatal(err)
	}
	a := []float32{1, 2, 3, -1, 0, 0.5}
	b := []float32{0.5, -0.5, 1, 2, 0, 1, -1, 0.25}
	// Feeds in either order: they are matched by name.
	got, err := e.RunFeeds([]onnx.Feed{{Name: "b", Shape: []int64{2, 1, 4}, Data: b}, {Name: "a", Shape: []int64{2, 3}, Data: a}})
	if err != nil {
		t.Fatal(err)
	}
	var want []float64
	for r := range 2 {
		x := append(append([]float32(nil), a[3*r:3*r+3]...), b[4*r:4*r+4]...)
		for o := range 2 {
			z := float64(twoC[o])
			for k, v := range x {
				z += float64(twoW[7*o+k]) * float64(v)
			}
			want = append(want, z)
		}
	}
	near(t, got, want)
	if e.Outputs() != 2 {
		t.Fatalf("width %d", e.Outputs())
	}
	// Run has no single input to feed.
	if _, err := e.Run(a, 3); !errors.Is(err, ErrInput) || !strings.Contains(err.Error(), "2 inputs") {
		t.Fatalf("Run on two inputs: %v", err)
	}
	tr, err := e.TraceFeeds([]onnx.Feed{{Name: "a", Shape: []int64{2, 3}, Data: a}, {Name: "b", Shape: []int64{2, 1, 4}, Data: b}})
	if err != nil || len(tr["x"]) != 14 || tr["x"][3] != b[0] {
		t.Fatalf("trace x = %v, %v", tr["x"], err)
	}
}

func TestRunFeedsUint8Image(t *testing.T) {
	w := make([]float32, 12)
	for i := range w {
		w[i] = float32(i-6) / 255 // keeps sums of pixels small, so float32 stays within 1e-5
	}
	e, err := Load(image(t, w, 0.5))
	if err != nil {
		t.Fatal(err)
	}
	img := make([]float32, 2*12)
	for i := range img {
		img[i] = float32((i * 37) % 256)
	}
	var want []float64
	for r := range 2 {
		px := img[12*r : 12*r+12]
		for ch := range 3 {
			want = append(want, float64(px[ch]+px[3+ch]+px[6+ch]+px[9+ch])/4)
		}
		g := 0.5
		for k, v := range px {
			g += float64(w[k]) * float64(v)
		}
		want = append(want, g)
	}
	got, err := e.RunFeeds([]onnx.Feed{{Name: "img", Shape: []int64{2, 2, 2, 3}, Data: img}})
	if err != nil {
		t.Fatal(err)
	}
	near(t, got, want)
	// The pixel range is the type's: 256, 1.5, -1 and NaN are no bytes.
	for _, bad := range []float32{256, 1.5, -1, float32(math.NaN())} {
		x := append([]float32(nil), img...)
		x[5] = bad
		if _, err := e.RunFeeds([]onnx.Feed{{Name: "img", Shape: []int64{2, 2, 2, 3}, Data: x}}); !errors.Is(err, ErrInput) || !strings.Contains(err.Error(), "img") {
			t.Errorf("pixel %v: %v", bad, err)
		}
	}
}

// TestRunFeedsRefuses: every malformed feed is refused as bad input, with
// the input named, before any kernel runs.
func TestRunFeedsRefuses(t *testing.T) {
	e, err := Load(twoInputs(t, twoW, twoC))
	if err != nil {
		t.Fatal(err)
	}
	a := onnx.Feed{Name: "a", Shape: []int64{2, 3}, Data: make([]float32, 6)}
	b := onnx.Feed{Name: "b", Shape: []int64{2, 1, 4}, Data: make([]float32, 8)}
	with := func(f onnx.Feed, edit func(*onnx.Feed)) onnx.Feed {
		f.Shape = append([]int64(nil), f.Shape...)
		edit(&f)
		return f
	}
	for _, tc := range []struct {
		name  string
		feeds []onnx.Feed
		says  string
	}{
		{"missing", []onnx.Feed{a}, "input b is not fed"},
		{"unknown", []onnx.Feed{a, b, {Name: "c", Shape: []int64{2, 1}, Data: make([]float32, 2)}}, `no input "c"`},
		{"renamed", []onnx.Feed{a, with(b, func(f *onnx.Feed) { f.Name = "B" })}, "input b is not fed"},
		{"twice", []onnx.Feed{a, b, a}, "input a is fed twice"},
		{"data length", []onnx.Feed{a, with(b, func(f *onnx.Feed) { f.Data = f.Data[:7] })}, "input b: 7 values"},
		{"fixed dim", []onnx.Feed{a, with(b, func(f *onnx.Feed) { f.Shape = []int64{2, 2, 2} })}, "input b: dimension 1 is 2"},
		{"rank", []onnx.Feed{a, with(b, func(f *onnx.Feed) { f.Shape = []int64{2, 4} })}, "input b: rank 2"},
		{"negative dim", []onnx.Feed{with(a, func(f *onnx.Feed) { f.Shape = []int64{-2, -3} }), b}, "input a: shape"},
		{"none", nil, "input a is not fed"},
	} {
		_, err := e.RunFeeds(tc.feeds)
		if !errors.Is(err, ErrInput) || !errors.Is(err, onnx.ErrShape) || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("%s: %v, want ErrInput saying %q", tc.name, err, tc.says)
		}
	}
	// The batch size is symbolic: any fits, as long as every input agrees.
	if _, err := e.RunFeeds([]onnx.Feed{{Name: "a", Shape: []int64{5, 3}, Data: make([]float32, 15)}, {Name: "b", Shape: []int64{5, 1, 4}, Data: make([]float32, 20)}}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.RunFeeds([]onnx.Feed{{Name: "a", Shape: []int64{5, 3}, Data: make([]float32, 15)}, b}); !errors.Is(err, ErrInput) {
		t.Fatalf("batches 5 and 2: %v", err)
	}
}

// TestRunOnOneFeed: Run is RunFeeds with one [rows, features] feed, so it
// checks the declared shape too, and runs a single uint8 input.
func TestRunOnOneFeed(t *testing.T) {
	m, err := onnx.Logistic([][]float32{{1, -1}}, []float32{0})
	if err != nil {
		t.Fatal(err)
	}
	e, err := Load(m)
	if err != nil {
		t.Fatal(err)
	}
	x := []float32{1, 2, 3, 3}
	run, err := e.Run(x, 2)
	if err != nil {
		t.Fatal(err)
	}
	feeds, err := e.RunFeeds([]onnx.Feed{{Name: "features", Shape: []int64{2, 2}, Data: x}})
	if err != nil || len(run) != 2 || run[0] != feeds[0] || run[1] != feeds[1] {
		t.Fatalf("Run %v, RunFeeds %v, %v", run, feeds, err)
	}
	if _, err := e.Run(x, 4); !errors.Is(err, ErrInput) || !strings.Contains(err.Error(), "dimension 1 is 4") {
		t.Fatalf("4 features for 2: %v", err)
	}
	flat, err := onnx.NewGraph("g").Input("img", "N", 3).
		Node("Cast", []string{"img"}, []string{"y"}, onnx.Attr{Name: "to", Value: int64(onnxpb.TensorProto_FLOAT)}).
		Output("y", "N", 3).Model("t")
	if err != nil {
		t.Fatal(err)
	}
	e, err = Load(retype(t, flat, map[string]onnxpb.TensorProto_DataType{"img": onnxpb.TensorProto_UINT8}))
	if err != nil {
		t.Fatal(err)
	}
	if y, err := e.Run([]float32{0, 128, 255}, 3); err != nil || y[2] != 255 {
		t.Fatalf("uint8 Run = %v, %v", y, err)
	}
	if _, err := e.Run([]float32{0, 128, 256}, 3); !errors.Is(err, ErrInput) {
		t.Fatalf("256 as a byte: %v", err)
	}
	x3 := []float32{1, 2, 3}
	e.Run(x3, 3)
	if n := testing.AllocsPerRun(20, func() { e.Run(x3, 3) }); n > 1 {
		t.Errorf("uint8 Run: %v allocations", n)
	}
}

// TestLoadRefusesInputTypes: an input the engine cannot hold exactly in
// float32 is refused at load, by name.
func TestLoadRefusesInputTypes(t *testing.T) {
	m, err := onnx.NewGraph("g").Input("s", "N", 1).Node("Identity", []string{"s"}, []string{"y"}).Output("y", "N", 1).Model("t")
	if err != nil {
		t.Fatal(err)
	}
	_, err = Load(retype(t, m, map[string]onnxpb.TensorProto_DataType{"s": onnxpb.TensorProto_STRING}))
	if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "input s") {
		t.Fatalf("string input: %v", err)
	}
}
