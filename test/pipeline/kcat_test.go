package pipeline

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/test/kafkatest"
	"github.com/outpost-edge/outpost/test/testenv"
)

// readmeKcat is the kcat command the README gives cloud teams, joined
// into one line.
func readmeKcat(t *testing.T) string {
	t.Helper()
	root, err := testenv.Root()
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(readme), "Reading the stream with kcat:\n\n```sh\n")
	block, _, ok2 := strings.Cut(rest, "\n```")
	if !ok || !ok2 || !strings.HasPrefix(block, "kcat ") {
		t.Fatal("the README has no kcat example under \"Reading the stream with kcat:\"")
	}
	return strings.Join(strings.Fields(strings.ReplaceAll(block, "\\\n", " ")), " ")
}

// The README's kcat example runs as written (only the broker and the
// topic prefix differ) against records the hub bridged into the real
// broker: kcat prints each record's key, its CloudEvents headers and its
// value, and reads only committed transactions.
func TestReadmeKcatExample(t *testing.T) {
	brokers := kafkatest.Brokers(t)
	cfg := hubConfig(t, brokers, t.TempDir())
	h := startHub(t, cfg)
	defer h.Close()
	d := newDevice(t, h, "kcat-dev", "tcp://"+h.MQTTAddr())
	const n = 20
	d.Produce(t, "windows", n, 10, 10*time.Millisecond)
	d.WaitDrained(t, 60*time.Second)

	cmd := readmeKcat(t)
	if !strings.Contains(cmd, "-b kafka:9092") || !strings.Contains(cmd, "-t outpost.windows") {
		t.Fatalf("the README's command names no kafka:9092 broker or outpost.windows topic: %s", cmd)
	}
	cmd = strings.Replace(cmd, "kafka:9092", brokers[0], 1)
	cmd = strings.Replace(cmd, "outpost.windows", cfg.Kafka.TopicPrefix+"windows", 1)
	cmd += " -o beginning -e -q" // stop at the end of the topic, no banners
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "bash", "-c", cmd).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", cmd, err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 2*n {
		t.Fatalf("kcat printed %d lines, want %d (a key/header line and a value per record):\n%s", len(lines), 2*n, out)
	}
	for i := 0; i < len(lines); i += 2 {
		head, value := lines[i], lines[i+1]
		if !strings.HasPrefix(head, "key=kcat-dev ") || !strings.Contains(head, "ce_id=kcat-dev:") || !strings.Contains(head, "ce_type=dev.outpost.windows.v1") {
			t.Fatalf("record %d: %q lacks the key or the CloudEvents headers", i/2, head)
		}
		if !strings.HasPrefix(value, "{") || !strings.Contains(value, `"device":"kcat-dev"`) {
			t.Fatalf("record %d: value %q", i/2, value)
		}
	}
	t.Logf("%s\n%s\n%s", cmd, lines[0], lines[1])
}
