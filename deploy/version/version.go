// Package version holds build information set through -ldflags -X.
package version

import "fmt"

// Set at link time by the Makefile; the defaults mark a plain `go build`.
var (
	Version = "dev"
	Commit  = "unknown"
	// Build numbers agent builds for self-update (outpostctl agent
	// publish --build, firmware build --build); unstamped builds are 1.
	Build = "1"
)

// BuildNumber is Build as a number (1 when it is not one).
func BuildNumber() int64 {
	var n int64
	if _, err := fmt.Sscan(Build, &n); err != nil || n < 1 {
		return 1
	}
	return n
}

// String is what every binary prints for --version.
func String(binary string) string {
	return fmt.Sprintf("%s %s (commit %s)", binary, Version, Commit)
}
