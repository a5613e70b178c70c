package bench

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/outpost-edge/outpost/agent/ingest"
	"github.com/outpost-edge/outpost/agent/outbox"
	"github.com/outpost-edge/outpost/agent/pipeline"
	"github.com/outpost-edge/outpost/agent/store"
	"github.com/outpost-edge/outpost/test/mqtttest"
)

// BenchmarkAgentEndToEnd: sensor readings published to a local Mosquitto
// (10 JSON lines per MQTT message, QoS 1), read by the agent's MQTT
// source, decoded, windowed (1 s tumbling, 100 keys) and written to the
// SQLite outbox (synchronous=FULL). One iteration is one reading; the
// clock stops when the pipeline has taken every reading.
//
// Sub-benchmarks: the README's earlier case (10 lines per message, 100
// keys, max_unacked 500), and how sensors publish: one reading per
// message at 1,000 keys, tuned (max_unacked 500, in-flight limit raised to
// 1,000) and at the defaults (agent: max_unacked unset; Mosquitto: its own
// in-flight limit of 20, queues raised to hold the burst), over MQTT 5 and
// pinned to 3.1.1.
func BenchmarkAgentEndToEnd(b *testing.B) {
	for _, c := range []struct {
		name                 string
		lines, keys, unacked int
		protocol             string
		lim                  mqtttest.Limits
	}{
		{"lines=10/keys=100/unacked=500", 10, 100, 500, "", mqtttest.Raised},
		{"lines=1/keys=1000/unacked=500", 1, 1000, 500, "", mqtttest.Raised},
		{"lines=1/keys=1000/unacked=default", 1, 1000, 0, "", mqtttest.DefaultInflight},
		{"lines=1/keys=1000/unacked=default/mqtt=3.1.1", 1, 1000, 0, "3.1.1", mqtttest.DefaultInflight},
	} {
		b.Run(c.name, func(b *testing.B) { agentEndToEnd(b, c.lines, c.keys, c.unacked, c.protocol, c.lim) })
	}
}

func agentEndToEnd(b *testing.B, lines, keys, unacked int, protocol string, lim mqtttest.Limits) {
	broker := mqtttest.NewWith(b, lim)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	db, err := store.Open(ctx, b.TempDir()+"/agent.db", store.SyncFull)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	ob, _ := outbox.New(ctx, db.DB(), 0)
	p, err := pipeline.New(ctx, pipeline.Config{
		Name:         "bench",
		Source:       ingest.SourceConfig{Type: "mqtt", MQTT: ingest.MQTTConfig{URL: broker.URL, Topic: "sensors/#", MaxUnacked: unacked, Protocol: protocol}},
		Decode:       ingest.DecodeConfig{KeyField: "s", TimeField: "ts", Fields: []string{"v"}},
		Window:       pipeline.WindowConfig{Kind: "tumbling", Size: time.Second, MaxOutOfOrder: 100 * time.Millisecond},
		Aggregations: []string{"count", "mean", "max"},
	}, ob, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	go func() { _ = p.Run(ctx) }()
	time.Sleep(500 * time.Millisecond) // subscription in place

	pub := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(broker.URL).SetClientID("sensors").SetMaxResumePubInFlight(256))
	if tok := pub.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		b.Fatal(tok.Error())
	}
	defer pub.Disconnect(100)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var payloads []string
	for i := 0; i < b.N; i += lines {
		var sb strings.Builder
		for j := i; j < min(i+lines, b.N); j++ {
			fmt.Fprintf(&sb, `{"s":"k%d","ts":"%s","v":%d}`+"\n", j%keys, t0.Add(time.Duration(j)*100*time.Microsecond).Format(time.RFC3339Nano), j%50)
		}
		payloads = append(payloads, sb.String())
	}
	before := p.Stats.Events.Load()
	b.ResetTimer()
	stopProfile := profileTimed(b)
	start, cpu0 := time.Now(), cpuTime()
	toks := make([]mqtt.Token, 0, len(payloads))
	for _, pl := range payloads {
		toks = append(toks, pub.Publish("sensors/line", 1, false, pl))
	}
	for _, t := range toks {
		t.Wait()
	}
	for p.Stats.Events.Load()-before < int64(b.N) {
		if time.Since(start) > 5*time.Minute {
			b.Fatalf("pipeline took %d of %d readings", p.Stats.Events.Load()-before, b.N)
		}
		time.Sleep(time.Millisecond)
	}
	elapsed, cpu := time.Since(start), cpuTime()-cpu0
	stopProfile()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
	b.ReportMetric(float64(cpu)/1e3/float64(b.N), "cpu-µs/event")
}
