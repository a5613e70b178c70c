package pipeline

import (
	"context"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/outpost-edge/outpost/agent/outbox"
	"github.com/outpost-edge/outpost/agent/store"
	"github.com/outpost-edge/outpost/agent/uplink"
	"github.com/outpost-edge/outpost/sync/envelope"
	"github.com/outpost-edge/outpost/sync/topics"
	"github.com/outpost-edge/outpost/test/mqtttest"
)

// TestAgentUplinkToMosquitto: the agent's outbox and uplink work against a
// third-party broker. Without a hub nobody acks, so the agent keeps every
// record and resends it after the ack timeout: every record arrives, and
// each repeat carries the same device and seq.
func TestAgentUplinkToMosquitto(t *testing.T) {
	b := mqtttest.New(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var mu sync.Mutex
	seen := map[uint64]string{}
	deliveries := 0
	sub := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(b.URL).SetClientID("cloud-sub"))
	if tok := sub.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer sub.Disconnect(100)
	tok := sub.Subscribe("outpost/v1/+/up/#", 1, func(_ mqtt.Client, m mqtt.Message) {
		e, err := envelope.Decode(m.Payload())
		if err != nil {
			t.Errorf("bad envelope: %v", err)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		for _, r := range e.Records {
			deliveries++
			if prev, ok := seen[r.Seq]; ok && prev != string(r.Data) {
				t.Errorf("seq %d repeated with other data", r.Seq)
			}
			seen[r.Seq] = string(r.Data)
		}
	})
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}

	db, err := store.Open(ctx, filepath.Join(t.TempDir(), "agent.db"), store.SyncFull)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ob, _ := outbox.New(ctx, db.DB(), 0)
	var s *uplink.Sender
	up, err := uplink.New(uplink.Config{URL: b.URL, KeepAlive: 5 * time.Second, ConnectTimeout: 2 * time.Second},
		uplink.Options{ClientID: "edge-m", OnConnect: func(*uplink.Client) { s.OnConnect() },
			Subscriptions: map[string]uplink.Subscription{topics.Ack("edge-m"): {Handle: func(t string, p []byte) { s.OnAck(t, p) }}}},
		slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	s = uplink.NewSender(uplink.SendConfig{BatchRecords: 50, MaxInflight: 1000, AckTimeout: 500 * time.Millisecond}, "edge-m", ob, up, slog.New(slog.DiscardHandler))
	go func() { _ = up.Connect(ctx) }()
	defer up.Close()
	go func() { _ = s.Run(ctx) }()
	d := &device{ID: "edge-m", Outbox: ob}
	d.Produce(t, "events", 200, 20, 10*time.Millisecond)

	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		mu.Lock()
		n, total := len(seen), deliveries
		mu.Unlock()
		if n == 200 && total > 200 {
			break // all arrived, and the unacked ones came again
		}
		time.Sleep(50 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 200 || deliveries <= 200 {
		t.Fatalf("%d distinct seqs in %d deliveries; want all 200, resent while unacked", len(seen), deliveries)
	}
	if n, _, _ := ob.Depth(ctx); n != 200 {
		t.Fatalf("outbox holds %d; without a hub ack it must keep all 200", n)
	}
}
