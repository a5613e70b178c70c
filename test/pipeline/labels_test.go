package pipeline

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outpost-edge/outpost/agent/outbox"
	"github.com/outpost-edge/outpost/hub/trainer"
	"github.com/outpost-edge/outpost/test/kafkatest"
	"github.com/outpost-edge/outpost/test/schematest"
)

// TestCloudLabelsFromKafka: a device streams windows; a cloud team writes
// labels for them to the outpost.labels topic on the real Kafka broker
// (one by window start, one by an event time inside the window, one for
// a window that never existed, one that is not a label at all). The
// trainer joins the first two, counts the third unmatched and the fourth
// bad.
func TestCloudLabelsFromKafka(t *testing.T) {
	brokers := kafkatest.Brokers(t)
	cfg := hubConfig(t, brokers, t.TempDir())
	cfg.Trainer.JoinWait = 3 * time.Second
	cfg.Trainer.Models = []trainer.ModelConfig{{Model: "health", Pipeline: "machine"}}
	h := startHub(t, cfg)
	defer h.Close()
	url := "http://" + h.HTTPAddr()
	if code, out := outpostctl(t, url, "model", "push", healthV1(t)); code != 0 {
		t.Fatal(out)
	}
	if code, out := outpostctl(t, url, "model", "promote", "health", "1"); code != 0 {
		t.Fatal(out)
	}
	status := func() trainer.Status {
		resp, err := http.Get(url + "/v1/train")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var st []trainer.Status
		json.NewDecoder(resp.Body).Decode(&st)
		return st[0]
	}
	// The trainer starts once the lease holder has loaded the champion.
	deadline := time.Now().Add(20 * time.Second)
	for status().Champion != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("trainer never loaded production: %+v", status())
		}
		time.Sleep(200 * time.Millisecond)
	}

	creds, err := h.Registry().Add(context.Background(), "cloud-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	d := startDevice(t, creds, "tcp://"+h.MQTTAddr())
	start := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	for i := 0; i < 2; i++ {
		ws := start.Add(time.Duration(i) * time.Second)
		rec, _ := json.Marshal(map[string]any{"pipeline": "machine", "key": "s1", "start": ws, "end": ws.Add(time.Second), "firing": "final",
			"fields": map[string]map[string]float64{"vibration": {"max": 0.6}, "current": {"mean": 10}}})
		if _, err := d.Outbox.Append(context.Background(), []outbox.Item{{Stream: "windows", EventTime: ws.Add(time.Second), Data: rec}}); err != nil {
			t.Fatal(err)
		}
	}
	d.WaitDrained(t, 20*time.Second)

	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.AllowAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	topic := cfg.Kafka.TopicPrefix + "labels"
	for i, v := range []string{
		fmt.Sprintf(`{"device":"cloud-1","pipeline":"machine","key":"s1","window_start":%q,"label":0}`, start.Format(time.RFC3339)),
		fmt.Sprintf(`{"device":"cloud-1","pipeline":"machine","key":"s1","event_time":%q,"label":1}`, start.Add(1500*time.Millisecond).Format(time.RFC3339Nano)),
		fmt.Sprintf(`{"device":"cloud-1","pipeline":"machine","key":"nope","window_start":%q,"label":1}`, start.Format(time.RFC3339)),
		`this is not a label`,
	} {
		// What the trainer takes is what label.schema.json publishes.
		if err := schematest.Validate(schematest.Shared(t).Label, []byte(v)); (err == nil) != (i < 3) {
			t.Errorf("label.schema.json on %s: %v", v, err)
		}
		if err := cl.ProduceSync(context.Background(), &kgo.Record{Topic: topic, Value: []byte(v)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	deadline = time.Now().Add(30 * time.Second)
	for {
		st := status()
		if st.Labelled == 2 && st.Join.Matched == 2 && st.Join.UnmatchedLabels == 1 && h.Stats().BadLabels == 1 {
			t.Logf("joined from Kafka: %+v", st.Join)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("trainer status %+v, bad labels %d: want 2 labelled, 1 unmatched, 1 bad", st, h.Stats().BadLabels)
		}
		time.Sleep(300 * time.Millisecond)
	}
}
