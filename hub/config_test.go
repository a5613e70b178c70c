package hub

import (
	"testing"
	"time"

	"github.com/outpost-edge/outpost/deploy/config/configtest"
	"github.com/outpost-edge/outpost/hub/console"
)

func TestDefaultsAreValid(t *testing.T) {
	if err := Defaults().Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestValidateNamesFields(t *testing.T) {
	configtest.FieldErrors(t, Defaults, []configtest.Case[*Config]{
		{Name: "empty data dir", Mutate: func(c *Config) { c.DataDir = "" }, Path: "data_dir"},
		{Name: "no server name", Mutate: func(c *Config) { c.Broker.ServerName = "" }, Path: "broker.server_name"},
		{Name: "host name", Mutate: func(c *Config) { c.Broker.Host = "localhost" }, Path: "broker.host"},
		{Name: "port range", Mutate: func(c *Config) { c.Broker.NATSPort = 70000 }, Path: "broker.nats_port"},
		{Name: "same ports", Mutate: func(c *Config) { c.Broker.MQTTPort = c.Broker.NATSPort }, Path: "broker.mqtt_port"},
		{Name: "payload", Mutate: func(c *Config) { c.Broker.MaxPayload = 10 }, Path: "broker.max_payload"},
		{Name: "broker addr", Mutate: func(c *Config) { c.Kafka.Brokers = []string{"ok:9092", "nope"} }, Path: "kafka.brokers[1]"},
		{Name: "partitions", Mutate: func(c *Config) { c.Kafka.Partitions = 0 }, Path: "kafka.partitions"},
		{Name: "replication", Mutate: func(c *Config) { c.Kafka.Replication = 0 }, Path: "kafka.replication"},
		{Name: "http", Mutate: func(c *Config) { c.HTTP.Listen = "8080" }, Path: "http.listen"},
		{Name: "open api needs token", Mutate: func(c *Config) { c.HTTP.Listen = "0.0.0.0:8080" }, Path: "http.admin_token"},
		{Name: "ingest bytes", Mutate: func(c *Config) { c.Ingest.MaxBytes = 10 }, Path: "ingest.max_bytes"},
		{Name: "embedded port range", Mutate: func(c *Config) { c.Kafka.EmbeddedPort = 70000 }, Path: "kafka.embedded_port"},
		{Name: "embedded port with brokers", Mutate: func(c *Config) { c.Kafka.EmbeddedPort = 9092; c.Kafka.Brokers = []string{"k:9092"} }, Path: "kafka.embedded_port"},
		{Name: "bridge batch", Mutate: func(c *Config) { c.Bridge.BatchMessages = 0 }, Path: "bridge.batch_messages"},
		{Name: "bridge compression", Mutate: func(c *Config) { c.Bridge.Compression = "gzip" }, Path: "bridge.compression"},
		{Name: "log", Mutate: func(c *Config) { c.Log.Format = "xml" }, Path: "log.format"},
		{Name: "replicas need a cluster", Mutate: func(c *Config) { c.Ingest.Replicas = 3 }, Path: "ingest.replicas"},
		{Name: "cluster secret", Mutate: func(c *Config) { clustered(c); c.Broker.Cluster.Secret = "short" }, Path: "broker.cluster.secret"},
		{Name: "cluster routes", Mutate: func(c *Config) { clustered(c); c.Broker.Cluster.Routes = nil }, Path: "broker.cluster.routes"},
		{Name: "cluster route addr", Mutate: func(c *Config) { clustered(c); c.Broker.Cluster.Routes = []string{"h2:6222", "h3"} }, Path: "broker.cluster.routes[1]"},
		{Name: "cluster name", Mutate: func(c *Config) { clustered(c); c.Broker.Cluster.Name = "a.b" }, Path: "broker.cluster.name"},
		{Name: "kafka tls pair", Mutate: func(c *Config) { c.Kafka.Brokers = []string{"k:9093"}; c.Kafka.TLS.CertFile = "/etc/hostname" }, Path: "kafka.tls"},
		{Name: "kafka tls file", Mutate: func(c *Config) { c.Kafka.Brokers = []string{"k:9093"}; c.Kafka.TLS.CAFile = "/nonexistent/ca.pem" }, Path: "kafka.tls.ca_file"},
		{Name: "kafka tls embedded", Mutate: func(c *Config) { c.Kafka.TLS.Enabled = true }, Path: "kafka.tls"},
		{Name: "format", Mutate: func(c *Config) { c.Bridge.Format = "protobuf" }, Path: "bridge.format"},
		{Name: "registry needs avro", Mutate: func(c *Config) { c.Bridge.SchemaRegistry.URL = "http://sr:8081" }, Path: "bridge.schema_registry.url"},
		{Name: "registry url", Mutate: func(c *Config) { c.Bridge.Format = "avro"; c.Bridge.SchemaRegistry.URL = "sr:8081" }, Path: "bridge.schema_registry.url"},
		{Name: "cert validity", Mutate: func(c *Config) { c.Devices.CertValidity = time.Second }, Path: "devices.cert_validity"},
		{Name: "devices ca pair", Mutate: func(c *Config) { c.Devices.CA.CertFile = "/etc/hostname" }, Path: "devices.ca"},
		{Name: "devices ca file", Mutate: func(c *Config) { c.Devices.CA.CertFile, c.Devices.CA.KeyFile = "/nonexistent/ca.pem", "/etc/hostname" }, Path: "devices.ca.cert_file"},
		{Name: "console role", Mutate: func(c *Config) {
			c.Console.Users = []console.User{{Name: "ann", PasswordHash: "$2a$04$Z1yBeXJ6Ue5z9pVZ3rM8G.0s6wD9lG0u6kWmHq8g9u3bC2jD1lH1K", Role: "admin"}}
		}, Path: "console.users[0].role"},
		{Name: "console hash", Mutate: func(c *Config) {
			c.Console.Users = []console.User{{Name: "ann", PasswordHash: "plain", Role: "viewer"}}
		}, Path: "console.users[0].password_hash"},
		{Name: "console ttl", Mutate: func(c *Config) { c.Console.SessionTTL = time.Second }, Path: "console.session_ttl"},
		{Name: "lease ttl", Mutate: func(c *Config) { c.Broker.Cluster.LeaseTTL = time.Millisecond }, Path: "broker.cluster.lease_ttl"},
		{Name: "stream buffer below a batch", Mutate: func(c *Config) { c.Broker.StreamBuffer = 1000 }, Path: "broker.stream_buffer"},
	})
}

// clustered makes c a valid member of a three-hub cluster.
func clustered(c *Config) {
	c.Broker.Cluster.Name = "site-1"
	c.Broker.Cluster.Secret = "a-long-enough-route-secret"
	c.Broker.Cluster.Routes = []string{"10.0.0.2:6222", "10.0.0.3:6222"}
	c.Ingest.Replicas = 3
}

func TestClusterConfigIsValid(t *testing.T) {
	c := Defaults()
	clustered(c)
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if got, want := c.BridgeID(), "outpost-bridge-site-1"; got != want {
		t.Errorf("BridgeID = %q, want %q: every hub of a cluster must share it", got, want)
	}
}

func FuzzConfigFile(f *testing.F) {
	configtest.FuzzFile(f, Defaults, "broker:\n  mqtt_port: 1884\nkafka:\n  brokers: [a:1]\n", "log: {level: debug}", "http: [1, 2]")
}
