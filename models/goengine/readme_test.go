package goengine

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestREADMEListsTheOps: the README's op list is the engine's.
func TestREADMEListsTheOps(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	quoted := regexp.MustCompile("`([A-Za-z]+)`")
	var listed []string
	for _, line := range strings.Split(string(raw), "\n") {
		for _, d := range []string{"ai.onnx", "ai.onnx.ml"} {
			if rest, ok := strings.CutPrefix(line, "- "+d+": "); ok {
				for _, m := range quoted.FindAllStringSubmatch(rest, -1) {
					listed = append(listed, d+"."+m[1])
				}
			}
		}
	}
	slices.Sort(listed)
	if !slices.Equal(listed, Ops()) {
		t.Fatalf("README lists %v\nthe engine runs %v", listed, Ops())
	}
}
