package goengine

import (
	"fmt"
	"math"
)

// mlOp holds what an ai.onnx.ml node (or a Constant) reads per run,
// prepared once at load.
type mlOp struct {
	value tensor // Constant
	// LinearClassifier, LinearRegressor: coef is [targets][features].
	coef, intercepts []float32
	targets          int
	// Classifiers' labels: ints (as floats) or strings.
	labels    []float32
	labelStrs []string
	post      string
	// Scaler.
	offset, scale []float32
	// Normalizer.
	norm string
	// Tree ensembles.
	roots     []int32
	tnodes    []tnode
	weights   []leafWeight
	base      []float32
	agg       string
	oneColumn bool // a binary classifier whose trees score class 1 only
	positive  bool // every leaf weight ≥ 0
	row       []float64
	strs      []string // string labels' buffer
}

// tnode is one tree node; a leaf's weights are weights[w0:w1].
type tnode struct {
	feature     int32
	value       float32
	mode        byte // one of "<LGgEN" for BRANCH_LEQ, LT, GTE, GT, EQ, NEQ; 0 for a leaf
	missingTrue bool
	t, f        int32
	w0, w1      int32
}

type leafWeight struct {
	id int32
	w  float32
}

func (n *node) floats(name string) []float32 {
	if a, ok := n.attrs[name+"_as_tensor"]; ok {
		t, err := fromProto(a.GetT())
		if err == nil {
			return t.data
		}
	}
	return n.attrs[name].GetFloats()
}

func (n *node) ints(name string) []int64 { return n.attrs[name].GetInts() }

func (n *node) str(name, def string) string {
	if a, ok := n.attrs[name]; ok {
		return string(a.GetS())
	}
	return def
}

// prepareML reads an ai.onnx.ml node's attributes.
func (n *node) prepareML() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: op %s (ai.onnx.ml): %s", ErrUnsupported, n.op, fmt.Sprintf(format, args...))
	}
	ml := &n.ml
	ml.post = n.str("post_transform", "NONE")
	switch ml.post {
	case "NONE", "SOFTMAX", "LOGISTIC", "SOFTMAX_ZERO":
	default:
		return bad("post_transform %s", ml.post)
	}
	if a, ok := n.attrs["classlabels_strings"]; ok {
		for _, s := range a.GetStrings() {
			ml.labelStrs = append(ml.labelStrs, string(s))
		}
	}
	for _, name := range []string{"classlabels_ints", "classlabels_int64s"} {
		for _, v := range n.ints(name) {
			ml.labels = append(ml.labels, float32(v))
		}
	}
	classes := max(len(ml.labels), len(ml.labelStrs))
	switch n.op {
	case "LinearClassifier", "LinearRegressor":
		ml.coef, ml.intercepts = n.floats("coefficients"), n.floats("intercepts")
		ml.targets = classes
		if n.op == "LinearRegressor" {
			ml.targets = 1
			if a, ok := n.attrs["targets"]; ok {
				ml.targets = int(a.GetI())
			}
			if ml.post != "NONE" {
				return bad("post_transform %s", ml.post)
			}
		}
		if classes == 2 && len(ml.intercepts) == 1 {
			ml.targets = 1 // one score for two classes: ORT's binary case
		}
		if ml.targets < 1 || len(ml.coef)%ml.targets != 0 || len(ml.intercepts) != 0 && len(ml.intercepts) != ml.targets {
			return bad("%d coefficients and %d intercepts for %d targets", len(ml.coef), len(ml.intercepts), ml.targets)
		}
	case "Scaler":
		ml.offset, ml.scale = n.floats("offset"), n.floats("scale")
	case "Normalizer":
		ml.norm = n.str("norm", "MAX")
		if ml.norm != "MAX" && ml.norm != "L1" && ml.norm != "L2" {
			return bad("norm %s", ml.norm)
		}
	case "TreeEnsembleClassifier", "TreeEnsembleRegressor":
		return n.prepareTrees(classes)
	}
	return nil
}

