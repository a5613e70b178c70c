// Command crashagent is an agent build that crashes on start: it answers
// the update self-test (--version, --check-config) like an agent and
// exits with a panic when started for real. The self-update tests publish
// it to prove that such a build is rolled back on the device.
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "--version":
			fmt.Println("outpost-agent 3.0.0-crash (commit test)")
			return
		case "--check-config":
			fmt.Println("outpost-agent: configuration OK")
			return
		}
	}
	panic("crashagent: this build crashes on start")
}
