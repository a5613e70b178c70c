// Package configtest holds the checks every daemon's config tests share.
package configtest

import (
	"errors"
	"strings"
	"testing"

	"github.com/outpost-edge/outpost/deploy/config"
)

// Validator is a daemon config.
type Validator interface{ Validate() error }

// Case breaks one field of a valid config and names the path Validate
// must report.
type Case[C Validator] struct {
	Name   string
	Mutate func(C)
	Path   string
}

// FieldErrors requires exactly one error, at the case's path, for each case.
func FieldErrors[C Validator](t *testing.T, defaults func() C, cases []Case[C]) {
	t.Helper()
	for _, tt := range cases {
		c := defaults()
		tt.Mutate(c)
		err := c.Validate()
		var es config.Errors
		if !errors.As(err, &es) || len(es) != 1 || es[0].Path != tt.Path {
			t.Errorf("%s: err = %v, want one error at %s", tt.Name, err, tt.Path)
		}
	}
}

// FuzzFile decodes arbitrary YAML into the defaults: errors must wrap
// config.ErrInvalid, and validation errors must name a field path.
func FuzzFile[C Validator](f *testing.F, defaults func() C, seeds ...string) {
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, doc string) {
		c := defaults()
		if err := config.DecodeYAML([]byte(doc), c); err != nil {
			if !errors.Is(err, config.ErrInvalid) {
				t.Fatalf("decode error does not wrap ErrInvalid: %v", err)
			}
			return
		}
		if err := c.Validate(); err != nil && !strings.Contains(err.Error(), ": ") {
			t.Fatalf("validation error without a field path: %v", err)
		}
	})
}
