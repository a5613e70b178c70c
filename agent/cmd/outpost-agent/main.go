// Command outpost-agent runs the Outpost edge agent.
package main

import (
	"os"

	"github.com/outpost-edge/outpost/agent"
	"github.com/outpost-edge/outpost/deploy/daemon"
)

// spec is the agent daemon, a variable so that its test runs the same
// checks in-process.
var spec = daemon.Spec[*agent.Config]{
	Name:      "outpost-agent",
	EnvPrefix: "OUTPOST_AGENT",
	Summary:   "edge runtime: sensor ingest, event-time windows, inference, durable outbox",
	Defaults:  agent.Defaults,
	Run:       agent.Run,
	Check:     (*agent.Config).CheckModels,
}

func main() {
	os.Exit(daemon.Main(spec, os.Args[1:], os.Environ(), os.Stdout, os.Stderr))
}
