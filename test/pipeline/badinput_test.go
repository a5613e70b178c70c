package pipeline

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outpost-edge/outpost/test/kafkatest"
	"github.com/outpost-edge/outpost/test/schematest"
)

func validate(t *testing.T, s *jsonschema.Schema, value []byte) {
	t.Helper()
	if err := schematest.Validate(s, value); err != nil {
		t.Fatalf("record violates its schema: %v\n%s", err, value)
	}
}

// TestBadInputIsDeadLetteredAndOthersFlow sends garbage, envelopes that
// lie about their device or stream, and an oversized payload, while a
// well-behaved device streams. The bad payloads land in outpost.deadletter
// with their reason, the hub keeps serving, and the good device's records
// arrive exactly once; every record matches its published JSON Schema.
func TestBadInputIsDeadLetteredAndOthersFlow(t *testing.T) {
	brokers := kafkatest.Brokers(t)
	cfg := hubConfig(t, brokers, t.TempDir())
	cfg.Broker.MaxPayload = 64 << 10
	h := startHub(t, cfg)
	defer h.Close()

	good := newDevice(t, h, "good-1", "tcp://"+h.MQTTAddr())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); good.Produce(t, "windows", 600, 20, 20*time.Millisecond) }()

	badCreds, err := h.Registry().Add(context.Background(), "bad-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	bigCreds, err := h.Registry().Add(context.Background(), "big-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	bad := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://" + h.MQTTAddr()).SetClientID("bad-1").
		SetUsername(badCreds.Username).SetPassword(badCreds.Password))
	if tok := bad.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	ts := time.Now().UTC().Format(time.RFC3339Nano)
	payloads := []struct{ topic, body, reason string }{
		{"outpost/v1/bad-1/up/windows", "this is not json", "malformed envelope"},
		{"outpost/v1/bad-1/up/windows", `{"v":1,"device":"good-1","stream":"windows","records":[{"seq":1,"event_time":"` + ts + `","data":{}}]}`, `names device "good-1"`},
		{"outpost/v1/bad-1/up/events", `{"v":1,"device":"bad-1","stream":"windows","records":[{"seq":1,"event_time":"` + ts + `","data":{}}]}`, `names stream "windows"`},
		{"outpost/v1/bad-1/up/events", `{"v":1,"device":"bad-1","stream":"events","records":[{"seq":1,"data":{}}]}`, "no event_time"},
	}
	for _, p := range payloads {
		if tok := bad.Publish(p.topic, 1, false, p.body); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatal(tok.Error())
		}
	}
	// Oversized: the broker refuses it and drops that client, nobody else.
	big := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://" + h.MQTTAddr()).SetClientID("big-1").SetAutoReconnect(false).
		SetUsername(bigCreds.Username).SetPassword(bigCreds.Password))
	if tok := big.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	big.Publish("outpost/v1/big-1/up/windows", 1, false, strings.Repeat("x", 128<<10)).WaitTimeout(2 * time.Second)
	bad.Disconnect(100)

	wg.Wait()
	good.WaitDrained(t, 60*time.Second)
	recs, _ := readAll(t, brokers, []string{cfg.Kafka.TopicPrefix + "windows"}, 600, 60*time.Second)
	checkExactlyOnce(t, recs, []string{"good-1"}, 600)

	// good-1 is a test/fleettest device: its windows data is synthetic
	// ({"i":..,"v":..}), so its records are held to the envelope only.
	set := schematest.Shared(t)
	recSchema, dlSchema := set.Envelope, set.DeadLetter
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...),
		kgo.ConsumeTopics(cfg.Kafka.TopicPrefix+"windows", cfg.Kafka.TopicPrefix+"deadletter"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var reasons []string
	windows := 0
	deadline := time.Now().Add(30 * time.Second)
	for (windows < 600 || len(reasons) < len(payloads)) && time.Now().Before(deadline) {
		pctx, pcancel := context.WithTimeout(context.Background(), 2*time.Second)
		fs := cl.PollRecords(pctx, 1000)
		pcancel()
		fs.EachRecord(func(r *kgo.Record) {
			if strings.HasSuffix(r.Topic, ".deadletter") {
				validate(t, dlSchema, r.Value)
				var dl struct{ Reason, Device string }
				_ = json.Unmarshal(r.Value, &dl)
				if dl.Device != "bad-1" || string(r.Key) != "bad-1" {
					t.Errorf("dead letter keyed %q, device %q; want bad-1", r.Key, dl.Device)
				}
				reasons = append(reasons, dl.Reason)
				return
			}
			validate(t, recSchema, r.Value)
			windows++
		})
	}
	if len(reasons) != len(payloads) {
		t.Fatalf("dead letters = %q, want %d", reasons, len(payloads))
	}
	for i, p := range payloads {
		if !strings.Contains(reasons[i], p.reason) {
			t.Errorf("dead letter %d reason %q lacks %q", i, reasons[i], p.reason)
		}
	}
	// The last payload has a sound header: the acker acks it (the device
	// may delete it, its payload is in the dead letter) and refuses the rest.
	if st := h.Stats(); st.BridgeDeadLetters != int64(len(payloads)) || st.Malformed != int64(len(payloads)-1) {
		t.Errorf("stats = %+v, want %d dead letters and %d malformed", st, len(payloads), len(payloads)-1)
	}

	// bad-1's events stream goes on after the dead-lettered batch: its
	// next batch is written, not taken for a gap, even when the ack of the
	// bad batch was lost (acks are QoS 0) and the device still says floor 0.
	// The acker acks it all the same, so a bridge that dropped it would
	// lose it.
	bad = mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://" + h.MQTTAddr()).SetClientID("bad-1").
		SetUsername(badCreds.Username).SetPassword(badCreds.Password))
	if tok := bad.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer bad.Disconnect(100)
	next := `{"v":1,"device":"bad-1","stream":"events","floor":0,"prev":1,"records":[{"seq":2,"event_time":"` + ts + `","data":{"ok":true}}]}`
	if tok := bad.Publish("outpost/v1/bad-1/up/events", 1, false, next); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	events, _ := readAll(t, brokers, []string{cfg.Kafka.TopicPrefix + "events"}, 1, 30*time.Second)
	if len(events) != 1 || events[0].Device != "bad-1" || events[0].Seq != 2 {
		t.Errorf("events after the dead-lettered batch = %+v, want bad-1 seq 2", events)
	}
}
