//go:generate ../../deploy/scripts/gen-onnx.sh

package onnx

import "errors"

var (
	// ErrShape means tensor data and declared shape disagree.
	ErrShape = errors.New("onnx: shape mismatch")
	// ErrModel means bytes are not a usable ONNX model.
	ErrModel = errors.New("onnx: invalid model")
	// ErrOutput means no graph output fits the role asked for.
	ErrOutput = errors.New("onnx: output")
	// ErrUnsupported means the builder cannot express a value.
	ErrUnsupported = errors.New("onnx: unsupported")
)
