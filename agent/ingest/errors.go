package ingest

import "errors"

// ErrConfig means a source or decoder is configured wrongly.
var ErrConfig = errors.New("invalid ingest config")
