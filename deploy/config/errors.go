package config

import (
	"errors"
	"strings"
)

// ErrInvalid marks every configuration error, so callers can map it to the
// "bad config" exit code with errors.Is.
var ErrInvalid = errors.New("invalid configuration")

// FieldError names one wrong field by its dotted path and says why.
type FieldError struct {
	Path   string
	Reason string
}

func (e FieldError) Error() string { return e.Path + ": " + e.Reason }

// Errors collects every field error of one validation pass, so an operator
// fixes a config in one round instead of one field per restart.
type Errors []FieldError

// Add records a failed check.
func (es *Errors) Add(path, reason string) { *es = append(*es, FieldError{Path: path, Reason: reason}) }

// Err returns nil when empty, else an error that wraps ErrInvalid.
func (es Errors) Err() error {
	if len(es) == 0 {
		return nil
	}
	return es
}

func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return "invalid configuration:\n  " + strings.Join(lines, "\n  ")
}

func (es Errors) Unwrap() error { return ErrInvalid }
