package pipeline

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/hub"
	"github.com/outpost-edge/outpost/hub/trainer"
	"github.com/outpost-edge/outpost/sync/state"
	"github.com/outpost-edge/outpost/sync/tuf"
	"github.com/outpost-edge/outpost/test/kafkatest"
	"github.com/outpost-edge/outpost/test/service"
)

// clusterHub is one outpost-hub process of a test cluster.
type clusterHub struct {
	name       string
	mqtt, http string
	proc       *service.Process
}

func (c *clusterHub) stats(t *testing.T) (hub.Stats, error) {
	t.Helper()
	resp, err := http.Get("http://" + c.http + "/v1/stats")
	if err != nil {
		return hub.Stats{}, err
	}
	defer resp.Body.Close()
	var s hub.Stats
	return s, json.NewDecoder(resp.Body).Decode(&s)
}

// startCluster runs three hub processes on loopback joined by routes, with
// OUTPOST_UP and the KV buckets replicated three times.
func startCluster(t *testing.T, brokers []string, prefix string) []*clusterHub {
	t.Helper()
	bin := build(t, "./hub/cmd/outpost-hub")
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
		conf := filepath.Join(dir, "hub.yaml")
		yaml := fmt.Sprintf(`
data_dir: %s
broker:
  server_name: %s
  nats_port: -1
  sync_always: false
  mqtt_port: %s
  cluster:
    name: test-cluster
    port: %d
    routes: [%s]
    secret: test-only-route-secret
    lease_ttl: 2s
ingest: {replicas: 3}
trainer:
  models: [{model: bearing, pipeline: health}]
kafka:
  brokers: [%s]
  topic_prefix: %s
  partitions: 2
http: {listen: "%s"}
log: {level: info}
`, dir, h.name, mqttPort, routePorts[i], strings.Join(others(routes, i), ", "), strings.Join(brokers, ", "), prefix, h.http)
		if err := os.WriteFile(conf, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func(i int, h *clusterHub) {
			defer wg.Done()
			// Each hub waits for its peers before it reports healthy.
			h.proc, errs[i] = service.Start(context.Background(), service.Spec{
				Name: h.name, Path: bin, Args: []string{"--config", conf},
				LogPath: filepath.Join(dir, "hub.log"), Timeout: 180 * time.Second, // a loaded machine forms the JetStream cluster slowly
				Ready: func(ctx context.Context) error {
					resp, err := http.Get("http://" + h.http + "/healthz")
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
		}(i, h)
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("%s: %v", hubs[i].name, err)
		}
	}
	t.Cleanup(func() {
		for _, h := range hubs {
			if t.Failed() {
				t.Logf("%s log:\n%s", h.name, h.proc.LogTail(60))
			}
			h.proc.Stop()
		}
	})
	return hubs
}

// waitLeader waits until one hub holds the lease and OUTPOST_UP has its
// three current replicas: the cluster is ready for work.
func waitLeader(t *testing.T, hubs []*clusterHub) int {
	t.Helper()
	leader := func() (int, hub.Stats) { return clusterLeader(t, hubs) }
	deadline := time.Now().Add(30 * time.Second)
	li, ls := leader()
	for li < 0 || ls.StreamReplicas != 3 {
		if time.Now().After(deadline) {
			t.Fatalf("no leader with 3 current stream replicas within 30s (leader %d, stats %+v)", li, ls)
		}
		time.Sleep(200 * time.Millisecond)
		li, ls = leader()
	}
	t.Logf("leader %s; OUTPOST_UP has %d current replicas", hubs[li].name, ls.StreamReplicas)
	return li
}

// clusterLeader is the hub holding the pipeline lease, or -1.
func clusterLeader(t *testing.T, hubs []*clusterHub) (int, hub.Stats) {
	for i, h := range hubs {
		if h.proc == nil {
			continue
		}
		if s, err := h.stats(t); err == nil && s.Leader {
			return i, s
		}
	}
	return -1, hub.Stats{}
}

// others are the routes of every hub but i.
func others(all []string, i int) []string {
	var out []string
	for j, r := range all {
		if j != i {
			out = append(out, r)
		}
	}
	return out
}

// enrol adds a device through one hub's REST API.
func enrolOn(t *testing.T, h *clusterHub, id string) state.Credentials {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"id": id})
	resp, err := http.Post("http://"+h.http+"/v1/devices", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
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

// TestHubClusterSurvivesLosingTheLeader runs three hubs as one broker.
// Devices are enrolled on one hub and spread over all three, each with
// the others as fallbacks. Mid-stream the hub that runs the bridge is
// killed with SIGKILL: its devices move to the other hubs, another hub
// takes the lease, and Kafka, read read_committed, holds every record
// exactly once.
func TestHubClusterSurvivesLosingTheLeader(t *testing.T) {
	brokers := kafkatest.Brokers(t)
	prefix := fmt.Sprintf("t%d.", time.Now().UnixNano())
	hubs := startCluster(t, brokers, prefix)

	li := waitLeader(t, hubs)

	// History written before the leader dies: a trained model's (the
	// leader's trainer, asked for a check) and a device's timeline (its
	// enrolment, below). The hubs that survive must answer both.
	leaderURL := "http://" + hubs[li].http
	if code, out := outpostctl(t, leaderURL, "model", "push", bearing(t, 1, "")); code != 0 {
		t.Fatal(out)
	}
	if code, out := outpostctl(t, leaderURL, "model", "promote", "bearing", "1"); code != 0 {
		t.Fatal(out)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		// The trainer loads the production version within a second.
		resp, err := http.Post(leaderURL+"/v1/train/bearing/run", "application/json", nil)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusAccepted {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the leader's trainer did not take a check within 30 s: %v", err)
		}
	}

	ids := deviceIDs(6)
	const perDevice = 1500
	devs := make([]*device, len(ids))
	var wg sync.WaitGroup
	for i, id := range ids {
		// Enrolled on hub a, connected anywhere: the registry is shared.
		creds := enrolOn(t, hubs[0], id)
		var urls []string
		for j := range hubs {
			urls = append(urls, "tcp://"+hubs[(i+j)%3].mqtt)
		}
		devs[i] = startDevice(t, creds, urls[0], urls[1:]...)
		wg.Add(1)
		go func(d *device) {
			defer wg.Done()
			d.Produce(t, "windows", perDevice, 10, 50*time.Millisecond)
		}(devs[i])
	}

	time.Sleep(3 * time.Second)
	t.Logf("killing leader %s (pid %d) mid-stream", hubs[li].name, hubs[li].proc.PID())
	hubs[li].proc.Kill()
	dead := hubs[li]
	hubs[li] = &clusterHub{name: dead.name} // no process: skipped by leader()
	defer func() { hubs[li] = dead }()      // so cleanup finds the stopped process

	deadline := time.Now().Add(30 * time.Second)
	next, _ := clusterLeader(t, hubs)
	for next < 0 {
		if time.Now().After(deadline) {
			t.Fatal("no hub took over the pipeline lease within 30s")
		}
		time.Sleep(200 * time.Millisecond)
		next, _ = clusterLeader(t, hubs)
	}
	t.Logf("%s took over", hubs[next].name)

	wg.Wait()
	t.Log("produced")
	for _, d := range devs {
		d.WaitDrained(t, 120*time.Second)
	}
	t.Log("drained")
	recs, _ := readAll(t, brokers, []string{prefix + "windows"}, len(ids)*perDevice, 120*time.Second)
	checkExactlyOnce(t, recs, ids, perDevice)
	s, err := hubs[next].stats(t)
	if err != nil {
		t.Fatal(err)
	}
	if s.StreamReplicas != 2 {
		t.Errorf("with one hub down, %d current stream replicas, want 2", s.StreamReplicas)
	}
	t.Logf("exactly once across the failover: %d records; new leader stats %+v", len(recs), s)
	for _, h := range hubs {
		if h.proc == nil {
			continue
		}
		var evs []trainer.Event
		getOK(t, "http://"+h.http+"/v1/train/bearing/history", &evs)
		found := false
		for _, e := range evs {
			found = found || e.Detail == "asked by an operator"
		}
		var detail state.DeviceDetail
		getOK(t, "http://"+h.http+"/v1/devices/"+ids[0], &detail)
		enrolled := false
		for _, e := range detail.Timeline {
			enrolled = enrolled || e.Kind == "enrolled"
		}
		if !found || !enrolled {
			t.Errorf("%s after the failover: training history %+v, timeline %+v", h.name, evs, detail.Timeline)
		}
	}
}

// getOK decodes a GET's answer into v, asking again for up to 30 s while
// it is not 200.
func getOK(t *testing.T, url string, v any) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		resp, err := http.Get(url)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				if err := json.Unmarshal(body, v); err != nil {
					t.Fatalf("GET %s: %v", url, err)
				}
				return
			}
			// 503: the stores of a cluster that just lost a hub elect leaders.
			err = fmt.Errorf("%s: %s", resp.Status, body)
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: %v", url, err)
		}
	}
}

