package modelstore_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-edge/outpost/hub/modelstore"
	"github.com/outpost-edge/outpost/models/goengine"
	"github.com/outpost-edge/outpost/models/manifest"
	"github.com/outpost-edge/outpost/models/onnx"
	"github.com/outpost-edge/outpost/test/natstest"
)

func open(t *testing.T) (*modelstore.Store, jetstream.JetStream) {
	t.Helper()
	js := natstest.JetStream(t)
	s, err := modelstore.Open(context.Background(), js, 1)
	if err != nil {
		t.Fatal(err)
	}
	return s, js
}

// pkg builds a logistic package (2 features) of the given version.
func pkg(t *testing.T, version, parent int64, bias float32) (manifestJSON, model []byte) {
	t.Helper()
	model, err := onnx.Logistic([][]float32{{1, -1}}, []float32{bias})
	if err != nil {
		t.Fatal(err)
	}
	eng, _ := goengine.Load(model)
	out, _ := eng.Run([]float32{0.5, 0.25}, 2)
	m := manifest.Manifest{Name: "overheat", Version: version, Parent: parent, Task: "anomaly", SHA256: manifest.Digest(model),
		Features: []manifest.Feature{{Field: "t", Agg: "mean", Std: 1}, {Field: "t", Agg: "max", Std: 1}},
		Outputs:  manifest.Outputs{Labels: []string{"normal", "overheat"}, Threshold: 0.5},
		Metrics:  map[string]float64{"auc": 0.9 + float64(version)/100},
		Golden:   []manifest.Golden{{Input: []float32{0.5, 0.25}, Output: out, Tolerance: 1e-5}}}
	data, _ := json.Marshal(m)
	return data, model
}

