package onnx

import (
	"errors"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/outpost-edge/outpost/models/onnx/onnxpb"
)

func TestFeedChecks(t *testing.T) {
	f := Feed{Name: "img", Shape: []int64{2, 2, 3}, Data: make([]float32, 12)}
	if err := errors.Join(f.Check(), f.Fits([]int64{-1, 2, 3}), f.CheckValues(onnxpb.TensorProto_UINT8)); err != nil {
		t.Fatal(err)
	}
	for name, err := range map[string]error{
		"length":   Feed{Name: "img", Shape: []int64{2, 2, 3}, Data: make([]float32, 11)}.Check(),
		"negative": Feed{Name: "img", Shape: []int64{-1, 12}, Data: make([]float32, 12)}.Check(),
		"huge":     Feed{Name: "img", Shape: []int64{1 << 40, 1 << 40}}.Check(),
		"rank":     f.Fits([]int64{-1, 6}),
		"fixed":    f.Fits([]int64{-1, 3, 3}),
		"byte":     Feed{Name: "img", Data: []float32{255, 256}}.CheckValues(onnxpb.TensorProto_UINT8),
		"fraction": Feed{Name: "img", Data: []float32{0.5}}.CheckValues(onnxpb.TensorProto_INT64),
		"nan":      Feed{Name: "img", Data: []float32{float32(math.NaN())}}.CheckValues(onnxpb.TensorProto_INT8),
	} {
		if !errors.Is(err, ErrShape) || !strings.Contains(err.Error(), "input img") {
			t.Errorf("%s: %v", name, err)
		}
	}
	// Float inputs take any value.
	if err := (Feed{Data: []float32{float32(math.Inf(1)), 0.5}}).CheckValues(onnxpb.TensorProto_FLOAT); err != nil {
		t.Fatal(err)
	}
}

func TestMatch(t *testing.T) {
	feeds := []Feed{{Name: "b"}, {Name: "a"}}
	order, err := Match(nil, []string{"a", "b"}, feeds)
	if err != nil || !slices.Equal(order, []int{1, 0}) {
		t.Fatalf("order %v, %v", order, err)
	}
	for want, fs := range map[string][]Feed{
		"input b is not fed":   {{Name: "a"}},
		"input a is fed twice": {{Name: "a"}, {Name: "b"}, {Name: "a"}},
		`no input "c"`:         {{Name: "a"}, {Name: "b"}, {Name: "c"}},
	} {
		if _, err := Match(order, []string{"a", "b"}, fs); !errors.Is(err, ErrShape) || !strings.Contains(err.Error(), want) {
			t.Errorf("%v: %v, want %q", fs, err, want)
		}
	}
}
