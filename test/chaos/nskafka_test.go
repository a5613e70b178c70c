package chaos

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outpost-edge/outpost/test/service"
	"github.com/outpost-edge/outpost/test/testenv"
)

// nsKafka is a dedicated single-node KRaft broker of one test, running in
// a netLink's namespace: it listens only on the namespace's veth address
// (the controller on the namespace's own loopback), so the hub reaches it
// across the link. Its ports are fixed: the namespace has nothing else.
type nsKafka struct {
	*service.Process
	Addr string
	Dir  string
	spec service.Spec
}

// startNSKafka formats a KRaft log directory and starts the broker in l.
func startNSKafka(t *testing.T, l *netLink) *nsKafka {
	t.Helper()
	libs, err := testenv.KafkaLibs()
	if err != nil {
		t.Fatal(err)
	}
	root, err := testenv.Root()
	if err != nil {
		t.Fatal(err)
	}
	java := ""
	if h := os.Getenv("JAVA_HOME"); h != "" {
		if _, err := os.Stat(filepath.Join(h, "bin", "java")); err == nil {
			java = filepath.Join(h, "bin", "java")
		}
	}
	if java == "" {
		if java, err = exec.LookPath("java"); err != nil {
			t.Fatalf("kafka: no java on PATH or in JAVA_HOME: %v", err)
		}
	}
	ip, err := exec.LookPath("ip")
	if err != nil {
		t.Fatalf("kafka in a namespace needs `ip`: %v", err)
	}
	dir := t.TempDir()
	addr := l.NSIP + ":9092"
	props := strings.Join([]string{
		"process.roles=broker,controller",
		"node.id=1",
		"controller.quorum.voters=1@127.0.0.1:9093",
		"listeners=PLAINTEXT://" + addr + ",CONTROLLER://127.0.0.1:9093",
		"advertised.listeners=PLAINTEXT://" + addr,
		"controller.listener.names=CONTROLLER",
		"listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
		"inter.broker.listener.name=PLAINTEXT",
		"log.dirs=" + filepath.Join(dir, "data"),
		"offsets.topic.replication.factor=1",
		"transaction.state.log.replication.factor=1",
		"transaction.state.log.min.isr=1",
		"share.coordinator.state.topic.replication.factor=1",
		"share.coordinator.state.topic.min.isr=1",
		"group.initial.rebalance.delay.ms=0",
		"num.partitions=1",
		"auto.create.topics.enable=false",
		"",
	}, "\n")
	propsPath := filepath.Join(dir, "server.properties")
	if err := os.WriteFile(propsPath, []byte(props), 0o644); err != nil {
		t.Fatal(err)
	}
	cp := filepath.Join(libs, "*")
	logCfg := "-Dlog4j2.configurationFile=" + filepath.Join(root, "deploy", "kafka", "log4j2.properties")
	format := exec.Command(java, logCfg, "-cp", cp, "kafka.tools.StorageTool", "format", "-t", clusterID(), "-c", propsPath)
	if out, err := format.CombinedOutput(); err != nil {
		t.Fatalf("kafka: format storage: %v\n%s", err, out)
	}
	// `ip netns exec` execs the JVM itself, so the PID is the broker's.
	k := &nsKafka{Addr: addr, Dir: dir, spec: service.Spec{
		Name: "kafka-" + l.NS,
		Path: ip,
		Args: []string{"netns", "exec", l.NS, java, "-Xms256m", "-Xmx512m", "-XX:+UseG1GC", "-XX:TieredStopAtLevel=1",
			"-Djava.awt.headless=true", logCfg, "-cp", cp, "kafka.Kafka", propsPath},
		LogPath: filepath.Join(dir, "kafka.log"),
		Ready:   kafkaReady(addr),
		Timeout: 120 * time.Second,
	}}
	start := time.Now()
	if k.Process, err = service.Start(context.Background(), k.spec); err != nil {
		t.Fatal(err)
	}
	t.Logf("kafka %s ready in %s (pid %d, namespace %s)", addr, time.Since(start).Round(time.Millisecond), k.PID(), l.NS)
	t.Cleanup(func() { k.Process.Stop() })
	return k
}

// Restart starts the broker again on the same data directory and ports
// (after a Kill: a crash).
func (k *nsKafka) Restart(t *testing.T) time.Duration {
	t.Helper()
	k.Process.Stop()
	k.spec.LogPath = filepath.Join(k.Dir, fmt.Sprintf("kafka-%d.log", time.Now().UnixNano()))
	start := time.Now()
	p, err := service.Start(context.Background(), k.spec)
	if err != nil {
		t.Fatal(err)
	}
	k.Process = p
	return time.Since(start)
}

func kafkaReady(addr string) func(context.Context) error {
	return func(ctx context.Context) error {
		cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.DialTimeout(time.Second))
		if err != nil {
			return err
		}
		defer cl.Close()
		bs, err := kadm.NewClient(cl).ListBrokers(ctx)
		if err != nil {
			return err
		}
		if len(bs) == 0 {
			return fmt.Errorf("no brokers registered yet")
		}
		return nil
	}
}

// clusterID is a random KRaft cluster id: 16 bytes, base64url, not
// starting with '-' (it would read as an option).
func clusterID() string {
	for {
		b := make([]byte, 16)
		_, _ = rand.Read(b)
		if id := base64.RawURLEncoding.EncodeToString(b); id[0] != '-' {
			return id
		}
	}
}
