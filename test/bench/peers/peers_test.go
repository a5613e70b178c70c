//go:build peers

package peers

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/test/testenv"
)

// config comes from the environment; `make bench-peers` sets the paths.
type config struct {
	rates      []int         // PEERS_RATES: msg/s, comma-separated
	duration   time.Duration // PEERS_DURATION: how long the generator runs at each rate
	systems    []string      // PEERS_SYSTEMS: ekuiper, outpost
	keys       int           // PEERS_KEYS: sensor keys
	cpu        string        // PEERS_CPU: the core of the system under test (taskset list)
	ekuiper    string        // PEERS_EKUIPER_DIR: kuiperd and its etc/
	version    string        // PEERS_EKUIPER_VERSION: for the report
	options    string        // PEERS_EKUIPER_OPTIONS: a JSON object merged into the rule's options (default: none, eKuiper's defaults)
	bin        string        // PEERS_BIN: outpost-agent and outpost-hub
	maxUnacked int           // PEERS_MAX_UNACKED: the agent's mqtt.max_unacked (0: its default)
	inflight   int           // PEERS_INFLIGHT: Mosquitto's max_inflight_messages
	drainMax   time.Duration // PEERS_DRAIN_MAX: how long to wait for a system to catch up
	report     string        // PEERS_REPORT: file the table is written to (empty: none)
}

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func loadConfig(t *testing.T) config {
	t.Helper()
	root, err := testenv.Root()
	if err != nil {
		t.Fatal(err)
	}
	c := config{
		systems: strings.Split(env("PEERS_SYSTEMS", "ekuiper,outpost"), ","),
		cpu:     env("PEERS_CPU", "0"),
		ekuiper: env("PEERS_EKUIPER_DIR", ""),
		version: env("PEERS_EKUIPER_VERSION", "unknown"),
		options: env("PEERS_EKUIPER_OPTIONS", ""),
		bin:     env("PEERS_BIN", filepath.Join(root, "bin")),
		report:  env("PEERS_REPORT", ""),
	}
	for _, r := range strings.Split(env("PEERS_RATES", "5000,10000,20000,30000,40000"), ",") {
		n, err := strconv.Atoi(strings.TrimSpace(r))
		if err != nil || n <= 0 {
			t.Fatalf("PEERS_RATES: %q is not a rate", r)
		}
		c.rates = append(c.rates, n)
	}
	for name, p := range map[string]*time.Duration{"PEERS_DURATION": &c.duration, "PEERS_DRAIN_MAX": &c.drainMax} {
		def := map[string]string{"PEERS_DURATION": "20s", "PEERS_DRAIN_MAX": "60s"}[name]
		if *p, err = time.ParseDuration(env(name, def)); err != nil || *p <= 0 {
			t.Fatalf("%s: %v", name, err)
		}
	}
	for name, p := range map[string]*int{"PEERS_KEYS": &c.keys, "PEERS_MAX_UNACKED": &c.maxUnacked, "PEERS_INFLIGHT": &c.inflight} {
		def := map[string]string{"PEERS_KEYS": "1000", "PEERS_MAX_UNACKED": "0", "PEERS_INFLIGHT": "1000"}[name]
		if *p, err = strconv.Atoi(env(name, def)); err != nil || *p < 0 {
			t.Fatalf("%s: %v", name, err)
		}
	}
	for _, s := range c.systems {
		switch s {
		case "ekuiper":
			if _, err := os.Stat(filepath.Join(c.ekuiper, "kuiperd")); err != nil {
				t.Fatalf("PEERS_EKUIPER_DIR: no kuiperd (%v); run `make bench-peers`", err)
			}
		case "outpost":
			for _, b := range []string{"outpost-agent", "outpost-hub"} {
				if _, err := os.Stat(filepath.Join(c.bin, b)); err != nil {
					t.Fatalf("PEERS_BIN: no %s (%v); run `make build`", b, err)
				}
			}
		default:
			t.Fatalf("PEERS_SYSTEMS: unknown system %q", s)
		}
	}
	return c
}