// TestClusterServesOneTUFRepository: three hubs serve one signed
// repository. A version pushed through any hub is signed by the lease
// holder and served by all; a device that refreshes from each hub in turn
// never sees metadata go back; and when the signing hub is killed, the
// next lease holder signs the next version with the same keys.
func TestClusterServesOneTUFRepository(t *testing.T) {
	brokers := kafkatest.Brokers(t)
	hubs := startCluster(t, brokers, fmt.Sprintf("t%d.", time.Now().UnixNano()))
	li := waitLeader(t, hubs)
	get := func(h *clusterHub, path string) ([]byte, int) {
		resp, err := http.Get("http://" + h.http + path)
		if err != nil {
			return nil, 0
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return b, resp.StatusCode
	}
	// Right after the cluster forms (or loses a hub) the registry's
	// replicated buckets may still be electing leaders: the hub answers
	// 503 and outpostctl asks again.
	push := func(h *clusterHub, dir string) {
		t.Helper()
		if code, out := outpostctl(t, "http://"+h.http, "model", "push", dir); code != 0 {
			t.Fatal(out)
		}
	}
	push(hubs[1], bearing(t, 1, ""))
	// The first leader created the repository; every hub serves its root.
	var root []byte
	deadline := time.Now().Add(30 * time.Second)
	for {
		roots := map[string]bool{}
		for _, h := range hubs {
			b, code := get(h, "/tuf/1.root.json")
			if code == http.StatusOK {
				roots[string(b)] = true
				root = b
			}
		}
		if len(roots) == 1 && root != nil {
			if _, code := get(hubs[0], "/tuf/1.root.json"); code == http.StatusOK {
				if _, code := get(hubs[2], "/tuf/1.root.json"); code == http.StatusOK {
					break
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the hubs do not serve one root: %d different", len(roots))
		}
		time.Sleep(200 * time.Millisecond)
	}
	device := t.TempDir() // one device's trusted metadata, moving between hubs
	seeFrom := func(h *clusterHub, v int64) error {
		c, err := tuf.NewClient(root, "http://"+h.http+"/tuf", device)
		if err != nil {
			return err
		}
		if err := c.Refresh(); err != nil {
			return err
		}
		tf, err := c.Target(tuf.ModelTargetName("bearing", v))
		if err != nil {
			return err
		}
		return c.Download(context.Background(), tf, filepath.Join(t.TempDir(), "pkg.tar"))
	}
	waitSee := func(h *clusterHub, v int64) {
		t.Helper()
		var err error
		start := time.Now()
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			if err = seeFrom(h, v); err == nil {
				t.Logf("%s serves v%d (after %s)", h.name, v, time.Since(start).Round(time.Millisecond))
				return
			}
			t.Logf("%s: %v", h.name, err)
		}
		t.Fatalf("%s does not serve bearing v%d: %v", h.name, v, err)
	}
	for _, h := range hubs {
		waitSee(h, 1)
	}

	hubs[li].proc.Kill()
	var alive []*clusterHub
	for i, h := range hubs {
		if i != li {
			alive = append(alive, h)
		}
	}
	push(alive[0], bearing(t, 2, ""))
	for _, h := range alive {
		waitSee(h, 2)
		waitSee(h, 1)
	}
}
