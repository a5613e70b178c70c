package registry

import "errors"

var (
	// ErrUnknownDevice means no device has that id.
	ErrUnknownDevice = errors.New("unknown device")
	// ErrTokenInvalid means an enrolment token is unknown, already used or
	// expired; the wrapping error says which.
	ErrTokenInvalid = errors.New("enrolment token not valid")
	// ErrDeviceExists means an enrolment named a device that is already
	// enrolled and its token was not issued for that device.
	ErrDeviceExists = errors.New("device already enrolled")
	// ErrRenewRefused means a certificate renewal was refused: unknown or
	// revoked device, no enrolled key, a bad signature or challenge.
	ErrRenewRefused = errors.New("certificate renewal refused")
	// ErrNotReady means the registry is not attached to JetStream yet.
	ErrNotReady = errors.New("registry not ready")
)
