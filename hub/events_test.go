package hub

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/hamba/avro/v2"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outpost-edge/outpost/hub/bridge/schemas"
	"github.com/outpost-edge/outpost/hub/kafka"
	"github.com/outpost-edge/outpost/hub/trainer"
)

// The hub's own events go through the bridge's encoder: with
// bridge.format avro, outpost.events holds Avro only (it used to mix the
// trainer's JSON into the devices' Avro).
func TestHubEventsFollowBridgeFormat(t *testing.T) {
	for _, format := range []string{"json", "avro"} {
		t.Run(format, func(t *testing.T) {
			cluster, err := kfake.NewCluster(kfake.SeedTopics(1, "t.events"))
			if err != nil {
				t.Fatal(err)
			}
			defer cluster.Close()
			cfg := Defaults()
			cfg.Kafka.TopicPrefix = "t."
			cfg.Bridge.Format = format
			opts := []kgo.Opt{kgo.SeedBrokers(cluster.ListenAddrs()...)}
			h := &Hub{cfg: cfg, log: slog.New(slog.DiscardHandler), kafka: &kafka.Conn{Opts: opts}}
			k := &kafkaSink{h: h}
			at := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
			k.Emit(context.Background(), "health", trainer.Event{At: at, Kind: "drift"})
			k.close()

			cl, err := kgo.NewClient(append(opts, kgo.ConsumeTopics("t.events"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var rec *kgo.Record
			for rec == nil && ctx.Err() == nil {
				cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) { rec = r })
			}
			if rec == nil {
				t.Fatal("no event in t.events")
			}
			hdr := map[string]string{}
			for _, h := range rec.Headers {
				hdr[h.Key] = string(h.Value)
			}
			if hdr["ce_source"] != "/outpost/hub/trainer" || hdr["ce_type"] != "dev.outpost.trainer.drift.v1" || string(rec.Key) != HubDevice {
				t.Fatalf("headers %v key %q", hdr, rec.Key)
			}
			switch format {
			case "json":
				if hdr["content-type"] != "application/json" || rec.Value[0] != '{' {
					t.Fatalf("json event: %s %q", hdr["content-type"], rec.Value)
				}
			case "avro":
				if hdr["content-type"] != "application/avro" || len(rec.Value) < 10 || rec.Value[0] != 0xC3 || rec.Value[1] != 0x01 {
					t.Fatalf("avro event: %s %x", hdr["content-type"], rec.Value[:min(len(rec.Value), 12)])
				}
				var v struct {
					Device string `avro:"device"`
					Stream string `avro:"stream"`
					Data   string `avro:"data"`
				}
				if err := avro.Unmarshal(avro.MustParse(schemas.RecordAvro), rec.Value[10:], &v); err != nil || v.Device != HubDevice || v.Stream != "events" {
					t.Fatalf("avro body %+v, %v", v, err)
				}
			}
		})
	}
}
