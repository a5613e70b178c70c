package manifest

import "errors"

var (
	// ErrInvalid means a manifest is malformed or incomplete.
	ErrInvalid = errors.New("invalid model manifest")
	// ErrChecksum means model.onnx does not match the manifest's sha256.
	ErrChecksum = errors.New("model checksum mismatch")
	// ErrFeature means a window result lacks a feature the model needs.
	ErrFeature = errors.New("feature unavailable")
	// ErrGolden means a model does not reproduce its golden vectors.
	ErrGolden = errors.New("model does not reproduce its golden vectors")
)
