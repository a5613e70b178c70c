package chaos

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/agent"
	"github.com/outpost-edge/outpost/agent/uplink"
	"github.com/outpost-edge/outpost/test/faulttest"
	"github.com/outpost-edge/outpost/test/fleettest"
	"github.com/outpost-edge/outpost/test/kafkatest"
)

// A fleet of agents' uplinks (bare MQTT clients with the agent's own
// uplink settings: its default reconnect jitter, paho's backoff; no
// outbox, so that a thousand fit in the test process) is connected to a
// hub that restarts. All of them must be back within bound, and the
// jitter must spread them: the busiest 100 ms holds the connection
// attempts (counted by a relay in front of the hub) of at most
// maxBurstShare of the fleet, and the middle 90 % of the reconnects span
// at least minSpread. The connection rate is reported.
func TestFleetReconnectAfterHubRestart(t *testing.T) {
	fleet := 1000
	if scale() > 1 {
		fleet = 2000 // make chaos; run and passed at 2,000 (the busiest 100 ms held 12 % of the attempts)
	}
	watchBaseline(t, fmt.Sprintf("%d agents reconnect after a hub restart", fleet), true)
	const (
		bound = 60 * time.Second
		// A 2 s uniform jitter puts about 5 % of the attempts in any 100 ms.
		maxBurstShare = 0.2
		minSpread     = time.Second
	)
	rh := faulttest.StartRestartable(t, hubConfig(t, kafkatest.Brokers(t)))
	relay := startCountingRelay(t, strings.TrimPrefix(rh.URL(), "tcp://"))
	jitter := agent.Defaults().Hub.ReconnectJitter
	if os.Getenv("OUTPOST_CHAOS_BREAK_JITTER") == "1" {
		jitter = time.Nanosecond // a deliberately broken build: (almost) no jitter
	}
	if jitter <= 0 {
		t.Fatalf("the agent's default reconnect jitter is %s", jitter)
	}

	var mu sync.Mutex
	connects := make([][]time.Time, fleet)
	clients := make([]*uplink.Client, fleet)
	start := time.Now()
	for i := 0; i < fleet; i++ {
		creds, err := rh.Hub().Registry().Add(context.Background(), fmt.Sprintf("fleet-%04d", i), nil)
		if err != nil {
			t.Fatal(err)
		}
		c, err := uplink.New(uplink.Config{URL: "tcp://" + relay.ln.Addr().String(), Username: creds.Username, Password: creds.Password,
			KeepAlive: 30 * time.Second, ConnectTimeout: 5 * time.Second, ReconnectJitter: jitter},
			uplink.Options{ClientID: creds.Device, OnConnect: func(*uplink.Client) {
				mu.Lock()
				connects[i] = append(connects[i], time.Now())
				mu.Unlock()
			}}, fleettest.Logger(t).With("device", creds.Device))
		if err != nil {
			t.Fatal(err)
		}
		clients[i] = c
	}
	t.Logf("%d devices enrolled in %s", fleet, time.Since(start).Round(100*time.Millisecond))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	t.Cleanup(func() {
		var wg sync.WaitGroup
		for _, c := range clients {
			wg.Add(1)
			go func() { defer wg.Done(); c.Close() }()
		}
		wg.Wait()
	})
	start = time.Now()
	for _, c := range clients {
		go func() { _ = c.Connect(ctx) }()
	}
	// connected counts the clients with at least k connects.
	connected := func(k int) int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, cs := range connects {
			if len(cs) >= k {
				n++
			}
		}
		return n
	}
	for connected(1) < fleet {
		if time.Since(start) > bound {
			t.Fatalf("only %d of %d clients connected within %s", connected(1), fleet, bound)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("%d clients connected in %s", fleet, time.Since(start).Round(100*time.Millisecond))

	// The hub's MQTT listener is up before Start returns (it then
	// attaches the registry, the bridge, the API): times are from the
	// restart's start.
	down := time.Now()
	took := rh.Restart(t)
	t.Logf("hub stopped and started again in %s", took.Round(100*time.Millisecond))
	for connected(2) < fleet {
		if time.Since(down) > bound {
			t.Fatalf("only %d of %d clients reconnected within %s of the hub's restart", connected(2), fleet, bound)
		}
		time.Sleep(100 * time.Millisecond)
	}
	all := time.Since(down)

	// The reconnects: each client's first connect after the restart began.
	mu.Lock()
	var at []time.Duration
	for _, cs := range connects {
		for _, c := range cs[1:] {
			if c.After(down) {
				at = append(at, c.Sub(down))
				break
			}
		}
	}
	mu.Unlock()
	slices.Sort(at)
	// Connects that succeeded: busiest second (sliding) and the middle 90 %.
	peak := peakIn(at, time.Second)
	p5, p95 := at[len(at)*5/100], at[len(at)*95/100]
	spread := p95 - p5
	t.Logf("reconnects, from the restart's start: first %s, p5 %s, median %s, p95 %s, last %s; peak %d in one second (%.0f%% of the fleet), mean %.0f/s over p5–p95",
		at[0].Round(10*time.Millisecond), p5.Round(10*time.Millisecond), at[len(at)/2].Round(10*time.Millisecond),
		p95.Round(10*time.Millisecond), at[len(at)-1].Round(10*time.Millisecond), peak, 100*float64(peak)/float64(fleet),
		0.9*float64(fleet)/max(spread.Seconds(), 0.001))
	// Attempts (TCP connects, taken or not): what the jitter spreads. The
	// hub's own accept rate spreads successes even without any jitter, so
	// only attempts tell whether the fleet arrives at once.
	attempts := relay.attemptsSince(down)
	slices.Sort(attempts)
	burst := peakIn(attempts, 100*time.Millisecond)
	t.Logf("connection attempts after the restart: %d (%.1f per device); busiest 100 ms: %d (%.0f%% of the fleet); busiest second: %d",
		len(attempts), float64(len(attempts))/float64(fleet), burst, 100*float64(burst)/float64(fleet), peakIn(attempts, time.Second))
	if float64(burst) > maxBurstShare*float64(fleet) {
		t.Errorf("the jitter did not spread the reconnect attempts: %d of %d devices' attempts within 100 ms (at most %.0f%%)", burst, fleet, 100*maxBurstShare)
	}
	if spread < minSpread {
		t.Errorf("the middle 90%% of the reconnects took only %s (want at least %s with a %s jitter)", spread, minSpread, jitter)
	}
	t.Logf("RELIABILITY | %d agents reconnect after a hub restart (jitter %s; peak %d reconnects/s, busiest 100 ms %d attempts, p5–p95 spread %s) | – | – | – | %s | %s",
		fleet, jitter, peak, burst, spread.Round(10*time.Millisecond), all.Round(100*time.Millisecond), rss())
	t.Logf("RELIABILITY-NOTE | fleet reconnect | recovery: from the hub's restart to the last of %d reconnected; no records (bare uplinks)", fleet)
}

// countingRelay forwards TCP connections to upstream and records when
// each was accepted: connection attempts, which the jitter must spread,
// whether or not the hub then took them.
type countingRelay struct {
	ln       net.Listener
	upstream string
	mu       sync.Mutex
	accepts  []time.Time
	conns    map[net.Conn]bool
}

func startCountingRelay(t *testing.T, upstream string) *countingRelay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &countingRelay{ln: ln, upstream: upstream, conns: map[net.Conn]bool{}}
	t.Cleanup(func() {
		ln.Close()
		r.mu.Lock()
		defer r.mu.Unlock()
		for c := range r.conns {
			c.Close()
		}
	})
	go func() {
		for {
			down, err := ln.Accept()
			if err != nil {
				return
			}
			r.mu.Lock()
			r.accepts = append(r.accepts, time.Now())
			r.conns[down] = true
			r.mu.Unlock()
			go r.serve(down)
		}
	}()
	return r
}

func (r *countingRelay) serve(down net.Conn) {
	defer func() {
		down.Close()
		r.mu.Lock()
		delete(r.conns, down)
		r.mu.Unlock()
	}()
	up, err := net.DialTimeout("tcp", r.upstream, 2*time.Second)
	if err != nil {
		return // the hub is down: the attempt fails, as it would directly
	}
	r.mu.Lock()
	r.conns[up] = true
	r.mu.Unlock()
	defer func() {
		up.Close()
		r.mu.Lock()
		delete(r.conns, up)
		r.mu.Unlock()
	}()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, down); done <- struct{}{} }()
	go func() { _, _ = io.Copy(down, up); done <- struct{}{} }()
	<-done
}

// attemptsSince are the accept times after t0.
func (r *countingRelay) attemptsSince(t0 time.Time) []time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []time.Duration
	for _, a := range r.accepts {
		if a.After(t0) {
			out = append(out, a.Sub(t0))
		}
	}
	return out
}

// peakIn is the most of sorted ts within any window w.
func peakIn(ts []time.Duration, w time.Duration) int {
	peak, j := 0, 0
	for i := range ts {
		for ts[i]-ts[j] >= w {
			j++
		}
		peak = max(peak, i-j+1)
	}
	return peak
}
