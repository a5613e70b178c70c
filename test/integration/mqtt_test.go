package integration

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/outpost-edge/outpost/agent/uplink"
	"github.com/outpost-edge/outpost/test/mqtttest"
	"github.com/outpost-edge/outpost/test/natstest"
)

// TestMosquittoQoS1RoundTrip proves the agent's uplink speaks to a
// third-party broker: a QoS 1 publish arrives at a QoS 1 subscriber.
func TestMosquittoQoS1RoundTrip(t *testing.T) {
	b := mqtttest.New(t)
	roundTrip(t, b.URL)
}

// TestEmbeddedNATSMQTTRoundTrip does the same through the hub's embedded
// nats-server MQTT listener.
func TestEmbeddedNATSMQTTRoundTrip(t *testing.T) {
	b := natstest.New(t)
	roundTrip(t, "tcp://"+b.MQTTAddr())
}

func roundTrip(t *testing.T, url string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	topic := fmt.Sprintf("outpost/v1/dev-%d/up/telemetry", time.Now().UnixNano())

	type msg struct {
		payload string
		qos     byte
	}
	got := make(chan msg, 16)
	sub := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(url).SetClientID("it-sub").
		SetOrderMatters(false).SetConnectTimeout(5 * time.Second))
	if tok := sub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscriber connect to %s: %v", url, tok.Error())
	}
	defer sub.Disconnect(100)
	tok := sub.Subscribe(topic, 1, func(_ mqtt.Client, m mqtt.Message) {
		got <- msg{string(m.Payload()), m.Qos()}
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}

	pub, err := uplink.New(uplink.Config{URL: url, KeepAlive: 30 * time.Second, ConnectTimeout: 5 * time.Second},
		uplink.Options{ClientID: "it-pub"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	if err := pub.Publish(ctx, topic, 1, false, []byte("hello-qos1")); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-got:
		if m.payload != "hello-qos1" {
			t.Fatalf("payload = %q", m.payload)
		}
		if m.qos != 1 {
			t.Fatalf("delivered with QoS %d, want 1", m.qos)
		}
	case <-ctx.Done():
		t.Fatal("message not delivered")
	}
}
