package conformance

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/outpost-edge/outpost/models/goengine"
	"github.com/outpost-edge/outpost/models/onnx"
	"github.com/outpost-edge/outpost/models/onnx/onnxpb"
	"github.com/outpost-edge/outpost/models/ort"
	"github.com/outpost-edge/outpost/test/testenv"
)

// feedEngine is what a multi-input pipeline calls.
type feedEngine interface {
	RunFeeds(feeds []onnx.Feed) ([]float32, error)
	Outputs() int
	Close() error
}

// feedRetype gives graph inputs another element type: the builder
// declares float inputs only.
func feedRetype(t *testing.T, model []byte, types map[string]onnxpb.TensorProto_DataType) []byte {
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

func gemmRef(x, w []float32, c []float32) []float64 {
	out := make([]float64, len(c))
	for o := range c {
		out[o] = float64(c[o])
		for k, v := range x {
			out[o] += float64(w[o*len(x)+k]) * float64(v)
		}
	}
	return out
}

// pixels is n images of 2×2×3 bytes, as float32.
func pixels(rng *rand.Rand, n int) []float32 {
	out := make([]float32, n*12)
	for i := range out {
		out[i] = float32(rng.IntN(256))
	}
	return out
}

type feedCase struct {
	name  string
	model []byte
	// feeds is one batch of rows; want is the hand-computed answer.
	feeds func(rows int) ([]onnx.Feed, []float64)
}

func feedCases(t *testing.T) []feedCase {
	rng := rand.New(rand.NewPCG(5, 6))
	build := func(m []byte, err error) []byte {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	axis1 := onnx.Attr{Name: "axis", Value: int64(1)}
	transB := onnx.Attr{Name: "transB", Value: int64(1)}
	toFloat := onnx.Attr{Name: "to", Value: int64(onnxpb.TensorProto_FLOAT)}

	// a [N,3] and b [N,1,4] → Gemm(Concat(a, Flatten(b))) → [N,2].
	w2, c2 := randMat(rng, 2, 7), randMat(rng, 1, 2)
	two := build(onnx.NewGraph("two").Input("a", "N", 3).Input("b", "N", 1, 4).
		Initializer("w", w2, 2, 7).Initializer("c", c2, 2).
		Node("Flatten", []string{"b"}, []string{"bf"}).
		Node("Concat", []string{"a", "bf"}, []string{"x"}, axis1).
		Node("Gemm", []string{"x", "w", "c"}, []string{"y"}, transB).
		Output("y", "N", 2).Model("t"))

	// uint8 img [N,2,2,3] → Cast → [per-channel ReduceMean, Gemm(Flatten)].
	// Weights over 255 keep the sums of pixels small, so float32 rounding
	// stays well inside the tolerance.
	wi := randMat(rng, 1, 12)
	for i := range wi {
		wi[i] /= 255
	}
	ci := randMat(rng, 1, 1)
	img := feedRetype(t, build(onnx.NewGraph("image").Input("img", "N", 2, 2, 3).
		Initializer("w", wi, 1, 12).Initializer("c", ci, 1).
		Node("Cast", []string{"img"}, []string{"f"}, toFloat).
		Node("ReduceMean", []string{"f"}, []string{"m"}, onnx.Attr{Name: "axes", Value: []int64{1, 2}}, onnx.Attr{Name: "keepdims", Value: int64(0)}).
		Node("Flatten", []string{"f"}, []string{"fl"}).
		Node("Gemm", []string{"fl", "w", "c"}, []string{"g"}, transB).
		Node("Concat", []string{"m", "g"}, []string{"y"}, axis1).
		Output("y", "N", 4).Model("t")), map[string]onnxpb.TensorProto_DataType{"img": onnxpb.TensorProto_UINT8})
	imgRef := func(px []float32) []float64 {
		var out []float64
		for ch := range 3 {
			out = append(out, float64(px[ch]+px[3+ch]+px[6+ch]+px[9+ch])/4)
		}
		return append(out, gemmRef(px, wi, ci)...)
	}

	// A camera frame beside window aggregates: uint8 img and float agg [N,2].
	wm, cm := randMat(rng, 2, 14), randMat(rng, 1, 2)
	for i := range 12 {
		wm[i] /= 255
		wm[14+i] /= 255
	}
	mixed := feedRetype(t, build(onnx.NewGraph("mixed").Input("agg", "N", 2).Input("img", "N", 2, 2, 3).
		Initializer("w", wm, 2, 14).Initializer("c", cm, 2).
		Node("Cast", []string{"img"}, []string{"f"}, toFloat).
		Node("Flatten", []string{"f"}, []string{"fl"}).
		Node("Concat", []string{"fl", "agg"}, []string{"x"}, axis1).
		Node("Gemm", []string{"x", "w", "c"}, []string{"y"}, transB).
		Output("y", "N", 2).Model("t")), map[string]onnxpb.TensorProto_DataType{"img": onnxpb.TensorProto_UINT8})

	return []feedCase{
		{"two float inputs", two, func(n int) ([]onnx.Feed, []float64) {
			a, b := randMat(rng, n, 3), randMat(rng, n, 4)
			var want []float64
			for r := range n {
				x := append(append([]float32(nil), a[3*r:3*r+3]...), b[4*r:4*r+4]...)
				want = append(want, gemmRef(x, w2, c2)...)
			}
			return []onnx.Feed{{Name: "a", Shape: []int64{int64(n), 3}, Data: a}, {Name: "b", Shape: []int64{int64(n), 1, 4}, Data: b}}, want
		}},
		{"uint8 image", img, func(n int) ([]onnx.Feed, []float64) {
			px := pixels(rng, n)
			var want []float64
			for r := range n {
				want = append(want, imgRef(px[12*r:12*r+12])...)
			}
			return []onnx.Feed{{Name: "img", Shape: []int64{int64(n), 2, 2, 3}, Data: px}}, want
		}},
		{"image and aggregates", mixed, func(n int) ([]onnx.Feed, []float64) {
			px, agg := pixels(rng, n), randMat(rng, n, 2)
			var want []float64
			for r := range n {
				x := append(append([]float32(nil), px[12*r:12*r+12]...), agg[2*r:2*r+2]...)
				want = append(want, gemmRef(x, wm, cm)...)
			}
			// Given in another order than the graph declares them.
			return []onnx.Feed{{Name: "img", Shape: []int64{int64(n), 2, 2, 3}, Data: px}, {Name: "agg", Shape: []int64{int64(n), 2}, Data: agg}}, want
		}},
	}
}

func feedEngines(t *testing.T, model []byte) (*ort.Session, *goengine.Engine) {
	t.Helper()
	if err := ort.Init(testenv.ORTLibrary(t)); err != nil {
		t.Fatal(err)
	}
	s, err := ort.NewSession(model)
	if err != nil {
		t.Fatalf("onnxruntime: %v", err)
	}
	e, err := goengine.Load(model)
	if err != nil {
		s.Close()
		t.Fatalf("go: %v", err)
	}
	t.Cleanup(func() { s.Close(); e.Close() })
	return s, e
}

func within(t *testing.T, what string, got []float32, want []float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	for i := range want {
		if d := math.Abs(float64(got[i]) - want[i]); !(d <= tolerance) {
			t.Fatalf("%s value %d = %v, want %v", what, i, got[i], want[i])
		}
	}
}

// TestFeedsAgree: multi-input and uint8 graphs, several batch sizes, on
// both engines, against each other and the hand-computed answer.
func TestFeedsAgree(t *testing.T) {
	for _, c := range feedCases(t) {
		t.Run(c.name, func(t *testing.T) {
			s, e := feedEngines(t, c.model)
			if s.Outputs() != e.Outputs() {
				t.Fatalf("widths %d vs %d", s.Outputs(), e.Outputs())
			}
			for _, rows := range []int{1, 5, 32} {
				feeds, want := c.feeds(rows)
				for name, eng := range map[string]feedEngine{"onnxruntime": s, "go": e} {
					got, err := eng.RunFeeds(feeds)
					if err != nil {
						t.Fatalf("%s, %d rows: %v", name, rows, err)
					}
					within(t, name, got, want)
					ref, _ := s.RunFeeds(feeds)
					within(t, name+" against onnxruntime", got, toF64(ref))
				}
				shared, err := s.RunFeedsShared(feeds)
				if err != nil {
					t.Fatal(err)
				}
				within(t, "RunFeedsShared", shared, want)
			}
		})
	}
}

func toF64(x []float32) []float64 {
	out := make([]float64, len(x))
	for i, v := range x {
		out[i] = float64(v)
	}
	return out
}

// TestFeedsRefusedAlike: both engines refuse the same malformed feeds as
// bad input, in the same words, before anything runs.
func TestFeedsRefusedAlike(t *testing.T) {
	cases := feedCases(t)
	two, img := cases[0], cases[1]
	good, _ := two.feeds(2)
	edit := func(k int, change func(*onnx.Feed)) []onnx.Feed {
		out := append([]onnx.Feed(nil), good...)
		out[k].Shape = append([]int64(nil), out[k].Shape...)
		change(&out[k])
		return out
	}
	px, _ := img.feeds(2)
	badPx := append([]float32(nil), px[0].Data...)
	badPx[3] = 256
	tests := []struct {
		name  string
		model []byte
		feeds []onnx.Feed
	}{
		{"missing feed", two.model, good[:1]},
		{"unknown feed", two.model, append(edit(0, func(*onnx.Feed) {}), onnx.Feed{Name: "c", Shape: []int64{2, 1}, Data: []float32{1, 2}})},
		{"wrong data length", two.model, edit(1, func(f *onnx.Feed) { f.Data = f.Data[:7] })},
		{"wrong fixed dim", two.model, edit(1, func(f *onnx.Feed) { f.Shape = []int64{2, 2, 2} })},
		{"wrong rank", two.model, edit(1, func(f *onnx.Feed) { f.Shape = []int64{2, 4} })},
		{"pixel out of range", img.model, []onnx.Feed{{Name: "img", Shape: px[0].Shape, Data: badPx}}},
	}
	for _, tc := range tests {
		s, e := feedEngines(t, tc.model)
		_, oerr := s.RunFeeds(tc.feeds)
		_, gerr := e.RunFeeds(tc.feeds)
		if !errors.Is(oerr, ort.ErrInput) || !errors.Is(oerr, onnx.ErrShape) {
			t.Errorf("%s: onnxruntime: %v", tc.name, oerr)
		}
		if !errors.Is(gerr, goengine.ErrInput) || !errors.Is(gerr, onnx.ErrShape) {
			t.Errorf("%s: go: %v", tc.name, gerr)
		}
		// The words after each engine's sentinel are onnx's, the same.
		if _, ow, _ := strings.Cut(fmt.Sprint(oerr), onnx.ErrShape.Error()); ow == "" || !strings.HasSuffix(fmt.Sprint(gerr), ow) {
			t.Errorf("%s: onnxruntime says %v, go says %v", tc.name, oerr, gerr)
		}
	}
	// Run has no one input to feed in a two-input graph.
	s, e := feedEngines(t, two.model)
	if _, err := s.Run(make([]float32, 6), 3); !errors.Is(err, ort.ErrInput) {
		t.Errorf("onnxruntime Run on two inputs: %v", err)
	}
	if _, err := e.Run(make([]float32, 6), 3); !errors.Is(err, goengine.ErrInput) {
		t.Errorf("go Run on two inputs: %v", err)
	}
}

// TestRunOnUint8Input: Run's rows reach a single uint8 input as bytes on
// ONNX Runtime (which needs a uint8 tensor) as on the pure-Go engine.
func TestRunOnUint8Input(t *testing.T) {
	m, err := onnx.NewGraph("g").Input("img", "N", 3).
		Node("Cast", []string{"img"}, []string{"f"}, onnx.Attr{Name: "to", Value: int64(onnxpb.TensorProto_FLOAT)}).
		Node("ReduceMean", []string{"f"}, []string{"y"}, onnx.Attr{Name: "axes", Value: []int64{1}}).
		Output("y", "N", 1).Model("t")
	if err != nil {
		t.Fatal(err)
	}
	s, e := feedEngines(t, feedRetype(t, m, map[string]onnxpb.TensorProto_DataType{"img": onnxpb.TensorProto_UINT8}))
	x := []float32{0, 128, 255, 1, 2, 3}
	for name, run := range map[string]func([]float32, int) ([]float32, error){"onnxruntime": s.Run, "onnxruntime shared": s.RunShared, "go": e.Run} {
		got, err := run(x, 3)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		within(t, name, got, []float64{383.0 / 3, 2})
	}
}

// TestTraceFeedsAgree: calibration's trace of a multi-input graph gives
// the same intermediate values on both engines.
func TestTraceFeedsAgree(t *testing.T) {
	c := feedCases(t)[2]
	_, e := feedEngines(t, c.model)
	feeds, _ := c.feeds(4)
	ref, err := ort.TraceFeeds(c.model, []string{"x", "agg"}, feeds)
	if err != nil {
		t.Fatal(err)
	}
	got, err := e.TraceFeeds(feeds)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"x", "agg"} {
		if len(ref[name]) == 0 {
			t.Fatalf("onnxruntime traced no %s", name)
		}
		within(t, name, got[name], toF64(ref[name]))
	}
}
