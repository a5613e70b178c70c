package store

import "errors"

// ErrConfig means the store was asked for an unsupported setting.
var ErrConfig = errors.New("unsupported store setting")
