package devca

import "errors"

var (
	// ErrNoCertificate means the CA file holds no PEM certificate.
	ErrNoCertificate = errors.New("no PEM certificate")
	// ErrNoKey means a key is missing, unreadable or not a signing key.
	ErrNoKey = errors.New("no usable private key")
	// ErrNotCA means the certificate may not sign certificates.
	ErrNotCA = errors.New("not a CA certificate")
	// ErrKeyMismatch means the key is not the certificate's.
	ErrKeyMismatch = errors.New("key does not match the CA certificate")
	// ErrChallenge means a renewal challenge is malformed, foreign or stale.
	ErrChallenge = errors.New("renewal challenge not valid")
)
