package infer

import "errors"

// ErrSelfTest means a model failed its golden vectors.
var ErrSelfTest = errors.New("model self-test failed")
