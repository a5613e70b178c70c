// Package topics builds and parses the MQTT topics of the Outpost protocol
// (DESIGN §3) and their NATS subject equivalents.
package topics

import (
	"fmt"
	"strings"
)

// Root is the protocol prefix and version of every topic.
const Root = "outpost/v1"

// Streams a device may publish under up/.
var Streams = []string{"windows", "inferences", "telemetry", "events", "late", "dead", "labels", "drift"}

// Up is the topic a device publishes a batch of one stream to.
func Up(device, stream string) string { return Root + "/" + device + "/up/" + stream }

// Ack carries the hub's cumulative durable sequence number to a device.
func Ack(device string) string { return Root + "/" + device + "/ack" }

// Desired carries the hub's retained desired state for a device.
func Desired(device string) string { return Root + "/" + device + "/desired" }

// Reported carries a device's retained reported state.
func Reported(device string) string { return Root + "/" + device + "/reported" }

// Kind is what a parsed topic addresses.
type Kind int

// Topic kinds.
const (
	KindUp Kind = iota + 1
	KindAck
	KindDesired
	KindReported
)

// Parsed is a topic split into its parts.
type Parsed struct {
	Device string
	Kind   Kind
	Stream string // only for KindUp
}

// Parse splits an MQTT topic; anything outside the protocol is an error.
func Parse(topic string) (Parsed, error) {
	rest, ok := strings.CutPrefix(topic, Root+"/")
	if !ok {
		return Parsed{}, fmt.Errorf("%w: %q lacks prefix %s/", ErrTopic, topic, Root)
	}
	parts := strings.Split(rest, "/")
	if err := ValidDevice(parts[0]); err != nil {
		return Parsed{}, err
	}
	p := Parsed{Device: parts[0]}
	switch {
	case len(parts) == 3 && parts[1] == "up":
		for _, s := range Streams {
			if parts[2] == s {
				p.Kind, p.Stream = KindUp, s
				return p, nil
			}
		}
		return Parsed{}, fmt.Errorf("%w: unknown stream %q", ErrTopic, parts[2])
	case len(parts) == 2 && parts[1] == "ack":
		p.Kind = KindAck
	case len(parts) == 2 && parts[1] == "desired":
		p.Kind = KindDesired
	case len(parts) == 2 && parts[1] == "reported":
		p.Kind = KindReported
	default:
		return Parsed{}, fmt.Errorf("%w: %q is not a protocol topic", ErrTopic, topic)
	}
	return p, nil
}

// ValidDevice checks a device id: it becomes one MQTT topic level and one
// NATS subject token, so it must not contain separators or wildcards.
func ValidDevice(id string) error {
	if id == "" || len(id) > 128 {
		return fmt.Errorf("%w: device id must be 1 to 128 characters", ErrDevice)
	}
	for _, r := range id {
		ok := r == '-' || r == '_' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9')
		if !ok {
			return fmt.Errorf("%w: %q may hold only letters, digits, '-' and '_'", ErrDevice, id)
		}
	}
	return nil
}

// Subject maps an MQTT topic to the NATS subject nats-server uses for it.
// Device ids never contain '.', so the '//' escaping never applies.
func Subject(topic string) string { return strings.ReplaceAll(topic, "/", ".") }
