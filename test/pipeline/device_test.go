package pipeline

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/agent/outbox"
	"github.com/outpost-edge/outpost/agent/store"
	"github.com/outpost-edge/outpost/agent/uplink"
	"github.com/outpost-edge/outpost/hub"
	"github.com/outpost-edge/outpost/sync/state"
	"github.com/outpost-edge/outpost/sync/topics"
)

// device is the agent's real data path (SQLite outbox, paho uplink, sender)
// without sensors: the test appends records as a sensor pipeline would.
type device struct {
	once   sync.Once
	id     string
	db     *store.Store
	ob     *outbox.Outbox
	up     *uplink.Client
	cancel context.CancelFunc
	done   chan error
}

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

// testSendConfig is the tests' sender: a short ack timeout, so a lost
// batch is resent quickly.
var testSendConfig = uplink.SendConfig{BatchRecords: 200, MaxInflight: 2000, AckTimeout: 2 * time.Second}

// startDeviceWith is startDeviceIn with its own sender settings.
func startDeviceWith(t *testing.T, dir string, sc uplink.SendConfig, creds state.Credentials, mqttURL string, fallback ...string) *device {
	t.Helper()
	ctx := context.Background()
	id := creds.Device
	db, err := store.Open(ctx, filepath.Join(dir, "agent.db"), store.SyncNormal)
	if err != nil {
		t.Fatal(err)
	}
	ob, err := outbox.New(ctx, db.DB(), 0)
	if err != nil {
		t.Fatal(err)
	}
	d := &device{id: id, db: db, ob: ob, done: make(chan error, 1)}
	log := testLogger(t).With("device", id)
	var s *uplink.Sender
	d.up, err = uplink.New(uplink.Config{URL: mqttURL, FallbackURLs: fallback, Username: creds.Username, Password: creds.Password, KeepAlive: 5 * time.Second, ConnectTimeout: 2 * time.Second},
		uplink.Options{
			ClientID:      id,
			OnConnect:     func(*uplink.Client) { s.OnConnect() },
			Subscriptions: map[string]uplink.Subscription{topics.Ack(id): {Handle: func(t string, p []byte) { s.OnAck(t, p) }}},
		}, log)
	if err != nil {
		t.Fatal(err)
	}
	s = uplink.NewSender(sc, id, ob, d.up, log)
	runCtx, cancel := context.WithCancel(ctx)
	d.cancel = cancel
	go func() { _ = d.up.Connect(runCtx) }()
	go func() { d.done <- s.Run(runCtx) }()
	t.Cleanup(d.close)
	return d
}

// produce appends n records of stream in batches, like a sensor pipeline.
func (d *device) produce(t *testing.T, stream string, n, batch int, pause time.Duration) {
	t.Helper()
	for i := 0; i < n; i += batch {
		var items []outbox.Item
		for j := i; j < min(i+batch, n); j++ {
			data, _ := json.Marshal(map[string]any{"i": j, "v": float64(j) * 0.5})
			items = append(items, outbox.Item{Stream: stream, EventTime: time.Now(), Data: data})
		}
		if _, err := d.ob.Append(context.Background(), items); err != nil {
			t.Error(err)
			return
		}
		time.Sleep(pause)
	}
}

// waitDrained waits until the hub has acknowledged everything.
func (d *device) waitDrained(t *testing.T, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		n, _, err := d.ob.Depth(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("device %s: %d records still unacknowledged after %s", d.id, n, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (d *device) close() {
	d.once.Do(func() {
		d.cancel()
		<-d.done
		d.up.Close()
		d.db.Close()
	})
}

func deviceIDs(n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("dev-%02d", i)
	}
	return ids
}
