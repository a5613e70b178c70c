// Package broker embeds nats-server as the hub's MQTT and JetStream broker.
package broker

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Config is the broker section of the hub config.
type Config struct {
	ServerName string `yaml:"server_name" usage:"unique name of this hub in a cluster"`
	Host       string `yaml:"host" usage:"address the NATS and MQTT listeners bind to"`
	NATSPort   int    `yaml:"nats_port" usage:"NATS client port (-1 picks a free port)"`
	MQTTPort   int    `yaml:"mqtt_port" usage:"MQTT 3.1.1 port for devices (-1 picks a free port)"`
	StoreDir   string `yaml:"store_dir" usage:"JetStream file store directory"`
	// SyncAlways fsyncs every JetStream write before it is acknowledged.
	// Without it JetStream syncs every two minutes, and a power loss can
	// lose records the hub already acked to a device.
	SyncAlways bool  `yaml:"sync_always" usage:"fsync each JetStream write before acking (safe; slower)"`
	MaxPayload int32 `yaml:"max_payload" usage:"largest message in bytes the broker accepts"`
	// StreamBuffer is JetStream's in-memory queue ahead of each stream's
	// store. A device's MQTT PUBACK does not wait for OUTPOST_UP, so when
	// devices publish faster than the store writes (a fleet flushing its
	// outboxes after an outage, fsync on every write) the queue fills and
	// JetStream drops what comes next; the acker then tells those devices
	// to resend (Ack.Gaps).
	StreamBuffer int64     `yaml:"stream_buffer" usage:"bytes of device batches JetStream queues in memory ahead of each stream's store; past it new batches are dropped, counted (ingest_overflows) and resent by their devices at the acker's word"`
	TLS          TLSConfig `yaml:"tls"`
	Cluster      Cluster   `yaml:"cluster"`
	// Replicas of the streams nats-server keeps for MQTT sessions and
	// QoS 1 messages; the hub sets it to ingest.replicas. Left to itself,
	// nats-server sizes them by the peers it knows when the first device
	// connects, which can be fewer than the cluster has.
	MQTTReplicas int `yaml:"-"`
}

// Cluster joins this hub to others through NATS routes: together they form
// one broker with replicated JetStream (DESIGN §1). Every hub lists the
// others' routes and has a unique server_name.
type Cluster struct {
	Name   string   `yaml:"name" usage:"cluster name, the same on every hub; empty runs a standalone hub"`
	Host   string   `yaml:"host" usage:"address the route listener binds to (default broker.host)"`
	Port   int      `yaml:"port" usage:"route port other hubs connect to (-1 picks a free port)"`
	Routes []string `yaml:"routes" usage:"host:port of the route listeners of the other hubs"`
	// Secret authenticates routes: without it anyone who reaches the route
	// port joins the cluster and sees every device's data.
	Secret string `yaml:"secret" usage:"shared secret every hub presents on its routes (required with cluster.name)"`
	// LeaseTTL bounds how long the cluster goes without a bridge after the
	// hub running it dies; it must be the same on every hub.
	LeaseTTL time.Duration `yaml:"lease_ttl" usage:"lease of the hub that runs the Kafka bridge and acker; another hub takes over within it"`
}

// Enabled reports whether the hub runs clustered.
func (c Cluster) Enabled() bool { return c.Name != "" }

// routeUser is the fixed route username; the secret is the password.
const routeUser = "outpost-route"

// RouteURLs turns host:port routes into nats-route URLs carrying the secret.
func (c Cluster) RouteURLs() []*url.URL {
	out := make([]*url.URL, 0, len(c.Routes))
	for _, r := range c.Routes {
		out = append(out, &url.URL{Scheme: "nats-route", User: url.UserPassword(routeUser, c.Secret), Host: r})
	}
	return out
}

// TLSConfig secures the MQTT listener. With VerifyClients, devices
// authenticate by client certificate (mTLS): the certificate's common name
// is the device id, checked against the registry like a password login.
type TLSConfig struct {
	CertFile      string `yaml:"cert_file" usage:"PEM certificate of the MQTT listener; enables TLS"`
	KeyFile       string `yaml:"key_file" usage:"PEM private key of the MQTT listener"`
	CAFile        string `yaml:"ca_file" usage:"PEM CA bundle of more CAs that sign device certificates (the hub's devices' CA is always trusted)"`
	VerifyClients bool   `yaml:"verify_clients" usage:"require a device certificate signed by the hub's devices' CA or ca_file (mTLS); its common name is the device id"`
}

// Enabled reports whether TLS is configured.
func (t TLSConfig) Enabled() bool { return t.CertFile != "" }

// Broker is a running embedded server.
type Broker struct {
	srv   *server.Server
	opts  *server.Options
	trust *clientTrust
	// latches are the file stores that logged a critical write error.
	latches   *latches
	overflows *atomic.Int64
}

// clientTrust is what the MQTT listener verifies device certificates
// against: ca_file, and the devices' CA once the hub has it (it lives in
// JetStream, which runs only once the broker does). Handshakes read the
// current config, so trusting a CA needs no restart. Never the system
// roots: a certificate from a public CA must not name a device.
type clientTrust struct {
	mu    sync.Mutex
	base  *tls.Config
	files []*x509.Certificate
	cur   atomic.Pointer[tls.Config]
}

