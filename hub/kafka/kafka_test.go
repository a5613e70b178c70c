package kafka

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/outpost-edge/outpost/test/kafkatest"
)

func TestMain(m *testing.M) { os.Exit(kafkatest.Main(m)) }

// topicsOf lists the prefix's topics once all of them are visible:
// metadata of a just-created topic can lag behind the create response.
func topicsOf(t *testing.T, c *Conn, prefix string) map[string]int {
	t.Helper()
	var out map[string]int
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if out = listTopics(t, c, prefix); len(out) == len(Streams)+1 {
			break
		}
	}
	return out
}

func listTopics(t *testing.T, c *Conn, prefix string) map[string]int {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	details, err := kadm.NewClient(c.Client).ListTopics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, d := range details.Sorted() {
		if len(d.Topic) > len(prefix) && d.Topic[:len(prefix)] == prefix {
			out[d.Topic] = len(d.Partitions)
		}
	}
	return out
}

// TestConnectCreatesTopicsOnRealKafka runs twice against the real broker:
// the second start must find the topics and carry on.
func TestConnectCreatesTopicsOnRealKafka(t *testing.T) {
	prefix := "kt" + time.Now().Format("150405.000000") + "."
	cfg := Config{Brokers: kafkatest.Brokers(t), TopicPrefix: prefix, Partitions: 2, Replication: 1}
	for i := 0; i < 2; i++ {
		c, err := Connect(context.Background(), cfg, "", slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatalf("connect %d: %v", i, err)
		}
		if c.Embedded() {
			t.Fatal("started the embedded broker although brokers were given")
		}
		got := topicsOf(t, c, prefix)
		c.Close()
		if len(got) != len(Streams)+1 {
			t.Fatalf("connect %d: topics = %v, want %d", i, got, len(Streams))
		}
		for topic, parts := range got {
			if topic == prefix+CheckpointTopic {
				if parts != 1 {
					t.Errorf("checkpoint topic has %d partitions, want 1", parts)
				}
				continue
			}
			if parts != 2 {
				t.Errorf("%s has %d partitions, want 2", topic, parts)
			}
		}
	}
}

func TestEmbeddedBroker(t *testing.T) {
	c, err := Connect(context.Background(), Config{TopicPrefix: "outpost.", Partitions: 1, Replication: 1}, t.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !c.Embedded() || len(c.Brokers) != 1 {
		t.Fatalf("embedded = %v, brokers = %v", c.Embedded(), c.Brokers)
	}
	if got := topicsOf(t, c, "outpost."); len(got) != len(Streams)+1 {
		t.Fatalf("topics = %v", got)
	}
}

// The development broker listens where kafka.embedded_port says, and a
// port already taken is an error that names the setting.
func TestEmbeddedBrokerOnAFixedPort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cfg := Config{TopicPrefix: "outpost.", Partitions: 1, Replication: 1, EmbeddedPort: port}
	c, err := Connect(context.Background(), cfg, t.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if want := fmt.Sprintf("127.0.0.1:%d", port); len(c.Brokers) != 1 || c.Brokers[0] != want {
		t.Fatalf("brokers = %v, want [%s]", c.Brokers, want)
	}
	_, err = Connect(context.Background(), cfg, t.TempDir(), slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "kafka.embedded_port") {
		t.Fatalf("a second broker on the same port: %v, want an error naming kafka.embedded_port", err)
	}
}

func TestUnreachableKafkaIsAnError(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_, err := Connect(ctx, Config{Brokers: []string{"127.0.0.1:1"}, TopicPrefix: "x.", Partitions: 1, Replication: 1}, "", slog.New(slog.DiscardHandler))
	if err == nil {
		t.Fatal("connect to a closed port succeeded")
	}
}
