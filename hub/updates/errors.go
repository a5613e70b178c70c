package updates

import "errors"

var (
	// ErrNotSigner means this hub of a cluster does not hold the signing
	// lease; publish through the one that does.
	ErrNotSigner = errors.New("this hub does not sign the repository now (not the cluster's lease holder)")
	// ErrPublished means the target exists: published targets never change.
	ErrPublished = errors.New("already published")
)
