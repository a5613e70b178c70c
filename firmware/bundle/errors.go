package bundle

import "errors"

var (
	// ErrSignature means the bundle's manifest is not signed by a trusted key.
	ErrSignature = errors.New("bundle signature does not verify")
	// ErrTampered means a file in the bundle differs from what the signed
	// manifest says, or the bundle holds files the manifest does not name.
	ErrTampered = errors.New("bundle content does not match its signed manifest")
	// ErrFormat means the file is not a bundle this version reads.
	ErrFormat = errors.New("not an outpost bundle")
)
