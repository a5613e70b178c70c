package registry

import "errors"

var (
	// ErrUnknownDevice means no device has that id.
	ErrUnknownDevice = errors.New("unknown device")
	// ErrNotReady means the registry is not attached to JetStream yet.
	ErrNotReady = errors.New("registry not ready")
)