func (t *clientTrust) set(extra []*x509.Certificate) {
	t.mu.Lock()
	defer t.mu.Unlock()
	pool := x509.NewCertPool()
	for _, c := range t.files {
		pool.AddCert(c)
	}
	for _, c := range extra {
		pool.AddCert(c)
	}
	c := t.base.Clone()
	c.GetConfigForClient = nil
	c.ClientCAs = pool
	t.cur.Store(c)
}

func readCerts(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []*x509.Certificate
	for rest := data; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if b.Type == "CERTIFICATE" {
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", path, err)
			}
			out = append(out, c)
		}
	}
	return out, nil
}

// TrustDevices makes the MQTT listener accept client certificates signed
// by cas (besides broker.tls.ca_file), from the next handshake on.
func (b *Broker) TrustDevices(cas ...*x509.Certificate) {
	if b.trust != nil {
		b.trust.set(cas)
	}
}

// Start runs the server and waits until it accepts connections. With a
// non-nil auth every connection, NATS or MQTT, must pass auth.Check.
func Start(ctx context.Context, cfg Config, log *slog.Logger, auth server.Authentication) (*Broker, error) {
	opts := &server.Options{
		ServerName: cfg.ServerName,
		Host:       cfg.Host,
		Port:       cfg.NATSPort,
		JetStream:  true,
		StoreDir:   cfg.StoreDir,
		SyncAlways: cfg.SyncAlways,
		MaxPayload: cfg.MaxPayload,
		NoSigs:     true, // the hub owns signal handling
		// One queued message may exceed the bound (nats-server checks it
		// before queueing): keep room for at least one whole batch.
		StreamMaxBufferedSize: max(cfg.StreamBuffer, int64(cfg.MaxPayload)),
		MQTT:                  server.MQTTOpts{Host: cfg.Host, Port: cfg.MQTTPort, StreamReplicas: cfg.MQTTReplicas},
	}
	if auth != nil {
		opts.CustomClientAuthentication = auth
	}
	if c := cfg.Cluster; c.Enabled() {
		host := c.Host
		if host == "" {
			host = cfg.Host
		}
		opts.Cluster = server.ClusterOpts{Name: c.Name, Host: host, Port: c.Port, Username: routeUser, Password: c.Secret,
			AuthTimeout: 5, ConnectBackoff: true}
		opts.Routes = c.RouteURLs()
	}
	var trust *clientTrust
	if cfg.TLS.Enabled() {
		tc, err := server.GenTLSConfig(&server.TLSConfigOpts{
			CertFile: cfg.TLS.CertFile, KeyFile: cfg.TLS.KeyFile, CaFile: cfg.TLS.CAFile, Verify: cfg.TLS.VerifyClients,
		})
		if err != nil {
			return nil, fmt.Errorf("broker: mqtt tls: %w", err)
		}
		if cfg.TLS.VerifyClients {
			trust = &clientTrust{base: tc}
			if cfg.TLS.CAFile != "" {
				if trust.files, err = readCerts(cfg.TLS.CAFile); err != nil {
					return nil, fmt.Errorf("broker: mqtt tls: %w", err)
				}
			}
			trust.set(nil)
			tc.ClientCAs = trust.cur.Load().ClientCAs
			tc.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) { return trust.cur.Load(), nil }
		}
		opts.MQTT.TLSConfig = tc
		opts.MQTT.TLSTimeout = 5
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("broker: %w", err)
	}
	seen, overflows := &latches{}, &atomic.Int64{}
	srv.SetLoggerV2(logAdapter{l: log.With("component", "nats"), seen: seen, overflows: overflows}, false, false, false)
	srv.Start()
	deadline := 30 * time.Second
	if d, ok := ctx.Deadline(); ok {
		deadline = time.Until(d)
	}
	if !srv.ReadyForConnections(deadline) {
		srv.Shutdown()
		return nil, fmt.Errorf("broker: %w within %s", ErrNotReady, deadline)
	}
	return &Broker{srv: srv, opts: opts, trust: trust, latches: seen, overflows: overflows}, nil
}

// IngestOverflows counts the times a stream's ingest queue (StreamBuffer)
// was full and JetStream dropped device batches. nats-server logs the
// drops at most once a second, so this counts seconds with drops, not
// batches.
func (b *Broker) IngestOverflows() int64 { return b.overflows.Load() }

// NATSURL is the URL NATS clients (the hub's own components) connect to.
func (b *Broker) NATSURL() string { return b.srv.ClientURL() }

// MQTTAddr is host:port of the MQTT listener, with a free port resolved.
func (b *Broker) MQTTAddr() string {
	host := b.opts.MQTT.Host
	if host == "" || host == "0.0.0.0" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, strconv.Itoa(b.opts.MQTT.Port))
}

// RouteAddr is host:port of the route listener, with a free port resolved
// ("" when standalone).
func (b *Broker) RouteAddr() string {
	if a := b.srv.ClusterAddr(); a != nil {
		return a.String()
	}
	return ""
}

// Server exposes the embedded server for in-process clients and tests.
func (b *Broker) Server() *server.Server { return b.srv }

// Close shuts down and waits until every listener is gone.
func (b *Broker) Close() {
	b.srv.Shutdown()
	b.srv.WaitForShutdown()
}
