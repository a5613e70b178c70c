package broker

import "errors"

// ErrNotReady means the embedded server did not accept connections in time.
var ErrNotReady = errors.New("broker not ready")
