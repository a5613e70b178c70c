package agent

import (
	"errors"
	"strings"
	"testing"
	"time"

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
		{"device id", func(c *Config) { c.Device.ID = "a/b" }, "device.id"},
		{"data dir", func(c *Config) { c.DataDir = "" }, "data_dir"},
		{"synchronous", func(c *Config) { c.Storage.Synchronous = "off" }, "storage.synchronous"},
		{"url", func(c *Config) { c.Hub.URL = "127.0.0.1:1883" }, "hub.url"},
		{"scheme", func(c *Config) { c.Hub.URL = "http://hub:1883" }, "hub.url"},
		{"keepalive", func(c *Config) { c.Hub.KeepAlive = time.Millisecond }, "hub.keepalive"},
		{"connect timeout", func(c *Config) { c.Hub.ConnectTimeout = 0 }, "hub.connect_timeout"},
		{"report interval", func(c *Config) { c.Report.Interval = 0 }, "report.interval"},
		{"batch", func(c *Config) { c.Uplink.BatchRecords = 0 }, "uplink.batch_records"},
		{"inflight", func(c *Config) { c.Uplink.MaxInflight = 10 }, "uplink.max_inflight"},
		{"ack timeout", func(c *Config) { c.Uplink.AckTimeout = time.Millisecond }, "uplink.ack_timeout"},
		{"log level", func(c *Config) { c.Log.Level = "chatty" }, "log.level"},
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
	f.Add("device:\n  id: pump-7\nhub:\n  url: tcp://hub:1883\n")
	f.Add("report: {interval: 5s}")
	f.Add("storage: 3")
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