// prepareTrees builds the ensemble's trees from the flat node lists.
func (n *node) prepareTrees(classes int) error {
	ml := &n.ml
	prefix := "class_"
	ml.targets = classes
	if n.op == "TreeEnsembleRegressor" {
		prefix = "target_"
		ml.targets = 1
		if a, ok := n.attrs["n_targets"]; ok {
			ml.targets = int(a.GetI())
		}
		ml.agg = n.str("aggregate_function", "SUM")
		if ml.post != "NONE" {
			return fmt.Errorf("%w: op %s (ai.onnx.ml): post_transform %s", ErrUnsupported, n.op, ml.post)
		}
	}
	treeIDs, nodeIDs, feats := n.ints("nodes_treeids"), n.ints("nodes_nodeids"), n.ints("nodes_featureids")
	modes, values := n.attrs["nodes_modes"].GetStrings(), n.floats("nodes_values")
	trues, falses, missing := n.ints("nodes_truenodeids"), n.ints("nodes_falsenodeids"), n.ints("nodes_missing_value_tracks_true")
	count := len(nodeIDs)
	if len(treeIDs) != count || len(feats) != count || len(modes) != count || len(trues) != count || len(falses) != count ||
		(len(values) != count && len(values) != 0) || (len(missing) != 0 && len(missing) != count) {
		return fmt.Errorf("%w: %s: node attributes of different lengths", ErrModel, n.op)
	}
	type key struct{ tree, node int64 }
	index := map[key]int32{}
	for i := range count {
		index[key{treeIDs[i], nodeIDs[i]}] = int32(i)
	}
	codes := map[string]byte{"BRANCH_LEQ": '<', "BRANCH_LT": 'L', "BRANCH_GTE": 'g', "BRANCH_GT": 'G', "BRANCH_EQ": 'E', "BRANCH_NEQ": 'N', "LEAF": 0}
	ml.tnodes = make([]tnode, count)
	child := map[int32]bool{}
	for i := range count {
		code, ok := codes[string(modes[i])]
		if !ok {
			return fmt.Errorf("%w: op %s (ai.onnx.ml): node mode %s", ErrUnsupported, n.op, modes[i])
		}
		if feats[i] < 0 || feats[i] > math.MaxInt32 {
			return fmt.Errorf("%w: %s: feature %d", ErrModel, n.op, feats[i])
		}
		t := tnode{feature: int32(feats[i]), mode: code}
		if len(values) > 0 {
			t.value = values[i]
		}
		if len(missing) > 0 {
			t.missingTrue = missing[i] != 0
		}
		if code != 0 {
			ti, ok1 := index[key{treeIDs[i], trues[i]}]
			fi, ok2 := index[key{treeIDs[i], falses[i]}]
			if !ok1 || !ok2 {
				return fmt.Errorf("%w: %s: tree %d node %d has a missing child", ErrModel, n.op, treeIDs[i], nodeIDs[i])
			}
			t.t, t.f = ti, fi
			child[ti], child[fi] = true, true
		}
		ml.tnodes[i] = t
	}
	seen := map[int64]bool{}
	for i := range count {
		if !child[int32(i)] && !seen[treeIDs[i]] {
			seen[treeIDs[i]] = true
			ml.roots = append(ml.roots, int32(i))
		}
	}
	// Leaf weights, grouped per leaf in the order given.
	wTrees, wNodes, wIDs, ws := n.ints(prefix+"treeids"), n.ints(prefix+"nodeids"), n.ints(prefix+"ids"), n.floats(prefix+"weights")
	if len(wNodes) != len(wTrees) || len(wIDs) != len(wTrees) || len(ws) != len(wTrees) {
		return fmt.Errorf("%w: %s: weight attributes of different lengths", ErrModel, n.op)
	}
	perLeaf := map[int32][]leafWeight{}
	var order []int32
	ml.positive = true
	for j := range wTrees {
		leaf, ok := index[key{wTrees[j], wNodes[j]}]
		if !ok || int(wIDs[j]) >= max(ml.targets, 1) || wIDs[j] < 0 {
			return fmt.Errorf("%w: %s: weight %d names no leaf or target", ErrModel, n.op, j)
		}
		if _, ok := perLeaf[leaf]; !ok {
			order = append(order, leaf)
		}
		perLeaf[leaf] = append(perLeaf[leaf], leafWeight{id: int32(wIDs[j]), w: ws[j]})
		ml.positive = ml.positive && ws[j] >= 0
	}
	ml.oneColumn = n.op == "TreeEnsembleClassifier" && classes == 2
	for _, leaf := range order {
		t := &ml.tnodes[leaf]
		t.w0 = int32(len(ml.weights))
		for _, w := range perLeaf[leaf] {
			if w.id == 1 {
				ml.oneColumn = false
			}
		}
		ml.weights = append(ml.weights, perLeaf[leaf]...)
		t.w1 = int32(len(ml.weights))
	}
	ml.base = n.floats("base_values")
	if len(ml.roots) == 0 {
		return fmt.Errorf("%w: %s has no trees", ErrModel, n.op)
	}
	return ml.checkTrees()
}

