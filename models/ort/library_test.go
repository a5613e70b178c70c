//go:build cgo

package ort

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// A source tree's download cache is found from its working directory (as
// after `make deps`), and a miss lists only real places.
func TestFindLibraryInTheDownloadCache(t *testing.T) {
	t.Setenv(EnvLibrary, "")
	root := t.TempDir()
	t.Chdir(root)
	_, err := FindLibrary("")
	if err == nil || strings.Contains(err.Error(), "[ ") || strings.Contains(err.Error(), ", ,") || !strings.Contains(err.Error(), ".cache/onnxruntime/*/") {
		t.Fatalf("a miss: %v, want the places looked in, none empty", err)
	}
	arch := map[string]string{"amd64": "x64", "arm64": "arm64"}[runtime.GOARCH]
	lib := filepath.Join(root, ".cache", "onnxruntime", "1.24.3", "linux-"+arch, "libonnxruntime.so.1")
	if err := os.MkdirAll(filepath.Dir(lib), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(lib, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := FindLibrary("")
	if err != nil || got != lib {
		t.Fatalf("found %q (%v), want %s", got, err, lib)
	}
}
