package hub

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"time"

	"github.com/outpost-edge/outpost/deploy/config"
	"github.com/outpost-edge/outpost/deploy/daemon"
	"github.com/outpost-edge/outpost/hub/bridge"
	"github.com/outpost-edge/outpost/hub/broker"
	"github.com/outpost-edge/outpost/hub/console"
	"github.com/outpost-edge/outpost/hub/devca"
	"github.com/outpost-edge/outpost/hub/ingest"
	"github.com/outpost-edge/outpost/hub/kafka"
	"github.com/outpost-edge/outpost/hub/trainer"
	"github.com/outpost-edge/outpost/hub/updates"
	"github.com/outpost-edge/outpost/sync/topics"
)

// Config is the whole typed configuration of outpost-hub.
type Config struct {
	DataDir string           `yaml:"data_dir" usage:"directory for the JetStream store and hub state"`
	Broker  broker.Config    `yaml:"broker"`
	Devices DevicesConfig    `yaml:"devices"`
	Ingest  ingest.Config    `yaml:"ingest"`
	Kafka   kafka.Config     `yaml:"kafka"`
	Bridge  bridge.Config    `yaml:"bridge"`
	HTTP    HTTPConfig       `yaml:"http"`
	Updates updates.Config   `yaml:"updates"`
	Trainer trainer.Config   `yaml:"trainer"`
	Console console.Config   `yaml:"console"`
	Log     daemon.LogConfig `yaml:"log"`
}

// DevicesConfig is the hub as the devices' certificate authority.
type DevicesConfig struct {
	CA devca.Config `yaml:"ca"`
	// CertValidity is short on purpose: agents renew at about 2/3 of it,
	// and a stolen certificate outlives neither a revocation (refused at
	// once) nor this.
	CertValidity time.Duration `yaml:"cert_validity" usage:"validity of the device certificates enrolment and renewal issue (1m to 2160h)"`
}

// HTTPConfig is the hub's REST API and health endpoint.
type HTTPConfig struct {
	Listen string `yaml:"listen" usage:"host:port of the REST API, health and metrics"`
	// AdminToken guards the operator endpoints. Without one they only work
	// on a loopback listener.
	AdminToken string  `yaml:"admin_token" usage:"bearer token for operator endpoints (required unless http.listen is loopback)"`
	TLS        HTTPTLS `yaml:"tls"`
}

// HTTPTLS serves the API and the TUF repository over HTTPS.
type HTTPTLS struct {
	CertFile string `yaml:"cert_file" usage:"PEM certificate of the HTTP listener; setting it serves HTTPS"`
	KeyFile  string `yaml:"key_file" usage:"PEM key of that certificate"`
}

// Defaults is the configuration `make demo` runs with: everything on
// loopback, embedded development Kafka.
func Defaults() *Config {
	return &Config{
		DataDir: "./data/hub",
		Broker: broker.Config{
			ServerName: "outpost-hub",
			Host:       "127.0.0.1",
			NATSPort:   4222,
			MQTTPort:   1883,
			SyncAlways: true,
			MaxPayload: 1 << 20,
			// nats-server's own default.
			StreamBuffer: 128 << 20,
			Cluster:      broker.Cluster{Port: 6222, LeaseTTL: 6 * time.Second},
		},
		Ingest:  ingest.Config{MaxBytes: 8 << 30, MaxAge: 7 * 24 * time.Hour, Replicas: 1, TrimInterval: time.Second},
		Kafka:   kafka.Config{TopicPrefix: "outpost.", Partitions: 3, Replication: 1},
		Bridge:  bridge.Config{BatchMessages: 512, Linger: 20 * time.Millisecond, Compression: "lz4", Format: "json", SharedDecodeBytes: 64 << 20, FeedBytes: 64 << 20},
		Devices: DevicesConfig{CertValidity: devca.DefaultValidity},
		HTTP:    HTTPConfig{Listen: "127.0.0.1:8080"},
		Updates: updates.Config{TimestampExpiry: 24 * time.Hour, RolloutInterval: time.Second},
		Trainer: trainer.Defaults(),
		Console: console.Defaults(),
		Log:     daemon.DefaultLog(),
	}
}

