package pipeline

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outpost-edge/outpost/agent"
	"github.com/outpost-edge/outpost/agent/ingest"
	"github.com/outpost-edge/outpost/agent/pipeline"
	"github.com/outpost-edge/outpost/test/kafkatest"
	"github.com/outpost-edge/outpost/test/schematest"
	"github.com/outpost-edge/outpost/test/service"
)

// TestAgentWindowsReachKafka runs the whole agent (agent.Run) with a
// tailed-file pipeline against the hub and the real Kafka broker: window
// results, late events, rejected lines and the agent's own telemetry
// arrive in their topics.
func TestAgentWindowsReachKafka(t *testing.T) {
	brokers := kafkatest.Brokers(t)
	cfg := hubConfig(t, brokers, t.TempDir())
	h := startHub(t, cfg)
	defer h.Close()
	creds, err := h.Registry().Add(context.Background(), "edge-1", nil)
	if err != nil {
		t.Fatal(err)
	}

	input := filepath.Join(t.TempDir(), "sensors.jsonl")
	var lines []string
	base := time.Now().UTC().Truncate(time.Minute).Add(-10 * time.Minute)
	for i := 0; i < 60; i++ { // 3 sensors × 20 s, one reading per second
		ts := base.Add(time.Duration(i/3) * time.Second).Format(time.RFC3339)
		lines = append(lines, fmt.Sprintf(`{"sensor":"s%d","ts":"%s","temp":%d}`, i%3, ts, 20+i%5))
	}
	lines = append(lines, `{"sensor":"s0","ts":"`+base.Add(time.Second).Format(time.RFC3339)+`","temp":99}`) // late
	lines = append(lines, `{"sensor":"s0","ts":"`+base.Format(time.RFC3339)+`","temp":"warm"}`)              // dead
	if err := os.WriteFile(input, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	acfg := agent.Defaults()
	acfg.Device.ID = "edge-1"
	acfg.DataDir = t.TempDir()
	acfg.Hub.URL = "tcp://" + h.MQTTAddr()
	acfg.Hub.Username, acfg.Hub.Password = creds.Username, creds.Password
	acfg.Uplink.AckTimeout = time.Second
	acfg.Report.Interval = time.Second // telemetry every second
	mport, _ := service.FreePort()
	acfg.Metrics.Listen = service.Addr(mport)
	acfg.Pipelines = []pipeline.Config{{
		Name:         "temps",
		Source:       ingest.SourceConfig{Type: "file", File: ingest.FileConfig{Path: input, FromStart: true}},
		Decode:       ingest.DecodeConfig{KeyField: "sensor", TimeField: "ts", Fields: []string{"temp"}, MaxSkew: time.Hour},
		Window:       pipeline.WindowConfig{Kind: "tumbling", Size: 5 * time.Second},
		Aggregations: []string{"count", "mean"},
	}}
	if err := acfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- agent.Run(ctx, acfg, testLogger(t)) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agent: %v", err)
		}
	}()

	// 20 s of data in 5 s windows: [0,5) [5,10) [10,15) close; [15,20) stays open.
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeTopics(cfg.Kafka.TopicPrefix+"windows", cfg.Kafka.TopicPrefix+"late", cfg.Kafka.TopicPrefix+"deadletter", cfg.Kafka.TopicPrefix+"telemetry"))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	byTopic := map[string][]map[string]any{}
	deadline := time.Now().Add(60 * time.Second)
	for (len(byTopic["windows"]) < 9 || len(byTopic["late"]) < 1 || len(byTopic["deadletter"]) < 1 || len(byTopic["telemetry"]) < 1) && time.Now().Before(deadline) {
		fctx, fcancel := context.WithTimeout(context.Background(), 2*time.Second)
		cl.PollFetches(fctx).EachRecord(func(r *kgo.Record) {
			schematest.Check(t, r.Topic, r.Value) // windows, late, dead and telemetry records of a real agent
			var v map[string]any
			if err := json.Unmarshal(r.Value, &v); err != nil {
				t.Errorf("%s: %v", r.Topic, err)
			}
			topic := r.Topic[strings.LastIndex(r.Topic, ".")+1:]
			byTopic[topic] = append(byTopic[topic], v)
		})
		fcancel()
	}
	if len(byTopic["windows"]) != 9 || len(byTopic["late"]) != 1 || len(byTopic["deadletter"]) != 1 || len(byTopic["telemetry"]) < 1 {
		t.Fatalf("windows=%d late=%d dead=%d telemetry=%d", len(byTopic["windows"]), len(byTopic["late"]), len(byTopic["deadletter"]), len(byTopic["telemetry"]))
	}
	// The default uplink compresses every batch (uplink.compress), and the
	// hub counts what came compressed.
	if st := h.Stats(); st.AckerEnvelopes == 0 || st.AckerCompressed != st.AckerEnvelopes {
		t.Fatalf("hub acked %d envelopes, %d of them compressed: want all", st.AckerEnvelopes, st.AckerCompressed)
	}
	if kind := byTopic["telemetry"][0]["data"].(map[string]any)["kind"]; kind != "agent_health" {
		t.Fatalf("telemetry kind = %v", kind)
	}
	for _, w := range byTopic["windows"] {
		data := w["data"].(map[string]any)
		f := data["fields"].(map[string]any)["temp"].(map[string]any)
		if w["device"] != "edge-1" || data["pipeline"] != "temps" || f["count"] != 5.0 {
			t.Fatalf("window record = %v", w)
		}
	}
	if reason := byTopic["deadletter"][0]["data"].(map[string]any)["reason"]; !strings.Contains(reason.(string), "temp") {
		t.Fatalf("dead letter reason = %v", reason)
	}
	resp, err := http.Get("http://" + acfg.Metrics.Listen + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`outpost_agent_windows_emitted_total{pipeline="temps"} 9`,
		`outpost_agent_events_total{pipeline="temps"} 61`,
		`outpost_agent_late_total{pipeline="temps"} 1`,
		`outpost_agent_rejected_total{pipeline="temps"} 1`,
		`outpost_agent_uplink_connected 1`,
		`outpost_agent_outbox_records`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("agent /metrics lacks %q", want)
		}
	}
	resp, err = http.Get("http://" + acfg.Metrics.Listen + "/healthz")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("healthz: %v %v", resp, err)
	}
	resp.Body.Close()
}
