// Package kafka connects the hub to Kafka: a real cluster, or an embedded
// in-process kfake broker so that a first run needs nothing installed.
package kafka

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/outpost-edge/outpost/deploy/config"
)

// ErrConfig means the Kafka settings cannot be used.
var ErrConfig = errors.New("invalid kafka settings")

// Config is the kafka section of the hub config.
type Config struct {
	Brokers     []string `yaml:"brokers" usage:"Kafka bootstrap brokers, comma separated; empty starts the embedded development broker"`
	TopicPrefix string   `yaml:"topic_prefix" usage:"prefix of every topic, e.g. outpost. gives outpost.windows"`
	Partitions  int      `yaml:"partitions" usage:"partitions of each topic the hub creates"`
	Replication int      `yaml:"replication" usage:"replication factor of each topic the hub creates"`
	SASL        SASL     `yaml:"sasl"`
	TLS         TLS      `yaml:"tls"`
	// EmbeddedPort fixes the development broker's port, so that a demo's
	// consumers (kcat, a notebook) know where to connect.
	EmbeddedPort int `yaml:"embedded_port" usage:"loopback port of the embedded development Kafka when kafka.brokers is empty (0: any free port, shown in the log and /v1/stats)"`
}

// TLS encrypts the connection to the brokers and, with a client
// certificate, authenticates the hub (mTLS). It combines with SASL
// (SASL_SSL).
type TLS struct {
	Enabled  bool   `yaml:"enabled" usage:"connect over TLS, verifying the brokers against the system roots unless ca_file is set"`
	CAFile   string `yaml:"ca_file" usage:"PEM CA bundle to verify the brokers with; implies enabled"`
	CertFile string `yaml:"cert_file" usage:"PEM client certificate for mTLS; implies enabled"`
	KeyFile  string `yaml:"key_file" usage:"PEM private key of the client certificate"`
}

func (t TLS) client() config.ClientTLS {
	return config.ClientTLS{CAFile: t.CAFile, CertFile: t.CertFile, KeyFile: t.KeyFile}
}

// On reports whether the hub connects to Kafka over TLS.
func (t TLS) On() bool { return t.Enabled || t.client().On() }

// Validate reports wrong fields under path.
func (t TLS) Validate(path string, errs *config.Errors) { t.client().Validate(path, errs) }

