package conformance

import (
	"math"
	"math/rand/v2"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/outpost-edge/outpost/models/goengine"
	"github.com/outpost-edge/outpost/models/onnx"
	"github.com/outpost-edge/outpost/models/onnx/onnxpb"
	"github.com/outpost-edge/outpost/models/ort"
)

// attr builds an ai.onnx.ml attribute from a Go value.
func attr(name string, v any) *onnxpb.AttributeProto {
	a := &onnxpb.AttributeProto{Name: proto.String(name)}
	switch v := v.(type) {
	case int64:
		a.Type, a.I = onnxpb.AttributeProto_INT.Enum(), proto.Int64(v)
	case string:
		a.Type, a.S = onnxpb.AttributeProto_STRING.Enum(), []byte(v)
	case []float32:
		a.Type, a.Floats = onnxpb.AttributeProto_FLOATS.Enum(), v
	case []int64:
		a.Type, a.Ints = onnxpb.AttributeProto_INTS.Enum(), v
	case []string:
		a.Type = onnxpb.AttributeProto_STRINGS.Enum()
		for _, s := range v {
			a.Strings = append(a.Strings, []byte(s))
		}
	default:
		panic(name)
	}
	return a
}

// mlModel is one ai.onnx.ml node over X [N, 3] whose output y, [N, width],
// is the graph's output (a classifier's label output left dangling).
func mlModel(t *testing.T, op string, outs []string, width int, attrs ...*onnxpb.AttributeProto) []byte {
	t.Helper()
	model, err := onnx.NewGraph("ml").Input("X", "N", 3).Output("y", "N", width).Model("ml")
	if err != nil {
		t.Fatal(err)
	}
	var m onnxpb.ModelProto
	if err := proto.Unmarshal(model, &m); err != nil {
		t.Fatal(err)
	}
	m.OpsetImport = append(m.OpsetImport, &onnxpb.OperatorSetIdProto{Domain: proto.String("ai.onnx.ml"), Version: proto.Int64(3)})
	m.Graph.Node = []*onnxpb.NodeProto{{OpType: proto.String(op), Domain: proto.String("ai.onnx.ml"), Input: []string{"X"}, Output: outs, Attribute: attrs}}
	out, err := proto.Marshal(&m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// stump is two trees over 3 features: tree 0 splits feature 0 at 0.1
// (mode given), tree 1 splits feature 2 at -0.5 with BRANCH_LT.
func stump(mode string) []*onnxpb.AttributeProto {
	return []*onnxpb.AttributeProto{
		attr("nodes_treeids", []int64{0, 0, 0, 1, 1, 1}),
		attr("nodes_nodeids", []int64{0, 1, 2, 0, 1, 2}),
		attr("nodes_featureids", []int64{0, 0, 0, 2, 0, 0}),
		attr("nodes_modes", []string{mode, "LEAF", "LEAF", "BRANCH_LT", "LEAF", "LEAF"}),
		attr("nodes_values", []float32{0.1, 0, 0, -0.5, 0, 0}),
		attr("nodes_truenodeids", []int64{1, 0, 0, 1, 0, 0}),
		attr("nodes_falsenodeids", []int64{2, 0, 0, 2, 0, 0}),
	}
}

func leaves(prefix string, ids []int64, weights []float32) []*onnxpb.AttributeProto {
	trees, nodes := []int64{}, []int64{}
	for i := range ids {
		// Leaves 1, 2 of tree 0, then of tree 1, cycling per class id.
		leaf := i / (len(ids) / 4)
		trees = append(trees, int64(leaf/2))
		nodes = append(nodes, int64(1+leaf%2))
	}
	return []*onnxpb.AttributeProto{attr(prefix+"treeids", trees), attr(prefix+"nodeids", nodes),
		attr(prefix+"ids", ids), attr(prefix+"weights", weights)}
}

// TestMLOpsAgreeWithONNXRuntime: the ai.onnx.ml forms exporters do not
// all write in the scikit-learn suite (one score for two classes, other
// post transforms, aggregations and norms) give what ONNX Runtime gives.
func TestMLOpsAgreeWithONNXRuntime(t *testing.T) {
	engines(t)
	labels := attr("classlabels_ints", []int64{3, 7})
	labels3 := attr("classlabels_ints", []int64{0, 1, 2})
	treeLabels := attr("classlabels_int64s", []int64{3, 7})
	treeLabels3 := attr("classlabels_int64s", []int64{0, 1, 2})
	var tests = []struct {
		name  string
		model []byte
	}{
		{"LinearClassifier one score NONE", mlModel(t, "LinearClassifier", []string{"l", "y"}, 2,
			attr("coefficients", []float32{0.5, -1, 2}), attr("intercepts", []float32{0.25}), labels)},
		{"LinearClassifier one score LOGISTIC", mlModel(t, "LinearClassifier", []string{"l", "y"}, 2,
			attr("coefficients", []float32{0.5, -1, 2}), attr("intercepts", []float32{0.25}), labels, attr("post_transform", "LOGISTIC"))},
		{"LinearClassifier SOFTMAX_ZERO", mlModel(t, "LinearClassifier", []string{"l", "y"}, 3,
			attr("coefficients", []float32{0.5, -1, 2, 0, 0, 0, 1, 1, -1}), attr("intercepts", []float32{0, 0, 0.5}), labels3, attr("post_transform", "SOFTMAX_ZERO"))},
		{"LinearRegressor two targets", mlModel(t, "LinearRegressor", []string{"y"}, 2,
			attr("coefficients", []float32{0.5, -1, 2, 1, 1, 1}), attr("intercepts", []float32{1, -1}), attr("targets", int64(2)))},
		{"Scaler", mlModel(t, "Scaler", []string{"y"}, 3, attr("offset", []float32{0.5, -1, 2}), attr("scale", []float32{2, 3, 4}))},
		{"Scaler one value", mlModel(t, "Scaler", []string{"y"}, 3, attr("offset", []float32{0.5}), attr("scale", []float32{2}))},
		{"Normalizer MAX", mlModel(t, "Normalizer", []string{"y"}, 3, attr("norm", "MAX"))},
		{"Normalizer L2", mlModel(t, "Normalizer", []string{"y"}, 3, attr("norm", "L2"))},
		{"TreeEnsembleClassifier one column, positive", mlModel(t, "TreeEnsembleClassifier", []string{"l", "y"}, 2,
			append(append(stump("BRANCH_LEQ"), leaves("class_", []int64{0, 0, 0, 0}, []float32{0.1, 0.3, 0.2, 0.25})...), treeLabels)...)},
		{"TreeEnsembleClassifier one column, LOGISTIC", mlModel(t, "TreeEnsembleClassifier", []string{"l", "y"}, 2,
			append(append(stump("BRANCH_GT"), leaves("class_", []int64{0, 0, 0, 0}, []float32{-0.4, 0.3, 0.2, -0.25})...),
				treeLabels, attr("post_transform", "LOGISTIC"), attr("base_values", []float32{0.1}))...)},
		{"TreeEnsembleClassifier three classes SOFTMAX", mlModel(t, "TreeEnsembleClassifier", []string{"l", "y"}, 3,
			append(append(stump("BRANCH_GTE"), leaves("class_", []int64{0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2},
				[]float32{0.1, 0.3, 0.2, 0.25, -1, 0.5, 0, 0, 1, 2, -2, 0.3})...),
				treeLabels3, attr("post_transform", "SOFTMAX"), attr("base_values", []float32{0.1, 0.2, 0.3}))...)},
		{"TreeEnsembleRegressor AVERAGE", mlModel(t, "TreeEnsembleRegressor", []string{"y"}, 1,
			append(append(stump("BRANCH_EQ"), leaves("target_", []int64{0, 0, 0, 0}, []float32{1, 2, 3, 4})...),
				attr("n_targets", int64(1)), attr("aggregate_function", "AVERAGE"), attr("base_values", []float32{0.5}))...)},
		{"TreeEnsembleRegressor MAX, two targets", mlModel(t, "TreeEnsembleRegressor", []string{"y"}, 2,
			append(append(stump("BRANCH_NEQ"), leaves("target_", []int64{0, 1, 0, 1, 0, 1, 0, 1}, []float32{1, 2, 3, 4, -1, 6, 7, -8})...),
				attr("n_targets", int64(2)), attr("aggregate_function", "MAX"))...)},
		{"TreeEnsembleRegressor MIN", mlModel(t, "TreeEnsembleRegressor", []string{"y"}, 1,
			append(append(stump("BRANCH_LEQ"), leaves("target_", []int64{0, 0, 0, 0}, []float32{1, 2, 3, 4})...),
				attr("n_targets", int64(1)), attr("aggregate_function", "MIN"))...)},
	}
	rng := rand.New(rand.NewPCG(8, 8))
	x := []float32{0.1, 0, -0.5, 0.1, 3, 1} // on the thresholds: ties decide
	for len(x) < 3*12 {
		x = append(x, float32(rng.IntN(9)-4)/4)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ref, err := ort.NewSession(tc.model)
			if err != nil {
				t.Fatal(err)
			}
			defer ref.Close()
			want, err := ref.Run(x, 3)
			if err != nil {
				t.Fatal(err)
			}
			eng, err := goengine.Load(tc.model)
			if err != nil {
				t.Fatal(err)
			}
			got, err := eng.Run(x, 3)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(want) {
				t.Fatalf("%d values, onnxruntime %d", len(got), len(want))
			}
			for i := range want {
				if d := math.Abs(float64(got[i] - want[i])); !(d <= tolerance) {
					t.Fatalf("value %d (row %d): go %v, onnxruntime %v\ngo   %v\nort  %v", i, i/(len(want)/12), got[i], want[i], got, want)
				}
			}
		})
	}
}
