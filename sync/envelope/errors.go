package envelope

import "errors"

// ErrMalformed means a payload is not a valid envelope.
var ErrMalformed = errors.New("malformed envelope")