// Logging implements daemon.Config.
func (c *Config) Logging() daemon.LogConfig { return c.Log }

// StoreDir is where JetStream keeps its files.
func (c *Config) StoreDir() string {
	if c.Broker.StoreDir != "" {
		return c.Broker.StoreDir
	}
	return c.DataDir // nats-server adds its own jetstream/ below it
}

// BridgeID is the Kafka transactional id of the bridge. Every hub of a
// cluster shares it, so Kafka fences a bridge that lost its lease but does
// not know it yet.
func (c *Config) BridgeID() string {
	if c.Broker.Cluster.Enabled() {
		return "outpost-bridge-" + c.Broker.Cluster.Name
	}
	return "outpost-bridge-" + c.Broker.ServerName
}

// Validate names every wrong field by its path.
func (c *Config) Validate() error {
	var errs config.Errors
	if c.DataDir == "" {
		errs.Add("data_dir", "must not be empty")
	}
	if c.Broker.ServerName == "" {
		errs.Add("broker.server_name", "must not be empty (JetStream and MQTT need a stable server name)")
	}
	if net.ParseIP(c.Broker.Host) == nil {
		errs.Add("broker.host", fmt.Sprintf("must be an IP address, got %q", c.Broker.Host))
	}
	checkPort(&errs, "broker.nats_port", c.Broker.NATSPort)
	checkPort(&errs, "broker.mqtt_port", c.Broker.MQTTPort)
	if c.Broker.NATSPort > 0 && c.Broker.NATSPort == c.Broker.MQTTPort {
		errs.Add("broker.mqtt_port", "must differ from broker.nats_port")
	}
	if t := c.Broker.TLS; t.Enabled() || t.KeyFile != "" || t.VerifyClients {
		if t.CertFile == "" || t.KeyFile == "" {
			errs.Add("broker.tls", "cert_file and key_file are both required for TLS")
		}
		for path, f := range map[string]string{"broker.tls.cert_file": t.CertFile, "broker.tls.key_file": t.KeyFile, "broker.tls.ca_file": t.CAFile} {
			if f != "" {
				if _, err := os.Stat(f); err != nil {
					errs.Add(path, err.Error())
				}
			}
		}
	}
	if ca := c.Devices.CA; ca.Configured() {
		if ca.CertFile == "" || ca.KeyFile == "" {
			errs.Add("devices.ca", "cert_file and key_file go together")
		}
		for path, f := range map[string]string{"devices.ca.cert_file": ca.CertFile, "devices.ca.key_file": ca.KeyFile} {
			if f != "" {
				if _, err := os.Stat(f); err != nil {
					errs.Add(path, err.Error())
				}
			}
		}
	}
	if v := c.Devices.CertValidity; v < time.Minute || v > 2160*time.Hour {
		errs.Add("devices.cert_validity", fmt.Sprintf("must be 1m to 2160h, got %s", v))
	}
	c.validateCluster(&errs)
	if c.Broker.MaxPayload < 1024 || c.Broker.MaxPayload > 64<<20 {
		errs.Add("broker.max_payload", fmt.Sprintf("must be between 1024 and 67108864 bytes, got %d", c.Broker.MaxPayload))
	}
	if b := c.Broker.StreamBuffer; b < int64(c.Broker.MaxPayload) || b > 16<<30 {
		errs.Add("broker.stream_buffer", fmt.Sprintf("must be at least broker.max_payload (%d) and at most 17179869184 bytes, got %d", c.Broker.MaxPayload, b))
	}
	for i, b := range c.Kafka.Brokers {
		if _, port, err := net.SplitHostPort(b); err != nil || port == "" {
			errs.Add(fmt.Sprintf("kafka.brokers[%d]", i), fmt.Sprintf("must be host:port, got %q", b))
		}
	}
	c.Trainer.Validate("trainer", &errs)
	c.Console.Validate("console", &errs)
	if c.Updates.TimestampExpiry < time.Minute {
		errs.Add("updates.timestamp_expiry", fmt.Sprintf("must be at least 1m, got %s", c.Updates.TimestampExpiry))
	}
	if c.Updates.RolloutInterval < 10*time.Millisecond || c.Updates.RolloutInterval > time.Minute {
		errs.Add("updates.rollout_interval", fmt.Sprintf("must be 10ms to 1m, got %s", c.Updates.RolloutInterval))
	}
	if (c.Updates.RootFile == "") != (c.Updates.OnlineKeys == "") {
		errs.Add("updates", "root_file and online_keys are set together (both from outpostctl keys init), or neither for development keys")
	}
	for path, f := range map[string]string{"updates.root_file": c.Updates.RootFile, "updates.online_keys": c.Updates.OnlineKeys} {
		if f != "" {
			if _, err := os.Stat(f); err != nil {
				errs.Add(path, err.Error())
			}
		}
	}
	if c.Ingest.MaxBytes < 1<<20 {
		errs.Add("ingest.max_bytes", fmt.Sprintf("must be at least 1048576, got %d", c.Ingest.MaxBytes))
	}
	if c.Ingest.MaxAge < time.Minute {
		errs.Add("ingest.max_age", fmt.Sprintf("must be at least 1m, got %s", c.Ingest.MaxAge))
	}
	if c.Ingest.TrimInterval < 10*time.Millisecond || c.Ingest.TrimInterval > time.Hour {
		errs.Add("ingest.trim_interval", fmt.Sprintf("must be 10ms to 1h, got %s", c.Ingest.TrimInterval))
	}
	if c.Ingest.Replicas < 1 || c.Ingest.Replicas > 5 {
		errs.Add("ingest.replicas", fmt.Sprintf("must be 1 to 5, got %d", c.Ingest.Replicas))
	}
	if c.Bridge.BatchMessages < 1 || c.Bridge.BatchMessages > 10000 {
		errs.Add("bridge.batch_messages", fmt.Sprintf("must be 1 to 10000, got %d", c.Bridge.BatchMessages))
	}
	if c.Bridge.Linger < time.Millisecond || c.Bridge.Linger > 10*time.Second {
		errs.Add("bridge.linger", fmt.Sprintf("must be 1ms to 10s, got %s", c.Bridge.Linger))
	}
	if c.Bridge.SharedDecodeBytes < 0 || c.Bridge.SharedDecodeBytes > 16<<30 {
		errs.Add("bridge.shared_decode_bytes", fmt.Sprintf("must be 0 to 17179869184, got %d", c.Bridge.SharedDecodeBytes))
	}
	if c.Bridge.FeedBytes < 0 || c.Bridge.FeedBytes > 16<<30 {
		errs.Add("bridge.feed_bytes", fmt.Sprintf("must be 0 to 17179869184, got %d", c.Bridge.FeedBytes))
	}
	switch c.Bridge.Compression {
	case "none", "lz4", "zstd":
	default:
		errs.Add("bridge.compression", fmt.Sprintf("must be none, lz4 or zstd, got %q", c.Bridge.Compression))
	}
	switch c.Bridge.Format {
	case "json":
		if c.Bridge.SchemaRegistry.URL != "" {
			errs.Add("bridge.schema_registry.url", "is used only with bridge.format avro")
		}
	case "avro":
		if u := c.Bridge.SchemaRegistry.URL; u != "" {
			if p, err := url.Parse(u); err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
				errs.Add("bridge.schema_registry.url", fmt.Sprintf("must be an http(s) URL, got %q", u))
			}
		}
	default:
		errs.Add("bridge.format", fmt.Sprintf("must be json or avro, got %q", c.Bridge.Format))
	}
	switch m := c.Kafka.SASL.Mechanism; m {
	case "":
	case "plain", "scram-sha-256", "scram-sha-512":
		if c.Kafka.SASL.Username == "" {
			errs.Add("kafka.sasl.username", "required with kafka.sasl.mechanism")
		}
		if len(c.Kafka.Brokers) == 0 {
			errs.Add("kafka.sasl.mechanism", "needs kafka.brokers (the embedded broker has no authentication)")
		}
	default:
		errs.Add("kafka.sasl.mechanism", fmt.Sprintf("must be empty, plain, scram-sha-256 or scram-sha-512, got %q", m))
	}
	if p := c.Kafka.EmbeddedPort; p < 0 || p > 65535 {
		errs.Add("kafka.embedded_port", fmt.Sprintf("must be 0 to 65535, got %d", p))
	} else if p > 0 && len(c.Kafka.Brokers) > 0 {
		errs.Add("kafka.embedded_port", "is used only without kafka.brokers (it places the embedded development broker)")
	}
	c.Kafka.TLS.Validate("kafka.tls", &errs)
	if c.Kafka.TLS.On() && len(c.Kafka.Brokers) == 0 {
		errs.Add("kafka.tls", "needs kafka.brokers (the embedded broker has no TLS)")
	}
	if c.Kafka.Partitions < 1 {
		errs.Add("kafka.partitions", fmt.Sprintf("must be at least 1, got %d", c.Kafka.Partitions))
	}
	if c.Kafka.Replication < 1 || c.Kafka.Replication > 32767 {
		errs.Add("kafka.replication", fmt.Sprintf("must be between 1 and 32767, got %d", c.Kafka.Replication))
	}
	listenOK := false
	if _, port, err := net.SplitHostPort(c.HTTP.Listen); err != nil {
		errs.Add("http.listen", fmt.Sprintf("must be host:port, got %q", c.HTTP.Listen))
	} else if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		errs.Add("http.listen", fmt.Sprintf("port must be 0 to 65535, got %q", port))
	} else {
		listenOK = true
	}
	if t := c.HTTP.TLS; (t.CertFile == "") != (t.KeyFile == "") {
		errs.Add("http.tls", "cert_file and key_file go together")
	} else {
		for path, f := range map[string]string{"http.tls.cert_file": t.CertFile, "http.tls.key_file": t.KeyFile} {
			if f != "" {
				if _, err := os.Stat(f); err != nil {
					errs.Add(path, err.Error())
				}
			}
		}
	}
	if listenOK && c.HTTP.AdminToken == "" && !c.HTTP.Loopback() {
		errs.Add("http.admin_token", "must be set when http.listen is not a loopback address")
	}
	c.Log.Validate("log", &errs)
	return errs.Err()
}