// checkTrees refuses a node reached twice from the roots: a cycle would
// never end a walk, a shared node is not a tree.
func (ml *mlOp) checkTrees() error {
	seen := make([]bool, len(ml.tnodes))
	stack := append([]int32(nil), ml.roots...)
	for len(stack) > 0 {
		i := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[i] {
			return fmt.Errorf("%w: tree node %d is reached twice", ErrModel, i)
		}
		seen[i] = true
		if t := ml.tnodes[i]; t.mode != 0 {
			stack = append(stack, t.t, t.f)
		}
	}
	return nil
}

// evalML runs an ai.onnx.ml node on a of [N, F] (or [F], one row).
func (e *Engine) evalML(n *node, a tensor, get func(string) (tensor, error)) ([]tensor, error) {
	ml := &n.ml
	if n.op == "ArrayFeatureExtractor" {
		idx, err := get(n.in[1])
		if err != nil {
			return nil, err
		}
		return n.arrayFeatures(a, idx)
	}
	rows, cols := a.rows(), a.cols()
	switch n.op {
	case "Scaler":
		for _, v := range [][]float32{ml.offset, ml.scale} {
			if len(v) > 1 && len(v) != cols {
				return nil, fmt.Errorf("%w: Scaler of %d values for %d features", ErrInput, len(v), cols)
			}
		}
		out := tensor{shape: a.shape, data: n.buffer(0, len(a.data))}
		for i, v := range a.data {
			c := i % cols
			out.data[i] = (v - pick(ml.offset, c, 0)) * pick(ml.scale, c, 1)
		}
		return n.result(out), nil
	case "Normalizer":
		out := tensor{shape: a.shape, data: n.buffer(0, len(a.data))}
		for r := 0; r < rows; r++ {
			row, dst := a.data[r*cols:(r+1)*cols], out.data[r*cols:(r+1)*cols]
			var d float64
			switch ml.norm {
			case "MAX":
				d = math.Inf(-1)
				for _, v := range row {
					d = max(d, float64(v))
				}
			case "L1":
				for _, v := range row {
					d += math.Abs(float64(v))
				}
			case "L2":
				for _, v := range row {
					d += float64(v) * float64(v)
				}
				d = math.Sqrt(d)
			}
			for j, v := range row {
				if d != 0 {
					dst[j] = float32(float64(v) / d)
				} else {
					dst[j] = v
				}
			}
		}
		return n.result(out), nil
	case "LinearRegressor", "LinearClassifier":
		if len(ml.coef) != ml.targets*cols {
			return nil, fmt.Errorf("%w: %s of %d coefficients for %d features", ErrInput, n.op, len(ml.coef), cols)
		}
		scores := tensor{shape: n.dims(1, rows, ml.targets), data: n.buffer(1, rows*ml.targets)}
		for r := 0; r < rows; r++ {
			row := a.data[r*cols : (r+1)*cols]
			for t := 0; t < ml.targets; t++ {
				w := ml.coef[t*cols : (t+1)*cols]
				w = w[:len(row)]
				s := pick(ml.intercepts, t, 0)
				for k, v := range row {
					s += v * w[k]
				}
				scores.data[r*ml.targets+t] = s
			}
		}
		if n.op == "LinearRegressor" {
			return n.result(scores), nil
		}
		return n.classify(scores, oneLinear)
	case "TreeEnsembleClassifier", "TreeEnsembleRegressor":
		return n.trees(a)
	}
	return nil, fmt.Errorf("%w: op %s (ai.onnx.ml)", ErrUnsupported, n.op)
}

