// Package chaos injects faults between devices, the hub and Kafka, and
// checks that every fault heals: afterwards every record sent is in Kafka
// exactly once (read_committed, by content and by ce_id) and every device
// recovers within the bound the scenario states.
//
//   - toxiproxy (in process, on loopback): a link that goes silent without
//     a FIN, a link that flaps, and a slow, sliced link (this file);
//   - real kernel links (netns_test.go): the suite's own network
//     namespaces and veth pairs, cut so that they drop packets without
//     closing anything: agent↔hub and hub↔Kafka partitions, the latter
//     with a dedicated broker running in the namespace (nskafka_test.go);
//   - a dedicated Kafka broker killed with SIGKILL under load and started
//     again on its data, and a device clock jumping ±1 h (faults_test.go);
//   - the agent's and the hub's data directories on small tmpfs
//     filesystems that fill up mid-traffic (diskfull_test.go);
//   - the lease holder of a cluster of three outpost-hub processes killed
//     with SIGKILL under load (hubkill_test.go);
//   - 1,000 agents' uplinks reconnecting after a hub restart, their
//     attempts counted to check that the jitter spreads them
//     (reconnect_test.go).
//
// After each scenario the process's goroutines and open file descriptors
// must return to their pre-scenario baseline (baseline_test.go: within a
// margin, after a settle period; a miss fails the scenario with every
// goroutine's stack), and one line is logged:
//
//	BASELINE | scenario | goroutines before → after | fds before → after | peak rss
//
// The namespace scenarios need root and iproute2; without them they fail,
// never skip. Each prints one line for the README's reliability table:
//
//	RELIABILITY | scenario | sent | kafka | dups | recovery | rss
//
// `make test` runs each scenario at its short length; `make chaos` sets
// OUTPOST_CHAOS_SCALE to stretch every fault and the traffic.
package chaos

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/Shopify/toxiproxy/v2"

	"github.com/outpost-edge/outpost/hub"
	"github.com/outpost-edge/outpost/test/faulttest"
	"github.com/outpost-edge/outpost/test/fleettest"
	"github.com/outpost-edge/outpost/test/kafkatest"
)

func TestMain(m *testing.M) { os.Exit(kafkatest.Main(m)) }

// scale stretches faults and traffic for `make chaos`.
func scale() time.Duration {
	if n, err := strconv.Atoi(os.Getenv("OUTPOST_CHAOS_SCALE")); err == nil && n > 0 {
		return time.Duration(n)
	}
	return 1
}

func startHub(t *testing.T) (*hub.Hub, *hub.Config) {
	t.Helper()
	return startHubWith(t, kafkatest.Brokers(t))
}

// startHubWith runs an in-process hub against the given Kafka brokers,
// with its configuration adjusted by each of adjust.
func startHubWith(t *testing.T, brokers []string, adjust ...func(*hub.Config)) (*hub.Hub, *hub.Config) {
	t.Helper()
	cfg := hubConfig(t, brokers, adjust...)
	h, err := hub.Start(context.Background(), cfg, logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h, cfg
}

// hubConfig is the configuration of a test's in-process hub.
func hubConfig(t *testing.T, brokers []string, adjust ...func(*hub.Config)) *hub.Config {
	t.Helper()
	cfg := hub.Defaults()
	cfg.DataDir = t.TempDir()
	cfg.Broker.ServerName = "chaos-" + strings.ToLower(t.Name())
	cfg.Broker.NATSPort, cfg.Broker.MQTTPort = -1, -1
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.Kafka.Brokers = brokers
	cfg.Kafka.TopicPrefix = fmt.Sprintf("c%d.", time.Now().UnixNano())
	cfg.Kafka.Partitions = 2
	for _, f := range adjust {
		if f != nil {
			f(cfg)
		}
	}
	return cfg
}

func logger(t *testing.T) *slog.Logger { return fleettest.Logger(t) }

// result is one scenario's line in the README's reliability table.
type result struct {
	sent, inKafka, dup int
	recovery           time.Duration
	// dead counts what the hub dead-lettered (counted, not lost).
	dead int64
}

// log prints the scenario's line in a fixed format, for `make chaos`
// summaries (grep '^ *chaos_test.go:[0-9]*: RELIABILITY' or just RELIABILITY):
//
//	RELIABILITY | scenario | sent | kafka | dups | recovery | rss
//
// rss is the test process's peak (VmHWM) since the scenario started, and
// its RSS at the end: the hub runs in this process, with the devices' data
// paths and the test's Kafka reader, so it stands in for the hub's.
func (r result) log(t *testing.T, scenario string) {
	t.Logf("RELIABILITY | %s | %d | %d | %d | %s | %s", scenario, r.sent, r.inKafka, r.dup, r.recovery.Round(100*time.Millisecond), rss())
	if r.dead > 0 {
		t.Logf("RELIABILITY-NOTE | %s | %d dead letters (counted, in outpost.deadletter)", scenario, r.dead)
	}
}

// resetPeakRSS restarts VmHWM from the current RSS (clear_refs 5), so each
// scenario reports its own peak.
func resetPeakRSS() { _ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) }

