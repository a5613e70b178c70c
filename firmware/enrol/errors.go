package enrol

import "errors"

var (
	// ErrRefused means the hub refused the enrolment (unknown, spent or
	// expired token, a device id taken): retrying will not help.
	ErrRefused = errors.New("enrolment refused by the hub")
	// ErrNotEnrolled means the device has neither credentials nor a token.
	ErrNotEnrolled = errors.New("device not enrolled")
)
