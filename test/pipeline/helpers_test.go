// Package pipeline tests the hub's data path end to end against the real
// Kafka broker: MQTT in, JetStream, acks, the transactional bridge, Kafka out.
package pipeline

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outpost-edge/outpost/hub"
	"github.com/outpost-edge/outpost/test/fleettest"
	"github.com/outpost-edge/outpost/test/kafkatest"
	"github.com/outpost-edge/outpost/test/schematest"
)

func TestMain(m *testing.M) { os.Exit(kafkatest.Main(m)) }

// hubConfig is a hub on free ports with its own topic prefix on the real
// broker, so tests sharing the broker never see each other's records.
func hubConfig(t *testing.T, brokers []string, dataDir string) *hub.Config {
	cfg := hub.Defaults()
	cfg.DataDir = dataDir
	cfg.Broker.ServerName = "hub-" + strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
	cfg.Broker.NATSPort, cfg.Broker.MQTTPort = -1, -1
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.Kafka.Brokers = brokers
	cfg.Kafka.TopicPrefix = fmt.Sprintf("t%d.", time.Now().UnixNano())
	cfg.Kafka.Partitions = 2
	cfg.Log.Level = "warn"
	return cfg
}

func startHub(t *testing.T, cfg *hub.Config, opts ...hub.Options) *hub.Hub {
	t.Helper()
	// MQTT port -1 would pick a new port on every restart; pin the first.
	h, err := hub.Start(context.Background(), cfg, testLogger(t), opts...)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Broker.MQTTPort == -1 {
		_, port, _ := strings.Cut(h.MQTTAddr(), ":")
		cfg.Broker.MQTTPort, _ = strconv.Atoi(port)
	}
	return h
}

func testLogger(t *testing.T) *slog.Logger { return fleettest.Logger(t) }

// kafkaRecord is the value the bridge writes.
type kafkaRecord struct {
	Device string          `json:"device"`
	Epoch  string          `json:"epoch"`
	Stream string          `json:"stream"`
	Seq    uint64          `json:"seq"`
	Data   json.RawMessage `json:"data"`
}

// Schema validation of what tests read from Kafka. Every record that a
// real agent (agent.Run, the built outpost-agent binary, the flashed arm64
// agent) or the hub itself produced is validated against the published
// record.schema.json and its stream's data schema (schematest.Check):
// readAgentRecords (TestCertificateRenewalKeepsStreaming, TestArm64BundleEnrolsAndStreamsUnderQemu,
// TestSIGTERMLosesNoAcceptedLine), readInferences (inputs_test.go), the readers of
// TestAgentWindowsReachKafka (agent_test.go), TestAgentSurvivesKill9
// (crash_test.go), TestDriftIsDetectedAndRetrained (retrain_test.go), and
// the hub's own _hub events in TestWeekOfTrafficThroughASmallStream
// (fleetlife_test.go). readAll does not validate data: its callers read
// what test/fleettest devices wrote straight into an outbox
// ({"i":..,"v":..}, {"label":..} on any stream), which is no agent's
// output; TestBadInputIsDeadLetteredAndOthersFlow holds those to the
// envelope alone.

// readAll consumes topics read_committed until want distinct (device, seq)
// arrived or the deadline passes, and returns every record it saw. It
// does not validate the records' data (see above).
func readAll(t *testing.T, brokers []string, topics []string, want int, timeout time.Duration) (recs []kafkaRecord, headers []map[string]string) {
	t.Helper()
	return readRecords(t, brokers, topics, want, timeout, false)
}

// readAgentRecords is readAll for records real agents produced: each one
// is also validated against the published schemas.
func readAgentRecords(t *testing.T, brokers []string, topics []string, want int, timeout time.Duration) (recs []kafkaRecord, headers []map[string]string) {
	t.Helper()
	return readRecords(t, brokers, topics, want, timeout, true)
}

func readRecords(t *testing.T, brokers []string, topics []string, want int, timeout time.Duration, check bool) (recs []kafkaRecord, headers []map[string]string) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topics...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	seen := map[string]bool{}
	for len(seen) < want {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			break
		}
		fs.EachRecord(func(r *kgo.Record) {
			var kr kafkaRecord
			if err := json.Unmarshal(r.Value, &kr); err != nil {
				t.Errorf("record %s/%d@%d is not JSON: %v", r.Topic, r.Partition, r.Offset, err)
				return
			}
			if check {
				schematest.Check(t, r.Topic, r.Value)
			}
			h := map[string]string{}
			for _, hd := range r.Headers {
				h[hd.Key] = string(hd.Value)
			}
			recs = append(recs, kr)
			headers = append(headers, h)
			seen[kr.Device+":"+strconv.FormatUint(kr.Seq, 10)] = true
		})
	}
	// Linger briefly: duplicates would arrive after the last distinct record.
	ctx2, cancel2 := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel2()
	fs := cl.PollFetches(ctx2)
	fs.EachRecord(func(r *kgo.Record) {
		var kr kafkaRecord
		_ = json.Unmarshal(r.Value, &kr)
		if check {
			schematest.Check(t, r.Topic, r.Value)
		}
		recs = append(recs, kr)
		headers = append(headers, map[string]string{})
	})
	return recs, headers
}

// checkExactlyOnce requires every (device, seq) of devices×perDevice exactly once.
func checkExactlyOnce(t *testing.T, recs []kafkaRecord, devices []string, perDevice int) {
	t.Helper()
	count := map[string]int{}
	for _, r := range recs {
		count[r.Device+":"+strconv.FormatUint(r.Seq, 10)]++
	}
	lost, dup := 0, 0
	for _, d := range devices {
		for s := 1; s <= perDevice; s++ {
			switch n := count[d+":"+strconv.Itoa(s)]; {
			case n == 0:
				lost++
			case n > 1:
				dup++
			}
		}
	}
	if lost > 0 || dup > 0 || len(recs) != len(devices)*perDevice {
		t.Fatalf("exactly-once violated: %d lost, %d duplicated, %d records for %d expected", lost, dup, len(recs), len(devices)*perDevice)
	}
}
