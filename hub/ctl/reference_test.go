package ctl

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite docs/outpostctl.md")

// TestReferenceIsCurrent: docs/outpostctl.md is what the command tree
// generates, and names every command.
func TestReferenceIsCurrent(t *testing.T) {
	var b bytes.Buffer
	if err := Reference(&b); err != nil {
		t.Fatal(err)
	}
	for _, c := range commands {
		if !strings.Contains(b.String(), "## outpostctl "+c.path+"\n") {
			t.Errorf("reference lacks %s", c.path)
		}
	}
	path := filepath.Join("..", "..", "docs", "outpostctl.md")
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	have, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test ./hub/ctl -run Reference -update writes it)", err)
	}
	if !bytes.Equal(have, b.Bytes()) {
		t.Fatalf("%s is stale: go test ./hub/ctl -run Reference -update", path)
	}
}
