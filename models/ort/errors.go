package ort

import "errors"

var (
	// ErrRuntime means ONNX Runtime itself failed (library, environment, run).
	ErrRuntime = errors.New("onnxruntime")
	// ErrModel means the model cannot be loaded or has an unsupported shape.
	ErrModel = errors.New("onnx model rejected")
	// ErrInput means the caller's tensor does not fit the model.
	ErrInput = errors.New("bad model input")
)
