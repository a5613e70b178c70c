// Package mqtttest runs Debian's Mosquitto on a free loopback port, the
// third-party broker the agent's interop tests speak to.
package mqtttest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/test/service"
	"github.com/outpost-edge/outpost/test/testenv"
)

// Broker is a running Mosquitto.
type Broker struct {
	*service.Process
	// Addr is host:port; URL is the paho form tcp://host:port.
	Addr, URL string
}

// Limits is how a test's Mosquitto bounds each client.
type Limits int

const (
	// Raised: queues of a million messages and 1,000 in flight, for
	// load tests.
	Raised Limits = iota
	// Defaults: Mosquitto's own (1,000 queued, 20 in flight), as a
	// broker installed and left alone.
	Defaults
	// DefaultInflight: Mosquitto's own in-flight limit (20) with queues
	// raised, so that a load test's burst is held, not dropped.
	DefaultInflight
)

// Start runs mosquitto with its config, log and persistence under dir,
// with raised limits.
func Start(ctx context.Context, dir string) (*Broker, error) { return StartWith(ctx, dir, Raised) }

// StartWith is Start with the given limits.
func StartWith(ctx context.Context, dir string, lim Limits) (*Broker, error) {
	return StartTLS(ctx, dir, lim, TLS{})
}

// TLS is a listener's certificate (its files PEM); with CertFile empty the
// listener is plain TCP. RequireCertificate asks every client for one
// signed by CAFile (mTLS).
type TLS struct {
	CAFile, CertFile, KeyFile string
	RequireCertificate        bool
}

// StartTLS is StartWith on a TLS listener when t.CertFile is set; URL is
// then ssl://127.0.0.1:port.
func StartTLS(ctx context.Context, dir string, lim Limits, t TLS) (*Broker, error) {
	bin, err := testenv.Binary("mosquitto")
	if err != nil {
		return nil, err
	}
	port, err := service.FreePort()
	if err != nil {
		return nil, err
	}
	conf := fmt.Sprintf(`listener %d 127.0.0.1
allow_anonymous true
persistence true
persistence_location %s/
log_dest stdout
log_type error
log_type warning
log_type notice
`, port, dir)
	scheme := "tcp://"
	if t.CertFile != "" {
		scheme = "ssl://"
		// Started as root, Mosquitto drops to its own user before it reads
		// the certificates, which a test writes 0600 into its own 0700
		// temp dir; "user root" keeps it as the test's user (a non-root
		// Mosquitto ignores it).
		conf += "user root\n"
		conf += fmt.Sprintf("cafile %s\ncertfile %s\nkeyfile %s\nrequire_certificate %t\n", t.CAFile, t.CertFile, t.KeyFile, t.RequireCertificate)
	}
	switch lim {
	case Raised:
		conf += "max_queued_messages 1000000\nmax_inflight_messages 1000\n"
	case DefaultInflight:
		conf += "max_queued_messages 1000000\n"
	}
	confPath := filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	addr := service.Addr(port)
	p, err := service.Start(ctx, service.Spec{
		Name:    "mosquitto",
		Path:    bin,
		Args:    []string{"-c", confPath},
		LogPath: filepath.Join(dir, "mosquitto.log"),
		Ready:   service.DialReady(addr),
		Timeout: 15 * time.Second,
	})
	if err != nil {
		return nil, err
	}
	return &Broker{Process: p, Addr: addr, URL: scheme + addr}, nil
}

// New starts a Mosquitto for one test and stops it when the test ends.
func New(tb testing.TB) *Broker {
	tb.Helper()
	return NewWith(tb, Raised)
}

// NewWith is New with the given limits.
func NewWith(tb testing.TB, lim Limits) *Broker {
	tb.Helper()
	b, err := StartWith(context.Background(), tb.TempDir(), lim)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(b.Stop)
	return b
}