func (c *Config) validateCluster(errs *config.Errors) {
	cl := c.Broker.Cluster
	if cl.LeaseTTL < time.Second || cl.LeaseTTL > time.Minute {
		errs.Add("broker.cluster.lease_ttl", fmt.Sprintf("must be 1s to 1m, got %s", cl.LeaseTTL))
	}
	if !cl.Enabled() {
		if c.Ingest.Replicas > 1 {
			errs.Add("ingest.replicas", "more than 1 replica needs a cluster (broker.cluster.name)")
		}
		return
	}
	// The name becomes part of the Kafka transactional id: same alphabet
	// as device ids.
	if err := topics.ValidDevice(cl.Name); err != nil {
		errs.Add("broker.cluster.name", fmt.Sprintf("must be letters, digits, '-' or '_', got %q", cl.Name))
	}
	if cl.Host != "" && net.ParseIP(cl.Host) == nil {
		errs.Add("broker.cluster.host", fmt.Sprintf("must be an IP address, got %q", cl.Host))
	}
	checkPort(errs, "broker.cluster.port", cl.Port)
	if len(cl.Secret) < 16 {
		errs.Add("broker.cluster.secret", "must be at least 16 characters: routes carry every device's data")
	}
	if len(cl.Routes) == 0 {
		errs.Add("broker.cluster.routes", "must list the other hubs' route addresses (host:port)")
	}
	for i, r := range cl.Routes {
		if _, port, err := net.SplitHostPort(r); err != nil || port == "" {
			errs.Add(fmt.Sprintf("broker.cluster.routes[%d]", i), fmt.Sprintf("must be host:port, got %q", r))
		}
	}
}

func checkPort(errs *config.Errors, path string, p int) {
	if p != -1 && (p < 1 || p > 65535) {
		errs.Add(path, fmt.Sprintf("must be 1 to 65535, or -1 for a free port, got %d", p))
	}
}

// Loopback reports whether the API listens on loopback only.
func (h HTTPConfig) Loopback() bool {
	host, _, err := net.SplitHostPort(h.Listen)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return host == "localhost" || (ip != nil && ip.IsLoopback())
}
