package window

import "errors"

// ErrSpec means a window specification is invalid.
var ErrSpec = errors.New("invalid window spec")
