package hub

import (
	"testing"

	"github.com/outpost-edge/outpost/deploy/config/configtest"
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
		{Name: "bridge batch", Mutate: func(c *Config) { c.Bridge.BatchMessages = 0 }, Path: "bridge.batch_messages"},
		{Name: "bridge compression", Mutate: func(c *Config) { c.Bridge.Compression = "gzip" }, Path: "bridge.compression"},
		{Name: "log", Mutate: func(c *Config) { c.Log.Format = "xml" }, Path: "log.format"},
	})
}

func FuzzConfigFile(f *testing.F) {
	configtest.FuzzFile(f, Defaults, "broker:\n  mqtt_port: 1884\nkafka:\n  brokers: [a:1]\n", "log: {level: debug}", "http: [1, 2]")
}
