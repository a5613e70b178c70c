package flash

import "errors"

var (
	// ErrWrongArch means the target root filesystem is for another
	// architecture than the bundle.
	ErrWrongArch = errors.New("target is for another architecture")
	// ErrTarget means the target is neither a directory nor an image file.
	ErrTarget = errors.New("unusable flash target")
)
