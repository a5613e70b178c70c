// Package kafkatest runs a real single-node Apache Kafka broker (KRaft, from
// the official Maven artifacts) with the machine's JDK. `make test` starts
// one broker for the whole run and hands its address to every package
// through OUTPOST_TEST_KAFKA; a package run alone starts its own.
package kafkatest

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outpost-edge/outpost/test/pki"
	"github.com/outpost-edge/outpost/test/service"
	"github.com/outpost-edge/outpost/test/testenv"
)

// EnvBrokers names the variable that carries a shared broker's address;
// EnvSASL its SASL/PLAIN listener.
const (
	EnvBrokers = "OUTPOST_TEST_KAFKA"
	EnvSASL    = "OUTPOST_TEST_KAFKA_SASL"
	// EnvTLS carries the mTLS listener; EnvTLSDir the directory holding
	// the test CA (ca.pem) and the client pair (client.pem, client-key.pem).
	EnvTLS    = "OUTPOST_TEST_KAFKA_TLS"
	EnvTLSDir = "OUTPOST_TEST_KAFKA_TLS_DIR"
)

// TLSFiles are the PEM files a client of the mTLS listener uses.
type TLSFiles struct{ CAFile, CertFile, KeyFile string }

func tlsFiles(dir string) TLSFiles {
	return TLSFiles{CAFile: filepath.Join(dir, "ca.pem"), CertFile: filepath.Join(dir, "client.pem"), KeyFile: filepath.Join(dir, "client-key.pem")}
}

// The SASL/PLAIN user of the test broker (a test credential, not a secret).
const (
	SASLUser     = "outpost-hub"
	SASLPassword = "test-only-password"
)

// Broker is a running Kafka.
type Broker struct {
	*service.Process
	Addr string
	// SASLAddr is a second listener that requires SASL/PLAIN with
	// SASLUser and SASLPassword, for testing clients' authentication.
	SASLAddr string
	// TLSAddr is a third listener that requires TLS with a client
	// certificate signed by the test CA in TLSDir.
	TLSAddr string
	TLSDir  string
	Dir     string // configuration, data and log
	spec    service.Spec
}

// Restart stops the broker and starts it again on the same ports and data,
// as an operator restarting Kafka would.
func (b *Broker) Restart(ctx context.Context) error {
	b.Stop()
	b.spec.LogPath = filepath.Join(b.Dir, fmt.Sprintf("kafka-%d.log", time.Now().UnixNano()))
	p, err := service.Start(ctx, b.spec)
	if err != nil {
		return err
	}
	b.Process = p
	return nil
}

// Start formats a KRaft log directory under dir and runs a combined
// broker+controller node on free loopback ports.
func Start(ctx context.Context, dir string) (*Broker, error) {
	libs, err := testenv.KafkaLibs()
	if err != nil {
		return nil, err
	}
	root, err := testenv.Root()
	if err != nil {
		return nil, err
	}
	java, err := javaBinary()
	if err != nil {
		return nil, err
	}
	port, err := service.FreePort()
	if err != nil {
		return nil, err
	}
	cport, err := service.FreePort()
	if err != nil {
		return nil, err
	}
	sport, err := service.FreePort()
	if err != nil {
		return nil, err
	}
	tport, err := service.FreePort()
	if err != nil {
		return nil, err
	}
	saslAddr, tlsAddr := service.Addr(sport), service.Addr(tport)
	addr := service.Addr(port)
	tlsDir := filepath.Join(dir, "tls")
	keystore, err := writePKI(tlsDir)
	if err != nil {
		return nil, err
	}
	props := strings.Join([]string{
		"process.roles=broker,controller",
		"node.id=1",
		"controller.quorum.voters=1@" + service.Addr(cport),
		"listeners=PLAINTEXT://" + addr + ",CONTROLLER://" + service.Addr(cport) + ",SASL_PLAINTEXT://" + saslAddr + ",SSL://" + tlsAddr,
		"advertised.listeners=PLAINTEXT://" + addr + ",SASL_PLAINTEXT://" + saslAddr + ",SSL://" + tlsAddr,
		"controller.listener.names=CONTROLLER",
		"listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,SSL:SSL",
		// PEM files, no JKS: the test CA is generated per run.
		"listener.name.ssl.ssl.keystore.type=PEM",
		"listener.name.ssl.ssl.keystore.location=" + keystore,
		"listener.name.ssl.ssl.truststore.type=PEM",
		"listener.name.ssl.ssl.truststore.location=" + filepath.Join(tlsDir, "ca.pem"),
		"listener.name.ssl.ssl.client.auth=required",
		"sasl.enabled.mechanisms=PLAIN",
		"listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_" + SASLUser + "=\"" + SASLPassword + "\";",
		"inter.broker.listener.name=PLAINTEXT",
		"log.dirs=" + filepath.Join(dir, "data"),
		// One node: every internal topic has a single replica.
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
		return nil, err
	}
	cp := filepath.Join(libs, "*")
	logCfg := "-Dlog4j2.configurationFile=" + filepath.Join(root, "deploy", "kafka", "log4j2.properties")
	format := exec.CommandContext(ctx, java, logCfg, "-cp", cp, "kafka.tools.StorageTool", "format",
		"-t", clusterID(), "-c", propsPath)
	if out, err := format.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("kafka: format storage: %w\n%s", err, out)
	}
	spec := service.Spec{
		Name: "kafka",
		Path: java,
		// Small heap: the test broker shares two cores and the machine
		// with everything else a test run starts.
		Args:    []string{"-Xms256m", "-Xmx768m", "-XX:+UseG1GC", "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true", logCfg, "-cp", cp, "kafka.Kafka", propsPath},
		LogPath: filepath.Join(dir, "kafka.log"),
		Ready:   ready(addr),
		Timeout: 90 * time.Second,
	}
	p, err := service.Start(ctx, spec)
	if err != nil {
		return nil, err
	}
	return &Broker{Process: p, Addr: addr, SASLAddr: saslAddr, TLSAddr: tlsAddr, TLSDir: tlsDir, Dir: dir, spec: spec}, nil
}