// Build returns the client's tls.Config, or nil without TLS.
func (t TLS) Build() (*tls.Config, error) {
	if !t.On() {
		return nil, nil
	}
	tc, err := t.client().Build()
	if err != nil {
		return nil, fmt.Errorf("kafka: %w", err)
	}
	if tc == nil {
		tc = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	return tc, nil
}

// SASL authenticates the hub to a secured cluster.
type SASL struct {
	Mechanism string `yaml:"mechanism" usage:"SASL mechanism: empty (none), plain, scram-sha-256 or scram-sha-512"`
	Username  string `yaml:"username" usage:"SASL username"`
	Password  string `yaml:"password" usage:"SASL password (better set through the environment)"`
}

// ClientOpts are the connection options every hub client uses.
func (c Config) ClientOpts(brokers []string) ([]kgo.Opt, error) {
	opts := []kgo.Opt{kgo.SeedBrokers(brokers...)}
	tc, err := c.TLS.Build()
	if err != nil {
		return nil, err
	}
	if tc != nil {
		opts = append(opts, kgo.DialTLSConfig(tc))
	}
	s := c.SASL
	switch s.Mechanism {
	case "":
		return opts, nil
	case "plain":
		opts = append(opts, kgo.SASL(plain.Auth{User: s.Username, Pass: s.Password}.AsMechanism()))
	case "scram-sha-256":
		opts = append(opts, kgo.SASL(scram.Auth{User: s.Username, Pass: s.Password}.AsSha256Mechanism()))
	case "scram-sha-512":
		opts = append(opts, kgo.SASL(scram.Auth{User: s.Username, Pass: s.Password}.AsSha512Mechanism()))
	default:
		return nil, fmt.Errorf("kafka: %w: sasl mechanism %q", ErrConfig, s.Mechanism)
	}
	return opts, nil
}

// Streams are the record topics cloud teams consume, without the prefix.
var Streams = []string{"windows", "inferences", "telemetry", "events", "late", "labels", "deadletter"}

// CheckpointTopic is the compacted topic of the bridge's exactly-once
// checkpoints, without the prefix.
const CheckpointTopic = "bridge.checkpoint"

// Topics returns the full topic names for the configured prefix.
func (c Config) Topics() []string {
	out := make([]string, len(Streams))
	for i, s := range Streams {
		out[i] = c.TopicPrefix + s
	}
	return out
}

// Conn is a connected client plus, in development, the embedded broker.
type Conn struct {
	Client  *kgo.Client
	Brokers []string
	// Opts connect another client the same way (brokers, SASL).
	Opts     []kgo.Opt
	embedded *kfake.Cluster
	log      *slog.Logger
}

// Connect reaches the configured cluster (or starts the embedded one) and
// makes sure the record topics exist.
func Connect(ctx context.Context, cfg Config, dataDir string, log *slog.Logger) (*Conn, error) {
	c := &Conn{Brokers: cfg.Brokers, log: log}
	if len(cfg.Brokers) == 0 {
		opts := []kfake.Opt{kfake.NumBrokers(1)}
		if cfg.EmbeddedPort > 0 {
			opts = append(opts, kfake.Ports(cfg.EmbeddedPort))
		}
		if dataDir != "" {
			opts = append(opts, kfake.DataDir(dataDir))
		}
		cl, err := kfake.NewCluster(opts...)
		if err != nil {
			return nil, fmt.Errorf("kafka: start embedded broker (kafka.embedded_port %d): %w", cfg.EmbeddedPort, err)
		}
		c.embedded = cl
		c.Brokers = cl.ListenAddrs()
		log.Warn("using the embedded development Kafka (kfake); it is for demos and development only — set kafka.brokers for production",
			"addr", strings.Join(c.Brokers, ","))
	}
	copts, err := cfg.ClientOpts(c.Brokers)
	if err != nil {
		c.Close()
		return nil, err
	}
	if c.embedded != nil {
		copts = copts[:1] // the development broker has no authentication or TLS
	}
	c.Opts = copts
	client, err := kgo.NewClient(copts...)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("kafka: client: %w", err)
	}
	c.Client = client
	if err := c.ensureTopics(ctx, cfg); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func (c *Conn) ensureTopics(ctx context.Context, cfg Config) error {
	if err := c.createTopics(ctx, int32(cfg.Partitions), int16(cfg.Replication), nil, cfg.Topics()...); err != nil {
		return err
	}
	// One partition keeps checkpoints totally ordered; compaction keeps the
	// latest checkpoint per key forever.
	compact := "compact"
	return c.createTopics(ctx, 1, int16(cfg.Replication), map[string]*string{"cleanup.policy": &compact}, cfg.TopicPrefix+CheckpointTopic)
}

func (c *Conn) createTopics(ctx context.Context, partitions int32, replication int16, configs map[string]*string, topics ...string) error {
	resps, err := kadm.NewClient(c.Client).CreateTopics(ctx, partitions, replication, configs, topics...)
	if err != nil {
		return fmt.Errorf("kafka: create topics on %s: %w", strings.Join(c.Brokers, ","), err)
	}
	for _, r := range resps.Sorted() {
		switch {
		case r.Err == nil:
			c.log.Info("created kafka topic", "topic", r.Topic, "partitions", partitions)
		case errors.Is(r.Err, kerr.TopicAlreadyExists):
		default:
			return fmt.Errorf("kafka: create topic %s: %w", r.Topic, r.Err)
		}
	}
	return nil
}

// Embedded reports whether the hub runs its own development broker.
func (c *Conn) Embedded() bool { return c.embedded != nil }

// Close releases the client and stops the embedded broker, if any.
func (c *Conn) Close() {
	if c.Client != nil {
		c.Client.Close()
	}
	if c.embedded != nil {
		c.embedded.Close()
	}
}
