package pipeline

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outpost-edge/outpost/test/kafkatest"
	"github.com/outpost-edge/outpost/test/schematest"
	"github.com/outpost-edge/outpost/test/service"
	"github.com/outpost-edge/outpost/test/testenv"
)

func buildAgent(t *testing.T) string { return build(t, "./agent/cmd/outpost-agent") }

// build compiles a command of this module into t's temp dir.
func build(t *testing.T, pkg string) string {
	t.Helper()
	root, err := testenv.Root()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-o", bin, pkg)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", pkg, err, out)
	}
	return bin
}

// TestAgentSurvivesKill9 kills the agent with SIGKILL 20 times while a
// sensor stream is written to the file it tails. Kafka must end up with
// every window exactly once and complete: no window lost, none emitted
// twice, no event missing or counted twice.
func TestAgentSurvivesKill9(t *testing.T) {
	brokers := kafkatest.Brokers(t)
	cfg := hubConfig(t, brokers, t.TempDir())
	h := startHub(t, cfg)
	defer h.Close()
	creds, err := h.Registry().Add(context.Background(), "edge-crash", nil)
	if err != nil {
		t.Fatal(err)
	}
	bin := buildAgent(t)
	dir := t.TempDir()
	input := filepath.Join(dir, "sensors.jsonl")
	if err := os.WriteFile(input, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`
device: {id: edge-crash}
data_dir: %s
hub: {url: "tcp://%s", username: %s, password: %s}
uplink: {ack_timeout: 1s}
metrics: {listen: ""}
log: {level: warn}
pipelines:
  - name: crash
    source: {type: file, file: {path: %s, from_start: true}}
    decode: {key_field: k, time_field: ts, fields: [v]}
    window: {kind: tumbling, size: 1s}
    aggregations: [count, sum]
`, filepath.Join(dir, "data"), h.MQTTAddr(), creds.Username, creds.Password, input)), 0o644); err != nil {
		t.Fatal(err)
	}

	// The sensor stream: two keys, each an event every 100 ms of event
	// time, written at about 200 lines per second of wall time.
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	const lines = 2400 // 120 s of event time
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		f, _ := os.OpenFile(input, os.O_APPEND|os.O_WRONLY, 0)
		defer f.Close()
		for i := 0; i < lines; i++ {
			ts := base.Add(time.Duration(i) * 50 * time.Millisecond).Format(time.RFC3339Nano)
			fmt.Fprintf(f, `{"k":"k%d","ts":"%s","v":%d}`+"\n", i%2, ts, i)
			if i%10 == 9 {
				time.Sleep(50 * time.Millisecond)
			}
		}
		// One event past the end closes the last full second.
		fmt.Fprintf(f, `{"k":"k0","ts":"%s","v":0}`+"\n", base.Add(time.Hour).Format(time.RFC3339Nano))
	}()

	start := func() *exec.Cmd {
		cmd := exec.Command(bin, "--config", conf)
		logf, _ := os.OpenFile(filepath.Join(dir, "agent.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		cmd.Stdout, cmd.Stderr = logf, logf
		service.DiesWithTest(cmd)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	rng := rand.New(rand.NewPCG(42, 7))
	for i := 0; i < 20; i++ {
		cmd := start()
		time.Sleep(time.Duration(150+rng.IntN(350)) * time.Millisecond)
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
	}
	wg.Wait()
	final := start()
	defer func() { _ = final.Process.Signal(syscall.SIGTERM); _ = final.Wait() }()

	// 120 s × 2 keys = 240 windows of 10 events each.
	const want = 240
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(cfg.Kafka.TopicPrefix+"windows"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	seen := map[string]int{}
	total := 0
	collect := func(r *kgo.Record) {
		schematest.Check(t, r.Topic, r.Value) // the agent binary's windows
		var rec struct {
			Data struct {
				Key    string
				Start  time.Time
				Fields map[string]map[string]float64
			}
		}
		if err := json.Unmarshal(r.Value, &rec); err != nil {
			t.Errorf("bad record: %v", err)
			return
		}
		id := rec.Data.Key + "@" + rec.Data.Start.Format(time.RFC3339)
		seen[id]++
		total++
		if c := rec.Data.Fields["v"]["count"]; c != 10 {
			t.Errorf("window %s counted %v events, want 10", id, c)
		}
	}
	deadline := time.Now().Add(90 * time.Second)
	for total < want && time.Now().Before(deadline) {
		fctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		cl.PollFetches(fctx).EachRecord(collect)
		cancel()
	}
	// Linger: a duplicate would arrive after the last expected record.
	fctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	cl.PollFetches(fctx).EachRecord(collect)
	cancel()
	var dups []string
	for id, n := range seen {
		if n > 1 && len(dups) < 10 {
			dups = append(dups, id)
		}
	}
	if len(seen) != want || total != want || len(dups) > 0 {
		logb, _ := os.ReadFile(filepath.Join(dir, "agent.log"))
		t.Fatalf("after 20 kills: %d distinct windows, %d records, duplicates %v; want %d once each\nagent log tail:\n%s",
			len(seen), total, dups, want, tail(string(logb), 30))
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