// writePKI makes the test CA, the broker's keystore (key and certificate
// in one PEM file, as Kafka wants it) and a client pair in dir.
func writePKI(dir string) (keystore string, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	ca, err := pki.New(dir)
	if err != nil {
		return "", err
	}
	cert, key, err := ca.Issue("kafka", true)
	if err != nil {
		return "", err
	}
	var pemData []byte
	for _, f := range []string{key, cert} {
		b, err := os.ReadFile(f)
		if err != nil {
			return "", err
		}
		pemData = append(pemData, b...)
	}
	keystore = filepath.Join(dir, "kafka-keystore.pem")
	if err := os.WriteFile(keystore, pemData, 0o600); err != nil {
		return "", err
	}
	if _, _, err := ca.Issue("client", false); err != nil {
		return "", err
	}
	return keystore, nil
}

// ready succeeds once the broker answers metadata requests and lists itself.
func ready(addr string) func(context.Context) error {
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

func javaBinary() (string, error) {
	if h := os.Getenv("JAVA_HOME"); h != "" {
		if p := filepath.Join(h, "bin", "java"); fileExists(p) {
			return p, nil
		}
	}
	p, err := exec.LookPath("java")
	if err != nil {
		return "", fmt.Errorf("kafka: no java on PATH or in JAVA_HOME (Kafka 4 needs Java 17+): %w", err)
	}
	return p, nil
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// clusterID is a random KRaft cluster id: 16 bytes, base64url, no padding.
// One starting with '-' would read as an option to kafka-storage, so those
// are drawn again.
func clusterID() string {
	for {
		b := make([]byte, 16)
		_, _ = rand.Read(b)
		if id := base64.RawURLEncoding.EncodeToString(b); id[0] != '-' {
			return id
		}
	}
}

var (
	sharedOnce sync.Once
	shared     *Broker
	sharedErr  error
)

// Brokers returns the seed brokers tests should use: the run-wide broker
// named by OUTPOST_TEST_KAFKA, or one started for this test binary (stopped
// by Main). An unreachable broker fails the test; it never skips.
func Brokers(tb testing.TB) []string {
	tb.Helper()
	if env := os.Getenv(EnvBrokers); env != "" {
		addrs := strings.Split(env, ",")
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if err := ready(addrs[0])(ctx); err != nil {
			tb.Fatalf("kafkatest: %s=%s is not answering: %v", EnvBrokers, env, err)
		}
		return addrs
	}
	sharedOnce.Do(func() {
		dir, err := os.MkdirTemp("", "outpost-kafka-")
		if err != nil {
			sharedErr = err
			return
		}
		shared, sharedErr = Start(context.Background(), dir)
	})
	if sharedErr != nil {
		tb.Fatalf("kafkatest: %v", sharedErr)
	}
	return []string{shared.Addr}
}

// SASLBrokers is the SASL/PLAIN listener of the same broker Brokers returns.
func SASLBrokers(tb testing.TB) []string {
	tb.Helper()
	if env := os.Getenv(EnvBrokers); env != "" {
		sasl := os.Getenv(EnvSASL)
		if sasl == "" {
			tb.Fatalf("kafkatest: %s is set but %s is not", EnvBrokers, EnvSASL)
		}
		return strings.Split(sasl, ",")
	}
	Brokers(tb)
	return []string{shared.SASLAddr}
}

// TLSBrokers is the mTLS listener of the same broker Brokers returns, with
// the files a client needs.
func TLSBrokers(tb testing.TB) ([]string, TLSFiles) {
	tb.Helper()
	if env := os.Getenv(EnvBrokers); env != "" {
		addr, dir := os.Getenv(EnvTLS), os.Getenv(EnvTLSDir)
		if addr == "" || dir == "" {
			tb.Fatalf("kafkatest: %s is set but %s or %s is not", EnvBrokers, EnvTLS, EnvTLSDir)
		}
		return strings.Split(addr, ","), tlsFiles(dir)
	}
	Brokers(tb)
	return []string{shared.TLSAddr}, tlsFiles(shared.TLSDir)
}

// Env is the environment that hands this broker to child test processes.
func (b *Broker) Env() []string {
	return []string{EnvBrokers + "=" + b.Addr, EnvSASL + "=" + b.SASLAddr, EnvTLS + "=" + b.TLSAddr, EnvTLSDir + "=" + b.TLSDir}
}

// Main runs a package's tests and stops the broker Brokers may have started.
// Use it from TestMain: os.Exit(kafkatest.Main(m)).
func Main(m *testing.M) int {
	code := m.Run()
	if shared != nil {
		shared.Stop()
		_ = os.RemoveAll(shared.Dir)
	}
	return code
}
