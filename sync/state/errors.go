package state

import "errors"

// ErrDocument means a state document is malformed.
var ErrDocument = errors.New("malformed state document")