// row is one system at one rate.
type row struct {
	system   string
	rate     int     // target msg/s
	achieved float64 // msg/s the generator reached
	sent     int64
	pubErrs  int64
	lag      time.Duration // generator stop → last reading reflected
	behind   bool          // not caught up within drainMax
	stalled  bool          // stopped short of every reading
	cpuUs    float64       // CPU-µs per event of the system, until its last window result
	lost     int64         // acknowledged readings missing from the window results (-1: unknown)
	results  int64         // window results delivered
	rss      int64         // peak RSS, bytes
	aux      string        // CPU-µs per event of the generator, broker (and hub)
}

// keepsUp: caught up within 2 s of the generator's stop with every reading
// in the window results, in a run where the generator reached at least 95%
// of the rate and the broker acknowledged every publish (otherwise the rate
// was not tested).
func (r row) keepsUp() bool {
	return r.tested() && !r.behind && !r.stalled && r.lag < 2*time.Second && r.lost == 0
}

func (r row) tested() bool { return r.achieved >= 0.95*float64(r.rate) && r.pubErrs == 0 }

func (r row) verdict() string {
	switch {
	case !r.tested():
		return "untested (generator)"
	case r.keepsUp():
		return "yes"
	}
	return "no"
}

// TestPeers runs every system at every rate and reports the table.
func TestPeers(t *testing.T) {
	cfg := loadConfig(t)
	ctx := context.Background()
	t.Logf("eKuiper %s (rule options %s), agent max_unacked %s, Mosquitto max_inflight_messages %d, %d keys, %s per rate, systems on CPU %s, harness on CPUs %s",
		cfg.version, cmp.Or(cfg.options, "{}"), unacked(cfg.maxUnacked), cfg.inflight, cfg.keys, cfg.duration, cfg.cpu, affinity())
	load0 := loadavg()
	var rows []row
	for _, rate := range cfg.rates {
		for _, sys := range cfg.systems {
			r, err := runOne(ctx, t, cfg, sys, rate)
			if err != nil {
				t.Fatalf("%s at %d msg/s: %v", sys, rate, err)
			}
			t.Logf("%s at %d msg/s: %s", sys, rate, r.line())
			rows = append(rows, r)
		}
	}
	table := report(cfg, rows) + fmt.Sprintf("\nLoad average (1, 5, 15 min) at the start: %s; at the end: %s (other work on the machine shares its cores).\n", load0, loadavg())
	fmt.Println(table)
	if cfg.report != "" {
		if err := os.WriteFile(cfg.report, []byte(table), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// loadavg is the first three fields of /proc/loadavg.
func loadavg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(data)); err == nil && len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return "?"
}

// affinity is the harness's CPU list, as the kernel reports it.
func affinity() string {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return "?"
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "Cpus_allowed_list:"); ok {
			return strings.TrimSpace(rest)
		}
	}
	return "?"
}

