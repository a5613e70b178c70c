// Package testenv locates what `make deps` installed (the ONNX Runtime
// library, the Kafka jars, Debian's binaries) for tests and harnesses. A
// missing dependency fails the test with the command that installs it; it
// never skips.
package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

// Pinned versions; deploy/scripts/deps.sh installs exactly these.
const (
	ORTVersion   = "1.24.3"
	KafkaVersion = "4.1.1"
)

// Root is the repository root: the nearest directory above the working
// directory holding go.mod.
func Root() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("testenv: no go.mod above the working directory")
		}
		dir = parent
	}
}

// Cache is the download cache, .cache/ under the root unless OUTPOST_CACHE
// says otherwise.
func Cache() (string, error) {
	if c := os.Getenv("OUTPOST_CACHE"); c != "" {
		return c, nil
	}
	root, err := Root()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, ".cache"), nil
}

// ORTLibrary is the libonnxruntime for this machine's architecture, or the
// one OUTPOST_ORT_LIB names.
func ORTLibrary(tb testing.TB) string {
	tb.Helper()
	if p := os.Getenv("OUTPOST_ORT_LIB"); p != "" {
		return mustExist(tb, p)
	}
	cache, err := Cache()
	if err != nil {
		tb.Fatal(err)
	}
	arch := map[string]string{"amd64": "linux-x64", "arm64": "linux-arm64"}[runtime.GOARCH]
	return mustExist(tb, filepath.Join(cache, "onnxruntime", ORTVersion, arch, "libonnxruntime.so.1"))
}

// KafkaLibs is the directory of Kafka broker jars.
func KafkaLibs() (string, error) {
	cache, err := Cache()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(cache, "kafka", KafkaVersion, "libs")
	if _, err := os.Stat(dir); err != nil {
		return "", fmt.Errorf("testenv: kafka %s not installed (%w); run `make deps`", KafkaVersion, err)
	}
	return dir, nil
}

// Binary finds a program on PATH or in the usual sbin directories
// (Debian installs mosquitto in /usr/sbin, often not on a user's PATH).
func Binary(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/usr/local/sbin", "/sbin"} {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("testenv: %s not found; run `make deps`", name)
}

func mustExist(tb testing.TB, p string) string {
	tb.Helper()
	if _, err := os.Stat(p); err != nil {
		tb.Fatalf("testenv: %v; run `make deps`", err)
	}
	return p
}
