package topics

import "errors"

var (
	// ErrTopic means a topic is outside the Outpost protocol.
	ErrTopic = errors.New("invalid topic")
	// ErrDevice means a device id cannot be used as a topic level.
	ErrDevice = errors.New("invalid device id")
)
