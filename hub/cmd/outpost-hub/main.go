// Command outpost-hub runs the Outpost hub.
package main

import (
	"os"

	"github.com/outpost-edge/outpost/deploy/daemon"
	"github.com/outpost-edge/outpost/hub"
)

func main() {
	os.Exit(daemon.Main(daemon.Spec[*hub.Config]{
		Name:      "outpost-hub",
		EnvPrefix: "OUTPOST_HUB",
		Summary:   "MQTT/JetStream broker for the fleet, Kafka aggregation, model rollouts",
		Defaults:  hub.Defaults,
		Run:       hub.Run,
		Aliases:   map[string]string{"kafka-brokers": "kafka.brokers"},
	}, os.Args[1:], os.Environ(), os.Stdout, os.Stderr))
}