func TestPushListPromoteArchive(t *testing.T) {
	s, js := open(t)
	ctx := context.Background()
	for _, v := range []struct{ version, parent int64 }{{1, 0}, {2, 1}, {3, 2}} {
		mj, model := pkg(t, v.version, v.parent, float32(v.version))
		got, err := s.Push(ctx, mj, model)
		if err != nil {
			t.Fatal(err)
		}
		if got.Stage != modelstore.Candidate || got.Parent != v.parent || got.Parameters != 3 {
			t.Errorf("pushed %+v", got)
		}
	}
	if _, err := s.Move(ctx, "overheat", 1, modelstore.Production, "first"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Move(ctx, "overheat", 2, modelstore.Canary, "try"); err != nil {
		t.Fatal(err)
	}
	// v2 graduates: v1 is archived, one production version per model.
	if _, err := s.Move(ctx, "overheat", 2, modelstore.Production, "canary healthy"); err != nil {
		t.Fatal(err)
	}
	vs, err := s.Versions(ctx, "overheat")
	if err != nil {
		t.Fatal(err)
	}
	stages := []string{vs[0].Stage, vs[1].Stage, vs[2].Stage}
	if stages[0] != modelstore.Archived || stages[1] != modelstore.Production || stages[2] != modelstore.Candidate {
		t.Errorf("stages %v, want archived, production, candidate", stages)
	}
	if h := vs[0].History; len(h) != 3 || h[2].Why != "replaced by v2" {
		t.Errorf("v1 history %+v", h)
	}
	list, err := s.List(ctx)
	if err != nil || len(list) != 1 || list[0].Latest != 3 || list[0].Production != 2 || list[0].Versions != 3 {
		t.Errorf("list %+v, %v", list, err)
	}
	mj, model, err := s.Package(ctx, "overheat", 2)
	if err != nil {
		t.Fatal(err)
	}
	if m, err := manifest.Parse(mj); err != nil || m.Version != 2 || manifest.Digest(model) != m.SHA256 {
		t.Errorf("package v2: %v", err)
	}

	// The registry lives in JetStream: a second store on the same buckets
	// (another hub, or this one restarted) sees the same state.
	again, err := modelstore.Open(ctx, js, 1)
	if err != nil {
		t.Fatal(err)
	}
	if vs, err := again.Versions(ctx, "overheat"); err != nil || vs[1].Stage != modelstore.Production {
		t.Errorf("after reopen: %+v, %v", vs, err)
	}
}

func TestPushRefusals(t *testing.T) {
	s, _ := open(t)
	ctx := context.Background()
	mj, model := pkg(t, 2, 0, 1)
	if _, err := s.Push(ctx, mj, model); err != nil {
		t.Fatal(err)
	}
	old, oldModel := pkg(t, 2, 0, 1)
	orphan, orphanModel := pkg(t, 5, 4, 1)
	bad, badModel := pkg(t, 6, 0, 1)
	var m manifest.Manifest
	json.Unmarshal(bad, &m)
	m.Golden[0].Output[0] += 0.1
	bad, _ = json.Marshal(m)
	cases := map[string]struct {
		manifest, model []byte
		want            error
	}{
		"same version":   {old, oldModel, modelstore.ErrConflict},
		"unknown parent": {orphan, orphanModel, modelstore.ErrConflict},
		"tampered model": {mj, append(append([]byte{}, model...), 0), modelstore.ErrInvalid},
		"golden":         {bad, badModel, modelstore.ErrInvalid},
		"not json":       {[]byte("{"), model, modelstore.ErrInvalid},
	}
	for name, c := range cases {
		if _, err := s.Push(ctx, c.manifest, c.model); !errors.Is(err, c.want) {
			t.Errorf("%s: err %v, want %v", name, err, c.want)
		}
	}
	if _, err := s.Move(ctx, "overheat", 9, modelstore.Production, ""); !errors.Is(err, modelstore.ErrNotFound) {
		t.Errorf("unknown version: %v", err)
	}
	if _, err := s.Move(ctx, "overheat", 2, "live", ""); !errors.Is(err, modelstore.ErrConflict) {
		t.Errorf("unknown stage: %v", err)
	}
}

// TestPushV2Package: a 1-D CNN with a sequence input (rank-3 graph input)
// is checked on its golden vectors through feeds, and a wrong golden
// output is still refused (the hub ran each row as a [N, F] matrix
// before, and refused every such package).
func TestPushV2Package(t *testing.T) {
	s, _ := open(t)
	model, err := onnx.CNN1D("wave", 2, 50, 4, 3, 1)
	if err != nil {
		t.Fatal(err)
	}
	in := make([]float32, 100)
	for i := range in {
		in[i] = float32(i%7) / 7
	}
	eng, err := goengine.Load(model)
	if err != nil {
		t.Fatal(err)
	}
	out, err := eng.RunFeeds([]onnx.Feed{{Name: "wave", Shape: []int64{1, 2, 50}, Data: in}})
	if err != nil {
		t.Fatal(err)
	}
	m := manifest.Manifest{Name: "pump-cnn", Version: 1, Task: "anomaly", SHA256: manifest.Digest(model),
		Inputs: []manifest.Input{{Name: "wave", Kind: manifest.Sequence, Sequence: &manifest.SequenceSpec{Fields: []string{"ax", "ay"}, Steps: 50, Layout: "NCT"}}},
		Golden: []manifest.Golden{{Input: in, Output: out, Tolerance: 1e-5}}}
	mj, _ := json.Marshal(m)
	got, err := s.Push(context.Background(), mj, model)
	if err != nil {
		t.Fatalf("push: %v", err)
	}
	if got.Version != 1 {
		t.Fatalf("pushed %+v", got)
	}
	m.Version, m.Golden[0].Output[0] = 2, out[0]+0.1
	mj, _ = json.Marshal(m)
	if _, err := s.Push(context.Background(), mj, model); !errors.Is(err, modelstore.ErrInvalid) {
		t.Fatalf("a wrong golden output: %v, want ErrInvalid", err)
	}
}
