package chaos

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/hub"
	"github.com/outpost-edge/outpost/sync/state"
	"github.com/outpost-edge/outpost/test/fleettest"
	"github.com/outpost-edge/outpost/test/kafkatest"
	"github.com/outpost-edge/outpost/test/service"
	"github.com/outpost-edge/outpost/test/testenv"
)

// clusterHub is one outpost-hub process of a 3-hub cluster (the same
// layout as test/pipeline's cluster tests: routes on loopback, OUTPOST_UP
// and the KV buckets replicated three times, a 2 s lease).
type clusterHub struct {
	name       string
	mqtt, http string
	proc       *service.Process
	dead       bool
}

func (c *clusterHub) stats() (hub.Stats, error) {
	cl := http.Client{Timeout: 2 * time.Second}
	resp, err := cl.Get("http://" + c.http + "/v1/stats")
	if err != nil {
		return hub.Stats{}, err
	}
	defer resp.Body.Close()
	var s hub.Stats
	return s, json.NewDecoder(resp.Body).Decode(&s)
}

// start runs the hub binary with conf (and env added to the test's) and
// waits for its /healthz.
func (c *clusterHub) start(bin, conf string, env []string) error {
	var err error
	c.proc, err = service.Start(context.Background(), service.Spec{
		Name: c.name, Path: bin, Args: []string{"--config", conf}, Env: env,
		LogPath: filepath.Join(filepath.Dir(conf), "hub.log"), Timeout: 180 * time.Second, // a loaded machine forms the JetStream cluster slowly
		Ready: func(ctx context.Context) error {
			resp, err := http.Get("http://" + c.http + "/healthz")
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("healthz: %s", resp.Status)
			}
			return nil
		},
	})
	return err
}

// status reads a field of the hub process's /proc status in MiB (0 once
// it is gone): VmRSS now, VmHWM at its peak.
func (c *clusterHub) status(field string) int {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", c.proc.PID()))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return n >> 10
		}
	}
	return 0
}

// peakRSS is the hub process's VmHWM in MiB (0 once it is gone).
func (c *clusterHub) peakRSS() int { return c.status("VmHWM") }

// buildHub compiles outpost-hub into t's temp dir.
func buildHub(t *testing.T) string {
	t.Helper()
	root, err := testenv.Root()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "outpost-hub")
	cmd := exec.Command("go", "build", "-o", bin, "./hub/cmd/outpost-hub")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build outpost-hub: %v\n%s", err, out)
	}
	return bin
}

func startCluster(t *testing.T, brokers []string, prefix string) []*clusterHub {
	t.Helper()
	bin := buildHub(t)
	port := func() int {
		p, err := service.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	hubs := make([]*clusterHub, 3)
	routes := make([]string, 3)
	routePorts := make([]int, 3)
	for i := range hubs {
		routePorts[i] = port()
		routes[i] = service.Addr(routePorts[i])
		hubs[i] = &clusterHub{name: fmt.Sprintf("hub-%c", 'a'+i), mqtt: service.Addr(port()), http: service.Addr(port())}
	}
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i, h := range hubs {
		dir := t.TempDir()
		_, mqttPort, _ := strings.Cut(h.mqtt, ":")
		var others []string
		for j, r := range routes {
			if j != i {
				others = append(others, r)
			}
		}
		conf := filepath.Join(dir, "hub.yaml")
		yaml := fmt.Sprintf(`
data_dir: %s
broker:
  server_name: %s
  nats_port: -1
  sync_always: false
  mqtt_port: %s
  cluster:
    name: chaos-cluster
    port: %d
    routes: [%s]
    secret: test-only-route-secret
    lease_ttl: 2s
ingest: {replicas: 3}
kafka:
  brokers: [%s]
  topic_prefix: %s
  partitions: 2
http: {listen: "%s"}
log: {level: warn}
`, dir, h.name, mqttPort, routePorts[i], strings.Join(others, ", "), strings.Join(brokers, ", "), prefix, h.http)
		if err := os.WriteFile(conf, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func(i int, h *clusterHub) {
			defer wg.Done()
			errs[i] = h.start(bin, conf, nil)
		}(i, h)
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, h := range hubs {
			if h.proc == nil {
				continue
			}
			if t.Failed() {
				t.Logf("%s log:\n%s", h.name, h.proc.LogTail(40))
			}
			h.proc.Stop()
		}
	})
	for i, err := range errs {
		if err != nil {
			t.Fatalf("%s: %v", hubs[i].name, err)
		}
	}
	return hubs
}

// leaderOf is the live hub holding the pipeline lease, or -1.
func leaderOf(hubs []*clusterHub) (int, hub.Stats) {
	for i, h := range hubs {
		if h.dead {
			continue
		}
		if s, err := h.stats(); err == nil && s.Leader {
			return i, s
		}
	}
	return -1, hub.Stats{}
}

func enrolOn(t *testing.T, h *clusterHub, id string) state.Credentials {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"id": id})
	for attempt := 0; ; attempt++ {
		resp, err := http.Post("http://"+h.http+"/v1/devices", "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode == http.StatusServiceUnavailable && attempt < 50 {
			resp.Body.Close()
			time.Sleep(200 * time.Millisecond) // the replicated buckets are still electing
			continue
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("enrol %s: %s", id, resp.Status)
		}
		var c state.Credentials
		if err := json.NewDecoder(resp.Body).Decode(&c); err != nil {
			t.Fatal(err)
		}
		return c
	}
}

