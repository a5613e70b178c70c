package agent

import (
	"fmt"
	"net"
	"net/url"
	"time"

	"github.com/outpost-edge/outpost/agent/pipeline"
	"github.com/outpost-edge/outpost/agent/store"
	"github.com/outpost-edge/outpost/agent/update"
	"github.com/outpost-edge/outpost/agent/uplink"
	"github.com/outpost-edge/outpost/deploy/config"
	"github.com/outpost-edge/outpost/deploy/daemon"
	"github.com/outpost-edge/outpost/models/ort"
	"github.com/outpost-edge/outpost/sync/topics"
)

// Config is the whole typed configuration of outpost-agent.
type Config struct {
	Device    DeviceConfig      `yaml:"device"`
	DataDir   string            `yaml:"data_dir" usage:"directory of the agent database (outbox, checkpoints, update state)"`
	Storage   StorageConfig     `yaml:"storage"`
	Hub       uplink.Config     `yaml:"hub"`
	Enrolment EnrolmentConfig   `yaml:"enrolment"`
	Uplink    uplink.SendConfig `yaml:"uplink"`
	Report    ReportConfig      `yaml:"report"`
	Metrics   MetricsConfig     `yaml:"metrics"`
	Runtime   RuntimeConfig     `yaml:"runtime"`
	Updates   update.Config     `yaml:"updates"`
	Pipelines []pipeline.Config `yaml:"pipelines"`
	Log       daemon.LogConfig  `yaml:"log"`
}

// DeviceConfig identifies the device.
type DeviceConfig struct {
	ID          string `yaml:"id" usage:"device id: letters, digits, '-' and '_' (may be empty with enrolment.token_file: the hub's token or the device key names it)"`
	Accelerator string `yaml:"accelerator" usage:"the device's accelerator (cpu, cuda, tensorrt, ...); sent at enrolment, where it becomes the device's accelerator label"`
}

// EnrolmentConfig is first-boot enrolment with a one-time token. Once
// enrolled, the credentials in data_dir replace hub.username/password.
type EnrolmentConfig struct {
	URL       string           `yaml:"url" usage:"hub API URL to enrol with, e.g. https://hub.example:8080 (empty: no enrolment; hub.username/password are used)"`
	TokenFile string           `yaml:"token_file" usage:"file holding the one-time enrolment token; removed once spent"`
	TLS       config.ClientTLS `yaml:"tls"`
}

// StorageConfig tunes the SQLite database.
type StorageConfig struct {
	// Synchronous "full" survives power loss; "normal" may lose the last
	// transactions on power loss in exchange for fewer fsyncs.
	Synchronous string `yaml:"synchronous" usage:"SQLite synchronous mode: full (no loss on power failure) or normal (faster)"`
	// OutboxMaxBytes bounds the data the outbox holds while the hub is
	// unreachable; past it the oldest records are evicted, telemetry first.
	OutboxMaxBytes int64 `yaml:"outbox_max_bytes" usage:"bytes of record data the outbox may hold before evicting the oldest, telemetry first and events last (0: unbounded)"`
}

// RuntimeConfig locates ONNX Runtime for pipelines with a model.
type RuntimeConfig struct {
	ONNXRuntime string `yaml:"onnxruntime_library" usage:"path of libonnxruntime.so.1 (empty: OUTPOST_ORT_LIB, then lib/ next to the binary, then /usr/lib/outpost)"`
}

// ORTLibrary resolves the ONNX Runtime library to load.
func (r RuntimeConfig) ORTLibrary() (string, error) {
	lib, err := ort.FindLibrary(r.ONNXRuntime)
	if err != nil {
		return "", fmt.Errorf("agent: %w (set runtime.onnxruntime_library or OUTPOST_ORT_LIB)", err)
	}
	return lib, nil
}

// ReportConfig controls reported state.
type ReportConfig struct {
	Interval time.Duration `yaml:"interval" usage:"how often reported state is refreshed"`
}

// Defaults connect to a hub on loopback, as `make demo` runs it.
func Defaults() *Config {
	return &Config{
		Device:  DeviceConfig{ID: "demo-device-1"},
		DataDir: "./data/agent",
		Storage: StorageConfig{Synchronous: store.SyncFull, OutboxMaxBytes: 256 << 20},
		Hub: uplink.Config{
			URL:             "tcp://127.0.0.1:1883",
			KeepAlive:       30 * time.Second,
			ConnectTimeout:  10 * time.Second,
			ReconnectJitter: 2 * time.Second,
		},
		Uplink:  uplink.SendConfig{BatchRecords: 500, BatchBytes: 512 << 10, MaxInflight: 5000, AckTimeout: 10 * time.Second, Compress: true},
		Report:  ReportConfig{Interval: 30 * time.Second},
		Metrics: MetricsConfig{Listen: "127.0.0.1:9464"},
		Updates: update.Defaults(),
		Log:     daemon.DefaultLog(),
	}
}

