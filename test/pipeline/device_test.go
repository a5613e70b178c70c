package pipeline

import (
	"context"
	"testing"

	"github.com/outpost-edge/outpost/agent/uplink"
	"github.com/outpost-edge/outpost/hub"
	"github.com/outpost-edge/outpost/sync/state"
	"github.com/outpost-edge/outpost/test/fleettest"
)

// device is the agent's real data path without sensors (fleettest).
type device = fleettest.Device

// newDevice enrols id on h and starts its data path against mqttURL.
func newDevice(t *testing.T, h *hub.Hub, id, mqttURL string) *device {
	t.Helper()
	creds, err := h.Registry().Add(context.Background(), id, nil)
	if err != nil {
		t.Fatal(err)
	}
	return startDevice(t, creds, mqttURL)
}

// startDevice starts an enrolled device's data path against the hub at
// mqttURL, falling back to the others in order.
func startDevice(t *testing.T, creds state.Credentials, mqttURL string, fallback ...string) *device {
	t.Helper()
	return startDeviceIn(t, t.TempDir(), creds, mqttURL, fallback...)
}

// startDeviceIn is startDevice with the agent database in dir: a board
// whose data directory the test keeps, copies and restores.
func startDeviceIn(t *testing.T, dir string, creds state.Credentials, mqttURL string, fallback ...string) *device {
	t.Helper()
	return startDeviceWith(t, dir, testSendConfig, creds, mqttURL, fallback...)
}

// testSendConfig is the tests' sender (a 2 s ack timeout).
var testSendConfig = fleettest.SendConfig

// startDeviceWith is startDeviceIn with its own sender settings.
func startDeviceWith(t *testing.T, dir string, sc uplink.SendConfig, creds state.Credentials, mqttURL string, fallback ...string) *device {
	t.Helper()
	return fleettest.Start(t, dir, sc, creds, testLogger(t), mqttURL, fallback...)
}

func deviceIDs(n int) []string { return fleettest.IDs(n) }