// pick is v[i], v[0] for a single value, or def for none.
func pick(v []float32, i int, def float32) float32 {
	switch {
	case len(v) == 1:
		return v[0]
	case i < len(v):
		return v[i]
	}
	return def
}

// How one score s for two classes becomes two columns, as ONNX Runtime
// writes them (its post transform ignored but for mixed tree weights):
const (
	oneLinear   = iota // LinearClassifier: [1-s, s], class 1 when s > 0
	onePositive        // trees with weights ≥ 0: [1-s, s], class 1 when s > 0.5
	oneMixed           // other trees: [-s, s], or [σ(-s), σ(s)] with LOGISTIC; class 1 when s > 0
)

// classify turns raw scores [N, k] into a classifier's label and scores
// outputs, as ONNX Runtime does: one score for two classes becomes two
// columns (one says how); more get the post transform.
func (n *node) classify(raw tensor, one int) ([]tensor, error) {
	ml := &n.ml
	rows, k := raw.shape[0], raw.shape[1]
	classes := max(len(ml.labels), len(ml.labelStrs), k)
	labels := tensor{shape: n.dims(0, rows), data: n.buffer(0, rows), kind: 'l'}
	if len(ml.labelStrs) > 0 {
		if cap(ml.strs) < rows {
			ml.strs = make([]string, rows)
		}
		labels.strs = ml.strs[:rows]
	}
	scores := raw
	if k == 1 && classes == 2 {
		scores = tensor{shape: n.dims(2, rows, 2), data: n.buffer(2, 2*rows)}
	}
	for r := 0; r < rows; r++ {
		best := 0
		if k == 1 && classes == 2 {
			s := raw.data[r]
			lo, hi := -s, s
			threshold := float32(0)
			switch {
			case one == oneLinear:
				lo, hi = 1-s, s
			case one == onePositive:
				lo, hi, threshold = 1-s, s, 0.5
			case ml.post == "LOGISTIC":
				lo, hi = sigmoid(-s), sigmoid(s)
			}
			scores.data[2*r], scores.data[2*r+1] = lo, hi
			if s > threshold {
				best = 1
			}
		} else {
			row := raw.data[r*k : (r+1)*k]
			for j, v := range row {
				if v > row[best] {
					best = j
				}
			}
			postTransform(ml.post, row)
		}
		if labels.strs != nil && best < len(ml.labelStrs) {
			labels.strs[r] = ml.labelStrs[best]
		} else {
			labels.data[r] = float32(best)
			if best < len(ml.labels) {
				labels.data[r] = ml.labels[best]
			}
		}
	}
	return n.result(labels, scores), nil
}

// postTransform applies a classifier's post_transform to one row.
func postTransform(post string, row []float32) {
	switch post {
	case "LOGISTIC":
		for j, v := range row {
			row[j] = sigmoid(v)
		}
	case "SOFTMAX", "SOFTMAX_ZERO":
		mx := float32(math.Inf(-1))
		for _, v := range row {
			if v != 0 || post == "SOFTMAX" {
				mx = max(mx, v)
			}
		}
		var sum float64
		for j, v := range row {
			if v == 0 && post == "SOFTMAX_ZERO" {
				continue
			}
			ex := math.Exp(float64(v - mx))
			row[j] = float32(ex)
			sum += ex
		}
		for j := range row {
			row[j] = float32(float64(row[j]) / sum)
		}
	}
}

