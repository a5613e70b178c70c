package pipeline

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/outpost-edge/outpost/hub/ctl"
	"github.com/outpost-edge/outpost/models/goengine"
	"github.com/outpost-edge/outpost/models/manifest"
	"github.com/outpost-edge/outpost/models/onnx"
	"github.com/outpost-edge/outpost/test/kafkatest"
)

func outpostctl(t *testing.T, hubURL string, args ...string) (int, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := ctl.Main(context.Background(), append([]string{"--hub", hubURL}, args...), &out, &errb)
	return code, out.String() + errb.String()
}

// writeLogistic writes a logistic package of version v (parent v-1).
func writeLogistic(t *testing.T, version int64) string {
	t.Helper()
	model, err := onnx.Logistic([][]float32{{0.5, -0.25}}, []float32{float32(version) / 10})
	if err != nil {
		t.Fatal(err)
	}
	eng, _ := goengine.Load(model)
	out, _ := eng.Run([]float32{1, 1}, 2)
	m := &manifest.Manifest{Name: "bearing", Version: version, Parent: version - 1, Task: "anomaly",
		Features: []manifest.Feature{{Field: "vib", Agg: "rms", Std: 1}, {Field: "vib", Agg: "max", Std: 1}},
		Outputs:  manifest.Outputs{Threshold: 0.5}, Metrics: map[string]float64{"f1": 0.8 + float64(version)/100},
		Golden: []manifest.Golden{{Input: []float32{1, 1}, Output: out, Tolerance: 1e-5}}}
	dir := t.TempDir()
	if err := manifest.Write(dir, m, model); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestModelRegistryThroughOutpostctl pushes, lists, shows, promotes and
// archives model versions through outpostctl against a running hub, and
// finds the registry intact after the hub restarts.
func TestModelRegistryThroughOutpostctl(t *testing.T) {
	cfg := hubConfig(t, kafkatest.Brokers(t), t.TempDir())
	h := startHub(t, cfg)
	url := "http://" + h.HTTPAddr()
	for v := int64(1); v <= 3; v++ {
		if code, out := outpostctl(t, url, "model", "push", writeLogistic(t, v)); code != 0 || !strings.Contains(out, "as candidate") {
			t.Fatalf("push v%d: exit %d: %s", v, code, out)
		}
	}
	// v1 again: versions only rise.
	if code, out := outpostctl(t, url, "model", "push", writeLogistic(t, 1)); code != 1 || !strings.Contains(out, "409") {
		t.Fatalf("re-push v1: exit %d: %s", code, out)
	}
	// A package whose manifest does not fit its graph is refused.
	bad := writeLogistic(t, 4)
	raw, _ := os.ReadFile(filepath.Join(bad, manifest.ManifestFile))
	var m manifest.Manifest
	json.Unmarshal(raw, &m)
	m.Outputs.Labels = []string{"a", "b", "c"}
	raw, _ = json.Marshal(m)
	os.WriteFile(filepath.Join(bad, manifest.ManifestFile), raw, 0o644)
	if code, out := outpostctl(t, url, "model", "push", bad); code != 1 || !strings.Contains(out, "names 3 labels") {
		t.Fatalf("mismatched push: exit %d: %s", code, out)
	}
	for _, step := range [][]string{
		{"model", "promote", "bearing", "1"},
		{"model", "promote", "bearing", "2", "--stage", "canary", "--why", "wave 1"},
		{"model", "promote", "bearing", "v2", "--why", "canary healthy"},
		{"model", "archive", "bearing", "3"},
	} {
		if code, out := outpostctl(t, url, step...); code != 0 {
			t.Fatalf("%v: exit %d: %s", step, code, out)
		}
	}
	h.Close()
	h = startHub(t, cfg) // the registry is JetStream state: it survives
	defer h.Close()
	url = "http://" + h.HTTPAddr()
	code, out := outpostctl(t, url, "model", "list")
	if code != 0 || !strings.Contains(out, "bearing") || !strings.Contains(out, "v3      v2") {
		t.Fatalf("list: exit %d:\n%s", code, out)
	}
	code, out = outpostctl(t, url, "model", "show", "bearing")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 4 {
		t.Fatalf("show: exit %d:\n%s", code, out)
	}
	for i, want := range []string{"v1  -  archived", "v2  v1  production", "v3  v2  archived"} {
		if !strings.HasPrefix(strings.Join(strings.Fields(lines[i+1]), "  "), want) {
			t.Errorf("show line %d = %q, want prefix %q", i+1, lines[i+1], want)
		}
	}
	if !strings.Contains(lines[2], "canary healthy") || !strings.Contains(lines[1], "replaced by v2") {
		t.Errorf("history not shown:\n%s", out)
	}
}
