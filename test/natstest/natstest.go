// Package natstest runs the hub's embedded nats-server (MQTT + JetStream) on
// free loopback ports for tests.
package natstest

import (
	"context"
	"log/slog"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-edge/outpost/hub/broker"
)

// New starts an embedded broker for one test and stops it when the test ends.
func New(tb testing.TB) *broker.Broker {
	tb.Helper()
	b, err := broker.Start(context.Background(), broker.Config{
		ServerName: "test-hub",
		Host:       "127.0.0.1",
		NATSPort:   -1,
		MQTTPort:   -1,
		StoreDir:   tb.TempDir(),
		SyncAlways: true,
		MaxPayload: 1 << 20,
	}, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(b.Close)
	return b
}

// JetStream starts an embedded broker for one test and returns a
// JetStream client connected to it.
func JetStream(tb testing.TB) jetstream.JetStream {
	tb.Helper()
	b := New(tb)
	nc, err := nats.Connect(b.NATSURL())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	return js
}
