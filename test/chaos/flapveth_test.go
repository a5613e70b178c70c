package chaos

import (
	"fmt"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/hub"
)

// flap cuts l for half of every period and heals it for the other half,
// for total, and returns with the link healed; it reports how many times
// the link went down. tick runs every 100 ms meanwhile.
func flap(t *testing.T, l *netLink, total, period time.Duration, tick func()) int {
	t.Helper()
	wait := func(d time.Duration) {
		for end := time.Now().Add(d); time.Now().Before(end); {
			time.Sleep(min(100*time.Millisecond, time.Until(end)))
			tick()
		}
	}
	flaps := 0
	for end := time.Now().Add(total); time.Now().Before(end); flaps++ {
		l.Cut(t)
		wait(period / 2)
		l.Heal(t)
		wait(period / 2)
	}
	return flaps
}

// flapping is how long the veth link flaps: the minute, in
// `make test` too (not scaled).
const flapping = 60 * time.Second

// Devices reach the hub across a veth pair (through the relay in the
// namespace) whose namespace end goes down for 1 s and up for 1 s, again
// and again, for a minute: established connections see 1 s silences (no
// FIN, no RST) with retransmissions backing off into the next one, MQTT
// keepalives time out, and reconnects race the next cut. Afterwards every
// device catches up within the bound and Kafka has every record once.
func TestFlappingVethAgentHub(t *testing.T) {
	l := newLink(t)
	var flaps int
	var acceptedBefore int64
	r := runScenario(t, scenario{
		devices: 3,
		traffic: flapping + 15*time.Second,
		route:   func(t *testing.T, h *hub.Hub) string { return "tcp://" + l.Relay(t, h.MQTTAddr()) },
		fault: func(t *testing.T, h *hub.Hub) {
			time.Sleep(2 * time.Second)
			acceptedBefore = h.Stats().AuthAccepted
			at := h.Stats().AckerEnvelopes
			// The longest the hub went without acking anything.
			last, lastAt, stall := at, time.Now(), time.Duration(0)
			flaps = flap(t, l, flapping, 2*time.Second, func() {
				if n := h.Stats().AckerEnvelopes; n != last {
					last, lastAt = n, time.Now()
				}
				stall = max(stall, time.Since(lastAt))
			})
			t.Logf("RELIABILITY-NOTE | veth flapping | %d flaps in %s (down 1 s, up 1 s): %d envelopes acked meanwhile, longest without an ack %s, %d reconnections",
				flaps, flapping, h.Stats().AckerEnvelopes-at, stall.Round(100*time.Millisecond), h.Stats().AuthAccepted-acceptedBefore)
		},
		// A connection that outlives its keepalive reconnects through
		// paho's backoff, which grows while connects fail on a cut link.
		bound: 30 * time.Second,
	})
	if flaps < int(flapping/(2*time.Second))-1 {
		t.Errorf("the link flapped %d times in %s, want about %d", flaps, flapping, flapping/(2*time.Second))
	}
	r.log(t, fmt.Sprintf("veth agent↔hub flapping every 2 s for %s", flapping))
}
