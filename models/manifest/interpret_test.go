package manifest

import (
	"reflect"
	"strings"
	"testing"
)

func TestInterpret(t *testing.T) {
	for _, c := range []struct {
		task   string
		o      Outputs
		scores []float32
		label  string
		pos    bool
	}{
		{"anomaly", Outputs{Threshold: 0.5}, []float32{0.7}, "", true},
		{"anomaly", Outputs{Threshold: 0.5, Labels: []string{"ok", "odd"}}, []float32{0.2}, "ok", false},
		{"classification", Outputs{Labels: []string{"a", "b", "c"}}, []float32{0.1, 0.2, 0.7}, "c", true},
		{"classification", Outputs{Labels: []string{"a", "b", "c"}}, []float32{0.8, 0.1, 0.1}, "a", false},
		{"classification", Outputs{}, []float32{0.1, 0.9}, "", true},
		// One score with two labels is read against the threshold.
		{"classification", Outputs{Labels: []string{"0", "1"}}, []float32{-0.4}, "0", false},
		{"classification", Outputs{Labels: []string{"0", "1"}}, []float32{1.5}, "1", true},
		{"regression", Outputs{}, []float32{12}, "", false},
		{"classification", Outputs{}, nil, "", false},
	} {
		label, pos := c.o.Interpret(c.task, c.scores)
		if label != c.label || pos != c.pos {
			t.Errorf("%s %+v %v: %q %v, want %q %v", c.task, c.o, c.scores, label, pos, c.label, c.pos)
		}
	}
}

// TestYAMLKeysMatchJSON keeps the manifest's sections readable from YAML
// (outpostctl model import's spec) under their JSON keys.
func TestYAMLKeysMatchJSON(t *testing.T) {
	seen := map[reflect.Type]bool{}
	var walk func(reflect.Type)
	walk = func(ty reflect.Type) {
		for ty.Kind() == reflect.Pointer || ty.Kind() == reflect.Slice || ty.Kind() == reflect.Map {
			ty = ty.Elem()
		}
		if ty.Kind() != reflect.Struct || seen[ty] {
			return
		}
		seen[ty] = true
		for i := range ty.NumField() {
			f := ty.Field(i)
			j, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			y, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if y == "" {
				y = strings.ToLower(f.Name)
			}
			if j != "" && j != "-" && j != y {
				t.Errorf("%s.%s: json key %q, yaml key %q: add `yaml:%q`", ty.Name(), f.Name, j, y, j)
			}
			walk(f.Type)
		}
	}
	walk(reflect.TypeOf(Manifest{}))
}
