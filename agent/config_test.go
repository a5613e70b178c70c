package agent

import (
	"testing"
	"time"

	"github.com/outpost-edge/outpost/deploy/config/configtest"
)

func TestDefaultsAreValid(t *testing.T) {
	if err := Defaults().Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestValidateNamesFields(t *testing.T) {
	configtest.FieldErrors(t, Defaults, []configtest.Case[*Config]{
		{Name: "device id", Mutate: func(c *Config) { c.Device.ID = "a/b" }, Path: "device.id"},
		{Name: "data dir", Mutate: func(c *Config) { c.DataDir = "" }, Path: "data_dir"},
		{Name: "synchronous", Mutate: func(c *Config) { c.Storage.Synchronous = "off" }, Path: "storage.synchronous"},
		{Name: "url", Mutate: func(c *Config) { c.Hub.URL = "127.0.0.1:1883" }, Path: "hub.url"},
		{Name: "scheme", Mutate: func(c *Config) { c.Hub.URL = "http://hub:1883" }, Path: "hub.url"},
		{Name: "keepalive", Mutate: func(c *Config) { c.Hub.KeepAlive = time.Millisecond }, Path: "hub.keepalive"},
		{Name: "connect timeout", Mutate: func(c *Config) { c.Hub.ConnectTimeout = 0 }, Path: "hub.connect_timeout"},
		{Name: "report interval", Mutate: func(c *Config) { c.Report.Interval = 0 }, Path: "report.interval"},
		{Name: "batch", Mutate: func(c *Config) { c.Uplink.BatchRecords = 0 }, Path: "uplink.batch_records"},
		{Name: "batch bytes", Mutate: func(c *Config) { c.Uplink.BatchBytes = 10 }, Path: "uplink.batch_bytes"},
		{Name: "inflight", Mutate: func(c *Config) { c.Uplink.MaxInflight = 10 }, Path: "uplink.max_inflight"},
		{Name: "ack timeout", Mutate: func(c *Config) { c.Uplink.AckTimeout = time.Millisecond }, Path: "uplink.ack_timeout"},
		{Name: "log level", Mutate: func(c *Config) { c.Log.Level = "chatty" }, Path: "log.level"},
	})
}

func FuzzConfigFile(f *testing.F) {
	configtest.FuzzFile(f, Defaults, "device:\n  id: pump-7\nhub:\n  url: tcp://hub:1883\n", "report: {interval: 5s}", "storage: 3")
}
