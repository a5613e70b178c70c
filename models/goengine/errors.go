package goengine

import "errors"

var (
	// ErrModel means the graph cannot be read.
	ErrModel = errors.New("goengine: bad model")
	// ErrUnsupported means the graph uses something the engine lacks.
	ErrUnsupported = errors.New("goengine: unsupported")
	// ErrInput means the input does not fit the graph.
	ErrInput = errors.New("goengine: bad input")
)