// rss is this process's high-water and current RSS (the hub runs in it).
func rss() string {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return "?"
	}
	var hwm, cur string
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			hwm = mib(v)
		}
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			cur = mib(v)
		}
	}
	return "peak " + hwm + " (end " + cur + ")"
}

func mib(kb string) string {
	n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(kb), " kB"))
	if err != nil {
		return strings.TrimSpace(kb)
	}
	return fmt.Sprintf("%d MiB", n>>10)
}

// run streams from devices through the link for traffic (100 records/s
// each) while fault runs, from 1 s in. Recovery is how long after the
// fault healed every device had caught up again (at most 50 records
// waiting); it must be within bound. Then the outboxes drain and Kafka is
// checked.
func run(t *testing.T, devices int, traffic time.Duration, fault func(p *toxiproxy.Proxy), bound time.Duration) result {
	watchBaseline(t, t.Name(), true)
	resetPeakRSS()
	h, cfg := startHub(t)
	p := faulttest.Link(t, h.MQTTAddr())
	var want []string
	var devs []*fleettest.Device
	done := make(chan struct{})
	for i := 0; i < devices; i++ {
		id := fmt.Sprintf("chaos-%d", i)
		creds, err := h.Registry().Add(context.Background(), id, nil)
		if err != nil {
			t.Fatal(err)
		}
		d := fleettest.Start(t, t.TempDir(), fleettest.SendConfig, creds, logger(t), "tcp://"+p.Listen)
		devs = append(devs, d)
	}
	n := int(traffic.Seconds() * 100)
	for _, d := range devs {
		ls := fleettest.Labels(d.ID, n)
		want = append(want, ls...)
		go func() {
			defer func() { done <- struct{}{} }()
			d.ProduceLabels(t, "windows", ls, 5, 100, 50*time.Millisecond)
		}()
	}
	time.Sleep(time.Second)
	fault(p)
	healed := time.Now()
	for _, d := range devs {
		for d.Depth(t) > 50 {
			if time.Since(healed) > bound {
				t.Fatalf("%s: %d records waiting %s after the fault healed (bound %s)", d.ID, d.Depth(t), time.Since(healed).Round(time.Second), bound)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	recovery := time.Since(healed)
	for range devs {
		<-done
	}
	for _, d := range devs {
		d.WaitDrained(t, bound)
	}
	got := fleettest.ReadLabels(t, cfg.Kafka.Brokers, []string{cfg.Kafka.TopicPrefix + "windows"}, len(want), 60*time.Second)
	got.ExactlyOnce(t, want)
	_, dup := got.Count(want)
	return result{sent: len(want), inKafka: got.Records, dup: len(dup), recovery: recovery, dead: h.Stats().BridgeDeadLetters}
}

// A link that goes silent without a FIN or RST (a dead NAT entry, a
// pulled cable upstream): the device's MQTT keepalive must notice, and it
// reconnects once the link carries data again.
func TestHalfOpenLink(t *testing.T) {
	r := run(t, 3, 25*time.Second*scale(), func(p *toxiproxy.Proxy) {
		heal := faulttest.Toxic(t, p, "timeout", `{"timeout":0}`)
		time.Sleep(20 * time.Second * scale())
		heal()
	}, 30*time.Second)
	r.log(t, "half-open link for 20 s")
}

// A link that drops every connection every 2 s, for 20 s.
func TestFlappingLink(t *testing.T) {
	r := run(t, 3, 25*time.Second*scale(), func(p *toxiproxy.Proxy) {
		end := time.Now().Add(20 * time.Second * scale())
		for time.Now().Before(end) {
			heal := faulttest.Toxic(t, p, "reset_peer", `{"timeout":0}`)
			time.Sleep(time.Second)
			heal()
			time.Sleep(time.Second)
		}
	}, 30*time.Second)
	r.log(t, "link reset every 2 s for 20 s")
}

// A slow link: 300 ms ± 100 ms each way, 32 KB/s, cut into small TCP
// segments, for 15 s.
func TestSlowSlicedLink(t *testing.T) {
	r := run(t, 3, 20*time.Second*scale(), func(p *toxiproxy.Proxy) {
		heal := []func(){
			faulttest.Toxic(t, p, "latency", `{"latency":300,"jitter":100}`),
			faulttest.Toxic(t, p, "bandwidth", `{"rate":32}`),
			faulttest.Toxic(t, p, "slicer", `{"average_size":64,"size_variation":32,"delay":1000}`),
		}
		time.Sleep(15 * time.Second * scale())
		for _, h := range heal {
			h()
		}
	}, 30*time.Second)
	r.log(t, "300 ms latency, 32 KB/s, sliced, for 15 s")
}
