package ort

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
)

// Options tune a session.
type Options struct {
	// Provider is the execution provider: cpu (default), cuda, tensorrt or
	// openvino. One the library cannot use falls back to cpu; Session.Provider
	// and FallbackReason say what happened.
	Provider string
	// IntraOpThreads bounds ONNX Runtime's threads per run (0: its default).
	IntraOpThreads int
	// Output names the scores output. Empty: the graph's only output, or
	// its only float output (onnx.ScoresOutput).
	Output string
}

// Providers the agent knows how to request.
var Providers = []string{"cpu", "cuda", "tensorrt", "openvino"}

// EnvLibrary names the variable that points at libonnxruntime.so.1.
const EnvLibrary = "OUTPOST_ORT_LIB"

// FindLibrary resolves libonnxruntime.so.1: explicit if set, else
// $OUTPOST_ORT_LIB, lib/ next to the running binary, the download cache of
// a source tree (`make deps` puts it in .cache/onnxruntime, beside the
// bin/ of `make build`, or under the working directory), /usr/lib/outpost
// and /usr/local/lib.
func FindLibrary(explicit string) (string, error) {
	if !haveRuntime {
		return "", errNoRuntime
	}
	var candidates []string
	add := func(paths ...string) {
		for _, p := range paths {
			if p != "" {
				candidates = append(candidates, p)
			}
		}
	}
	add(explicit)
	if explicit == "" {
		add(os.Getenv(EnvLibrary))
		var roots []string
		if exe, err := os.Executable(); err == nil {
			add(filepath.Join(filepath.Dir(exe), "lib", "libonnxruntime.so.1"))
			roots = append(roots, filepath.Dir(filepath.Dir(exe)))
		}
		if wd, err := os.Getwd(); err == nil {
			roots = append(roots, wd)
		}
		for _, r := range roots {
			add(cached(r))
		}
		add("/usr/lib/outpost/libonnxruntime.so.1", "/usr/local/lib/libonnxruntime.so.1")
	}
	for _, c := range candidates {
		if _, err := os.Stat(c); err == nil {
			return c, nil
		}
	}
	return "", fmt.Errorf("%w: libonnxruntime.so.1 not found; looked in %s", ErrRuntime, strings.Join(candidates, ", "))
}

// cached is the newest libonnxruntime in root's download cache for this
// architecture, or empty.
func cached(root string) string {
	arch := map[string]string{"amd64": "x64", "arm64": "arm64"}[runtime.GOARCH]
	if arch == "" {
		return ""
	}
	libs, _ := filepath.Glob(filepath.Join(root, ".cache", "onnxruntime", "*", runtime.GOOS+"-"+arch, "libonnxruntime.so.1"))
	if len(libs) == 0 {
		return filepath.Join(root, ".cache", "onnxruntime", "*", runtime.GOOS+"-"+arch, "libonnxruntime.so.1")
	}
	sort.Strings(libs) // one pinned version in practice; else the last by name
	return libs[len(libs)-1]
}