func runOne(ctx context.Context, t *testing.T, cfg config, name string, rate int) (row, error) {
	dir := t.TempDir()
	broker, url, err := startMosquitto(ctx, dir, cfg.inflight)
	if err != nil {
		return row{}, err
	}
	defer broker.Stop()
	mon, err := connect(ctx, url, "peers-monitor")
	if err != nil {
		return row{}, err
	}
	defer mon.Disconnect(250)
	subs, err := watchSubscriptions(ctx, mon)
	if err != nil {
		return row{}, err
	}
	if err := subs.await(ctx, 1); err != nil { // the monitor's own
		return row{}, err
	}
	base := subs.n.Load()

	var sys system
	var adds int64
	switch name {
	case "ekuiper":
		sys, err = startEKuiper(ctx, dir, cfg.ekuiper, cfg.cpu, url, cfg.options, mon)
		adds = 2
	case "outpost":
		sys, err = startOutpost(ctx, dir, cfg.bin, cfg.cpu, url, cfg.maxUnacked)
		adds = 1
	}
	if err != nil {
		return row{}, err
	}
	defer sys.Stop()
	if err := subs.await(ctx, base+adds); err != nil {
		return row{}, fmt.Errorf("%w\n%s", err, sys.Log())
	}
	pub, err := connect(ctx, url, "peers-generator")
	if err != nil {
		return row{}, err
	}
	defer pub.Disconnect(250)
	time.Sleep(time.Second) // let startup work settle before the clock starts

	pids := map[string]int{"generator": os.Getpid(), "broker": broker.PID()}
	for k, v := range sys.Others() {
		pids[k] = v
	}
	cpu0, err := cpuTime(sys.PID())
	if err != nil {
		return row{}, err
	}
	aux0 := map[string]time.Duration{}
	for k, pid := range pids {
		if aux0[k], err = cpuTime(pid); err != nil {
			return row{}, err
		}
	}
	g, err := generate(ctx, pub, rate, cfg.duration, cfg.keys)
	if err != nil {
		return row{}, err
	}
	if g.errors > 0 {
		t.Logf("%s at %d msg/s: %d of %d publishes failed, the first: %v", name, rate, g.errors, g.n, g.firstErr)
	}
	r := row{system: name, rate: rate, sent: g.n, pubErrs: g.errors,
		achieved: float64(g.n) / g.stop.Sub(g.start).Seconds()}

	// Lag: from the generator's last publish until the system's count of
	// processed readings reaches what the broker acknowledged.
	acked := g.n - g.errors
	var processed, last int64
	lastChange := time.Now()
	for {
		n, err := sys.Processed(ctx)
		if err != nil {
			return row{}, fmt.Errorf("processed: %w\n%s", err, sys.Log())
		}
		now := time.Now()
		if n != last {
			last, lastChange = n, now
		}
		processed = n
		if n >= acked {
			r.lag = now.Sub(g.stop)
			break
		}
		if now.Sub(lastChange) > 5*time.Second {
			r.stalled, r.lag = true, lastChange.Sub(g.stop)
			break
		}
		if now.Sub(g.stop) > cfg.drainMax {
			r.behind, r.lag = true, now.Sub(g.stop)
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	cpu1, err := cpuTime(sys.PID())
	if err != nil {
		return row{}, err
	}
	var aux []string
	for _, k := range []string{"generator", "broker", "hub"} {
		if pid, ok := pids[k]; ok {
			c, err := cpuTime(pid)
			if err != nil {
				return row{}, err
			}
			aux = append(aux, fmt.Sprintf("%s %.0f", k, float64((c-aux0[k]).Microseconds())/float64(g.n)))
		}
	}
	r.aux = strings.Join(aux, ", ")

	// Loss: the readings counted in the window results, once the trickle
	// has moved the watermark past the run's last window (its end plus
	// the tolerance) and every result has arrived.
	r.lost = -1
	if !r.behind {
		tctx, stop := context.WithCancel(ctx)
		defer stop()
		terr := make(chan error, 1)
		go func() { terr <- trickle(tctx, pub) }()
		closed := g.lastTS.Truncate(windowSize).Add(windowSize + tolerance)
		// The system's CPU counts until its last result: eKuiper
		// aggregates a window when it closes, the agent as readings come.
		var prev int64
		changed := time.Now()
		for {
			got := sys.Results().readings.Load()
			if got != prev {
				prev, changed = got, time.Now()
				if cpu1, err = cpuTime(sys.PID()); err != nil {
					return row{}, err
				}
			}
			if got >= acked {
				break
			}
			if time.Now().After(closed) && time.Since(changed) > 10*time.Second {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		stop()
		if err := <-terr; err != nil {
			return row{}, err
		}
		r.results, r.lost = sys.Results().results.Load(), acked-sys.Results().readings.Load()
	}
	if processed > 0 {
		r.cpuUs = float64((cpu1 - cpu0).Microseconds()) / float64(processed)
	}
	if r.rss, err = peakRSS(sys.PID()); err != nil {
		return row{}, err
	}
	if !r.keepsUp() {
		t.Logf("%s at %d msg/s, processed %d of %d: %s", name, rate, processed, g.n, sys.Detail(ctx))
	}
	return r, nil
}

func (r row) lagText() string {
	switch {
	case r.behind:
		return fmt.Sprintf("> %.0f s", r.lag.Seconds())
	case r.stalled:
		return fmt.Sprintf("stalled at %.1f s", r.lag.Seconds())
	}
	return fmt.Sprintf("%.1f s", r.lag.Seconds())
}

func (r row) lostText() string {
	var s string
	switch {
	case r.lost < 0:
		s = "? (still behind)"
	case r.lost == 0:
		s = "0"
	default:
		s = fmt.Sprintf("%d (%.1f%%)", r.lost, 100*float64(r.lost)/float64(r.sent))
	}
	if r.pubErrs > 0 {
		s += fmt.Sprintf("; %d publishes failed", r.pubErrs)
	}
	return s
}

func (r row) line() string {
	return fmt.Sprintf("sent %d at %.0f msg/s (%d unacked), %.1f CPU-µs/event, lag %s, lost %s, %d window results, peak RSS %.0f MB, keeps up %s; CPU-µs/event of %s",
		r.sent, r.achieved, r.pubErrs, r.cpuUs, r.lagText(), r.lostText(), r.results, float64(r.rss)/1e6, r.verdict(), r.aux)
}

// unacked names the agent's max_unacked for the report.
func unacked(n int) string {
	if n == 0 {
		return "default"
	}
	return strconv.Itoa(n)
}

// report is the markdown table and the verdict per system.
func report(cfg config, rows []row) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\neKuiper %s (-tags core, rule options %s) and outpost-agent (max_unacked %s), each on CPU %s; %d keys, 1 reading per message, QoS 1, %s per rate\n\n",
		cfg.version, cmp.Or(cfg.options, "default"), unacked(cfg.maxUnacked), cfg.cpu, cfg.keys, cfg.duration)
	b.WriteString("| rate (msg/s) | system | achieved (msg/s) | CPU-µs/event | lag at stop | lost | peak RSS | keeps up | generator, broker, hub (CPU-µs/event) |\n")
	b.WriteString("|---:|---|---:|---:|---:|---:|---:|---|---|\n")
	best := map[string]int{}
	for _, r := range rows {
		up := r.verdict()
		if r.keepsUp() {
			best[r.system] = max(best[r.system], r.rate)
		}
		fmt.Fprintf(&b, "| %d | %s | %.0f | %.1f | %s | %s | %.0f MB | %s | %s |\n",
			r.rate, r.system, r.achieved, r.cpuUs, r.lagText(), r.lostText(), float64(r.rss)/1e6, up, r.aux)
	}
	b.WriteString("\nCPU-µs/event: the system's user+system CPU from the generator's start until its last window result, per reading. " +
		"Lag: from the generator's last publish until the system's count of readings taken reaches what the broker acknowledged. " +
		"Lost: acknowledged readings missing from the window results' counts. Peak RSS: VmHWM. " +
		"The last column is the CPU per reading of the harness (generator and result reader), Mosquitto and the hub, on the harness's CPUs.\n")
	b.WriteString("\nHighest rate kept up (lag < 2 s) with no loss:\n")
	for _, s := range cfg.systems {
		if n, ok := best[s]; ok {
			fmt.Fprintf(&b, "- %s: %d msg/s\n", s, n)
		} else {
			fmt.Fprintf(&b, "- %s: none of the rates run\n", s)
		}
	}
	return b.String()
}