// Three outpost-hub processes form one cluster; devices stream through
// all of them, each with the other hubs as fallbacks. Under load the hub
// holding the pipeline lease (it runs the bridge) is killed with SIGKILL,
// by its pid. Another hub takes the lease within failoverBound, its
// devices move to the others and catch up within bound, and Kafka holds
// every record exactly once.
func TestHubKill9InCluster(t *testing.T) {
	watchBaseline(t, "hub kill -9 in a 3-hub cluster", true)
	brokers := kafkatest.Brokers(t)
	prefix := fmt.Sprintf("c%d.", time.Now().UnixNano())
	hubs := startCluster(t, brokers, prefix)
	deadline := time.Now().Add(60 * time.Second)
	li, ls := leaderOf(hubs)
	for li < 0 || ls.StreamReplicas != 3 {
		if time.Now().After(deadline) {
			t.Fatalf("no leader with 3 current stream replicas within 60 s (leader %d, %+v)", li, ls)
		}
		time.Sleep(200 * time.Millisecond)
		li, ls = leaderOf(hubs)
	}
	t.Logf("leader %s (pid %d); OUTPOST_UP has 3 current replicas", hubs[li].name, hubs[li].proc.PID())

	const devices = 6
	traffic := 25 * time.Second * scale()
	n := int(traffic.Seconds() * 100)
	var devs []*fleettest.Device
	var want []string
	var errs atomic.Int64
	var firstErr atomic.Value
	done := make(chan struct{}, devices)
	for i := 0; i < devices; i++ {
		creds := enrolOn(t, hubs[0], fmt.Sprintf("chaos-%d", i))
		var urls []string
		for j := range hubs {
			urls = append(urls, "tcp://"+hubs[(i+j)%3].mqtt)
		}
		d := fleettest.Start(t, t.TempDir(), fleettest.SendConfig, creds, logger(t), urls[0], urls[1:]...)
		devs = append(devs, d)
		ls := fleettest.Labels(d.ID, n)
		want = append(want, ls...)
		go func() { defer func() { done <- struct{}{} }(); produceBackpressured(t, d, ls, &errs, &firstErr) }()
	}
	// Under load: the bridge is committing steadily when its hub dies.
	deadline = time.Now().Add(60 * time.Second)
	for {
		s, err := hubs[li].stats()
		if err == nil && s.BridgeTxns >= 10 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the leader's bridge committed fewer than 10 transactions in 60 s: %+v %v", s, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	var peak int
	for _, h := range hubs {
		peak = max(peak, h.peakRSS())
	}
	victim := hubs[li]
	pid := victim.proc.PID()
	victim.proc.Kill() // SIGKILL to the hub's pid
	victim.dead = true
	killed := time.Now()
	t.Logf("killed leader %s (pid %d) with SIGKILL", victim.name, pid)

	const failoverBound = 15 * time.Second
	next := -1
	for next < 0 {
		if time.Since(killed) > failoverBound {
			t.Fatalf("no hub took over the pipeline lease within %s", failoverBound)
		}
		time.Sleep(100 * time.Millisecond)
		next, _ = leaderOf(hubs)
	}
	failover := time.Since(killed)
	t.Logf("%s took the lease %s after the kill", hubs[next].name, failover.Round(100*time.Millisecond))

	const bound = 60 * time.Second
	for _, d := range devs {
		for d.Depth(t) > 50 {
			if time.Since(killed) > bound {
				t.Fatalf("%s: %d records waiting %s after the kill (bound %s)", d.ID, d.Depth(t), time.Since(killed).Round(time.Second), bound)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	recovery := time.Since(killed)
	for range devs {
		<-done
	}
	for _, d := range devs {
		d.WaitDrained(t, 120*time.Second)
	}
	if errs.Load() != 0 {
		t.Errorf("%d outbox writes refused (first %v)", errs.Load(), firstErr.Load())
	}
	got := fleettest.ReadLabels(t, brokers, []string{prefix + "windows"}, len(want), 120*time.Second)
	for _, h := range hubs {
		if !h.dead {
			peak = max(peak, h.peakRSS())
		}
	}
	st, _ := hubs[next].stats()
	t.Logf("new leader %s: %d bridge transactions, %d aborted, %d records, %d duplicates dropped, %d stream replicas current",
		hubs[next].name, st.BridgeTxns, st.BridgeAborts, st.BridgeRecords, st.BridgeDuplicates, st.StreamReplicas)
	got.ExactlyOnce(t, want)
	_, dup := got.Count(want)
	t.Logf("RELIABILITY | hub kill -9 of the lease holder in a 3-hub cluster (lease moved in %s) | %d | %d | %d | %s | peak %d MiB (largest hub process)",
		failover.Round(100*time.Millisecond), len(want), got.Records, len(dup), recovery.Round(100*time.Millisecond), peak)
}
