// Package version holds build information set through -ldflags -X.
package version

import "fmt"

// Set at link time by the Makefile; the defaults mark a plain `go build`.
var (
	Version = "dev"
	Commit  = "unknown"
)

// String is what every binary prints for --version.
func String(binary string) string {
	return fmt.Sprintf("%s %s (commit %s)", binary, Version, Commit)
}
