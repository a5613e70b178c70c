//go:build !cgo

package ort

import (
	"fmt"

	"github.com/outpost-edge/outpost/models/onnx"
)

// A build without cgo (outpostctl for an operator's laptop: CGO_ENABLED=0
// for any OS) has no ONNX Runtime. Every entry point says so, and the
// commands that can fall back to the pure-Go engine do.
var errNoRuntime = fmt.Errorf("%w: this binary was built without cgo (CGO_ENABLED=0), which ONNX Runtime needs", ErrRuntime)

const haveRuntime = false

// Init reports that this build cannot load ONNX Runtime.
func Init(string) error { return errNoRuntime }

// Version is empty: no runtime is loaded.
func Version() string { return "" }

// Session is never made in this build.
type Session struct {
	Provider, FallbackReason string
}

// NewSession reports that this build has no ONNX Runtime.
func NewSession([]byte) (*Session, error) { return nil, errNoRuntime }

// NewSessionWith reports that this build has no ONNX Runtime.
func NewSessionWith([]byte, Options) (*Session, error) { return nil, errNoRuntime }

// Outputs is 0.
func (s *Session) Outputs() int { return 0 }

// Run reports that this build has no ONNX Runtime.
func (s *Session) Run([]float32, int) ([]float32, error) { return nil, errNoRuntime }

// RunShared reports that this build has no ONNX Runtime.
func (s *Session) RunShared([]float32, int) ([]float32, error) { return nil, errNoRuntime }

// RunFeeds reports that this build has no ONNX Runtime.
func (s *Session) RunFeeds([]onnx.Feed) ([]float32, error) { return nil, errNoRuntime }

// RunFeedsShared reports that this build has no ONNX Runtime.
func (s *Session) RunFeedsShared([]onnx.Feed) ([]float32, error) { return nil, errNoRuntime }

// Close does nothing.
func (s *Session) Close() error { return nil }

// Optimized reports that this build has no ONNX Runtime.
func Optimized([]byte, Options) ([]byte, error) { return nil, errNoRuntime }

// Trace reports that this build has no ONNX Runtime.
func Trace([]byte, []string, []float32, int) (map[string][]float32, error) { return nil, errNoRuntime }

// TraceFeeds reports that this build has no ONNX Runtime.
func TraceFeeds([]byte, []string, []onnx.Feed) (map[string][]float32, error) {
	return nil, errNoRuntime
}
