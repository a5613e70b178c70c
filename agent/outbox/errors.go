package outbox

import "errors"

// ErrInvalid means an item cannot be stored: no stream, or data that is not JSON.
var ErrInvalid = errors.New("invalid outbox item")