// Logging implements daemon.Config.
func (c *Config) Logging() daemon.LogConfig { return c.Log }

// Validate names every wrong field by its path.
func (c *Config) Validate() error {
	var errs config.Errors
	if err := topics.ValidDevice(c.Device.ID); err != nil && !(c.Device.ID == "" && c.Enrolment.URL != "") {
		errs.Add("device.id", err.Error())
	}
	if c.Enrolment.URL != "" {
		if u, err := url.Parse(c.Enrolment.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs.Add("enrolment.url", fmt.Sprintf("must be an http(s) URL, got %q", c.Enrolment.URL))
		}
	}
	c.Enrolment.TLS.Validate("enrolment.tls", &errs)
	if c.DataDir == "" {
		errs.Add("data_dir", "must not be empty")
	}
	if c.Storage.Synchronous != store.SyncFull && c.Storage.Synchronous != store.SyncNormal {
		errs.Add("storage.synchronous", fmt.Sprintf("must be full or normal, got %q", c.Storage.Synchronous))
	}
	if c.Storage.OutboxMaxBytes < 0 || (c.Storage.OutboxMaxBytes > 0 && c.Storage.OutboxMaxBytes < 64<<10) {
		errs.Add("storage.outbox_max_bytes", fmt.Sprintf("must be 0 (unbounded) or at least 65536, got %d", c.Storage.OutboxMaxBytes))
	}
	checkBrokerURL(&errs, "hub.url", c.Hub.URL)
	for i, u := range c.Hub.FallbackURLs {
		checkBrokerURL(&errs, fmt.Sprintf("hub.fallback_urls[%d]", i), u)
	}
	if c.Hub.ReconnectJitter < 0 || c.Hub.ReconnectJitter > time.Minute {
		errs.Add("hub.reconnect_jitter", fmt.Sprintf("must be 0 to 1m, got %s", c.Hub.ReconnectJitter))
	}
	c.Hub.TLS.Validate("hub.tls", &errs)
	if c.Hub.KeepAlive < time.Second {
		errs.Add("hub.keepalive", fmt.Sprintf("must be at least 1s, got %s", c.Hub.KeepAlive))
	}
	if c.Hub.ConnectTimeout <= 0 {
		errs.Add("hub.connect_timeout", "must be positive")
	}
	if c.Uplink.BatchRecords < 1 || c.Uplink.BatchRecords > 10000 {
		errs.Add("uplink.batch_records", fmt.Sprintf("must be 1 to 10000, got %d", c.Uplink.BatchRecords))
	}
	if c.Uplink.BatchBytes < 4096 || c.Uplink.BatchBytes > 64<<20 {
		errs.Add("uplink.batch_bytes", fmt.Sprintf("must be 4096 to 67108864, got %d", c.Uplink.BatchBytes))
	}
	if c.Uplink.MaxInflight < c.Uplink.BatchRecords {
		errs.Add("uplink.max_inflight", fmt.Sprintf("must be at least uplink.batch_records (%d), got %d", c.Uplink.BatchRecords, c.Uplink.MaxInflight))
	}
	if c.Uplink.AckTimeout < 100*time.Millisecond {
		errs.Add("uplink.ack_timeout", fmt.Sprintf("must be at least 100ms, got %s", c.Uplink.AckTimeout))
	}
	if c.Report.Interval < time.Second {
		errs.Add("report.interval", fmt.Sprintf("must be at least 1s, got %s", c.Report.Interval))
	}
	if c.Metrics.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Metrics.Listen); err != nil {
			errs.Add("metrics.listen", fmt.Sprintf("must be host:port or empty, got %q", c.Metrics.Listen))
		}
	}
	c.Updates.Validate("updates", &errs)
	names := map[string]bool{}
	for i, p := range c.Pipelines {
		path := fmt.Sprintf("pipelines[%d]", i)
		p.Validate(path, &errs)
		if names[p.Name] {
			errs.Add(path+".name", fmt.Sprintf("%q is used by an earlier pipeline", p.Name))
		}
		names[p.Name] = true
	}
	c.Log.Validate("log", &errs)
	return errs.Err()
}

func checkBrokerURL(errs *config.Errors, path, raw string) {
	if u, err := url.Parse(raw); err != nil || u.Host == "" {
		errs.Add(path, fmt.Sprintf("must be a URL like tcp://host:1883, got %q", raw))
	} else if s := u.Scheme; s != "tcp" && s != "ssl" && s != "tls" && s != "mqtt" && s != "mqtts" {
		errs.Add(path, fmt.Sprintf("scheme must be tcp, ssl, tls, mqtt or mqtts, got %q", s))
	}
}
