package selfupdate

import "errors"

// ErrBuild means an agent build is not one this device can run.
var ErrBuild = errors.New("unusable agent build")
