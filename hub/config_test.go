package hub

import (
	"errors"
	"strings"
	"testing"

	"github.com/outpost-edge/outpost/deploy/config"
)

func TestDefaultsAreValid(t *testing.T) {
	if err := Defaults().Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestValidateNamesFields(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
		path   string
	}{
		{"empty data dir", func(c *Config) { c.DataDir = "" }, "data_dir"},
		{"no server name", func(c *Config) { c.Broker.ServerName = "" }, "broker.server_name"},
		{"host name", func(c *Config) { c.Broker.Host = "localhost" }, "broker.host"},
		{"port range", func(c *Config) { c.Broker.NATSPort = 70000 }, "broker.nats_port"},
		{"same ports", func(c *Config) { c.Broker.MQTTPort = c.Broker.NATSPort }, "broker.mqtt_port"},
		{"payload", func(c *Config) { c.Broker.MaxPayload = 10 }, "broker.max_payload"},
		{"broker addr", func(c *Config) { c.Kafka.Brokers = []string{"ok:9092", "nope"} }, "kafka.brokers[1]"},
		{"partitions", func(c *Config) { c.Kafka.Partitions = 0 }, "kafka.partitions"},
		{"replication", func(c *Config) { c.Kafka.Replication = 0 }, "kafka.replication"},
		{"http", func(c *Config) { c.HTTP.Listen = "8080" }, "http.listen"},
		{"open api needs token", func(c *Config) { c.HTTP.Listen = "0.0.0.0:8080" }, "http.admin_token"},
		{"ingest bytes", func(c *Config) { c.Ingest.MaxBytes = 10 }, "ingest.max_bytes"},
		{"bridge batch", func(c *Config) { c.Bridge.BatchMessages = 0 }, "bridge.batch_messages"},
		{"bridge compression", func(c *Config) { c.Bridge.Compression = "gzip" }, "bridge.compression"},
		{"log", func(c *Config) { c.Log.Format = "xml" }, "log.format"},
	}
	for _, tt := range tests {
		c := Defaults()
		tt.mutate(c)
		err := c.Validate()
		var es config.Errors
		if !errors.As(err, &es) || len(es) != 1 || es[0].Path != tt.path {
			t.Errorf("%s: err = %v, want one error at %s", tt.name, err, tt.path)
		}
	}
}

func FuzzConfigFile(f *testing.F) {
	f.Add("broker:\n  mqtt_port: 1884\nkafka:\n  brokers: [a:1]\n")
	f.Add("log: {level: debug}")
	f.Add("http: [1, 2]")
	f.Fuzz(func(t *testing.T, doc string) {
		c := Defaults()
		if err := config.DecodeYAML([]byte(doc), c); err != nil {
			if !errors.Is(err, config.ErrInvalid) {
				t.Fatalf("decode error does not wrap ErrInvalid: %v", err)
			}
			return
		}
		if err := c.Validate(); err != nil && !strings.Contains(err.Error(), ": ") {
			t.Fatalf("validation error without a field path: %v", err)
		}
	})
}
