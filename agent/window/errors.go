package window

import "errors"

// ErrSpec means a window specification is invalid.
var ErrSpec = errors.New("invalid window spec")

// ErrSnapshot means a snapshot cannot be restored.
var ErrSnapshot = errors.New("window snapshot unusable")
