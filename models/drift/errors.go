package drift

import "errors"

var (
	// ErrEmpty means a distribution has no observations.
	ErrEmpty = errors.New("drift: empty distribution")
	// ErrNonFinite means a sample holds NaN or ±Inf, which have no place
	// in a distribution's order.
	ErrNonFinite = errors.New("drift: NaN or infinite value")
	// ErrParam means a detector or sketch parameter is out of range.
	ErrParam = errors.New("drift: invalid parameter")
)