// trees evaluates the ensemble on every row.
func (n *node) trees(a tensor) ([]tensor, error) {
	ml := &n.ml
	rows, cols := a.rows(), a.cols()
	k := max(ml.targets, 1)
	if ml.oneColumn {
		k = 1
	}
	if cap(ml.row) < k {
		ml.row = make([]float64, k)
	}
	acc := ml.row[:k]
	scores := tensor{shape: n.dims(1, rows, k), data: n.buffer(1, rows*k)}
	for r := 0; r < rows; r++ {
		x := a.data[r*cols : (r+1)*cols]
		clear(acc)
		if ml.agg == "MIN" || ml.agg == "MAX" {
			for j := range acc {
				acc[j] = math.NaN()
			}
		}
		for _, root := range ml.roots {
			i := root
			for {
				t := &ml.tnodes[i]
				if t.mode == 0 {
					break
				}
				if int(t.feature) >= cols {
					return nil, fmt.Errorf("%w: tree feature %d of %d", ErrInput, t.feature, cols)
				}
				if branch(t, x[t.feature]) {
					i = t.t
				} else {
					i = t.f
				}
			}
			t := &ml.tnodes[i]
			for _, w := range ml.weights[t.w0:t.w1] {
				v := float64(w.w)
				switch {
				case ml.agg == "MIN" && !(acc[w.id] <= v):
					acc[w.id] = v
				case ml.agg == "MAX" && !(acc[w.id] >= v):
					acc[w.id] = v
				case ml.agg != "MIN" && ml.agg != "MAX":
					acc[w.id] += v
				}
			}
		}
		for j := range acc {
			v := acc[j]
			if ml.agg == "AVERAGE" {
				v /= float64(len(ml.roots))
			}
			if math.IsNaN(v) {
				v = 0
			}
			scores.data[r*k+j] = float32(v + float64(pick(ml.base, j, 0)))
		}
	}
	if n.op == "TreeEnsembleRegressor" {
		return n.result(scores), nil
	}
	if ml.positive {
		return n.classify(scores, onePositive)
	}
	return n.classify(scores, oneMixed)
}

// branch reports whether x takes a node's true branch.
func branch(t *tnode, x float32) bool {
	if x != x { // NaN: the missing-value branch
		return t.missingTrue
	}
	switch t.mode {
	case '<':
		return x <= t.value
	case 'L':
		return x < t.value
	case 'g':
		return x >= t.value
	case 'G':
		return x > t.value
	case 'E':
		return x == t.value
	}
	return x != t.value
}

// arrayFeatures selects columns idx of a's last axis.
func (n *node) arrayFeatures(a, idx tensor) ([]tensor, error) {
	cols := a.cols()
	rows := a.rows()
	shape := n.dims(0, 1, len(idx.data))
	if len(a.shape) > 1 {
		shape = append(n.dims(0, a.shape[:len(a.shape)-1]...), len(idx.data))
		n.shapes[0] = shape
	}
	out := tensor{shape: shape, kind: a.kind}
	if a.strs != nil {
		out.strs = make([]string, 0, rows*len(idx.data))
	} else {
		out.data = n.buffer(0, rows*len(idx.data))[:0]
	}
	for r := 0; r < rows; r++ {
		for _, v := range idx.data {
			c := int(v)
			if c < 0 || c >= cols {
				return nil, fmt.Errorf("%w: ArrayFeatureExtractor index %d of %d", ErrInput, c, cols)
			}
			if a.strs != nil {
				out.strs = append(out.strs, a.strs[r*cols+c])
			} else {
				out.data = append(out.data, a.data[r*cols+c])
			}
		}
	}
	return n.result(out), nil
}
