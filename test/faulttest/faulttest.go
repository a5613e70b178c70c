// Package faulttest holds the fault helpers that the chaos suite and the
// soak share: toxiproxy links in process, and an in-process hub that
// restarts on its own data.
package faulttest

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Shopify/toxiproxy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/outpost-edge/outpost/hub"
	"github.com/outpost-edge/outpost/test/fleettest"
	"github.com/outpost-edge/outpost/test/service"
)

// Link is a toxiproxy proxy on loopback in front of upstream.
func Link(t *testing.T, upstream string) *toxiproxy.Proxy {
	t.Helper()
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	p := toxiproxy.NewProxy(srv, "mqtt", "127.0.0.1:0", upstream)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	return p
}

// Toxic adds one toxic to both directions of p; the returned func
// removes them.
func Toxic(t *testing.T, p *toxiproxy.Proxy, kind, attrs string) func() {
	t.Helper()
	var names []string
	for _, dir := range []string{"upstream", "downstream"} {
		name := kind + "_" + dir
		js := fmt.Sprintf(`{"name":%q,"type":%q,"stream":%q,"toxicity":1,"attributes":%s}`, name, kind, dir, attrs)
		if _, err := p.Toxics.AddToxicJson(strings.NewReader(js)); err != nil {
			t.Fatalf("toxic %s: %v", name, err)
		}
		names = append(names, name)
	}
	return func() {
		for _, n := range names {
			if err := p.Toxics.RemoveToxic(context.Background(), n); err != nil {
				t.Errorf("remove toxic %s: %v", n, err)
			}
		}
	}
}

// RestartableHub is an in-process hub on a fixed MQTT port that can be
// closed and started again on the same data directory: devices dial the
// same address throughout.
type RestartableHub struct {
	cfg *hub.Config
	t   *testing.T
	mu  sync.Mutex
	h   *hub.Hub
}

// StartRestartable starts the hub of cfg (on a free MQTT port unless cfg
// names one) and closes it when t ends.
func StartRestartable(t *testing.T, cfg *hub.Config) *RestartableHub {
	t.Helper()
	if cfg.Broker.MQTTPort <= 0 {
		p, err := service.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		cfg.Broker.MQTTPort = p
	}
	r := &RestartableHub{cfg: cfg, t: t}
	if err := r.start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.stop)
	return r
}

func (r *RestartableHub) start() error {
	h, err := hub.Start(context.Background(), r.cfg, fleettest.Logger(r.t))
	if err != nil {
		return fmt.Errorf("hub start: %w", err)
	}
	r.mu.Lock()
	r.h = h
	r.mu.Unlock()
	return nil
}

func (r *RestartableHub) stop() {
	r.mu.Lock()
	h := r.h
	r.h = nil
	r.mu.Unlock()
	if h != nil {
		h.Close()
	}
}

// Hub is the running hub (nil while restarting).
func (r *RestartableHub) Hub() *hub.Hub {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.h
}

// URL is the MQTT URL devices dial, the same across restarts.
func (r *RestartableHub) URL() string { return "tcp://" + service.Addr(r.cfg.Broker.MQTTPort) }

// Restart closes the hub and starts it again on the same data; it returns
// how long the hub was away.
func (r *RestartableHub) Restart(t *testing.T) time.Duration {
	t.Helper()
	start := time.Now()
	r.stop()
	if err := r.start(); err != nil {
		t.Fatal(err)
	}
	return time.Since(start)
}
