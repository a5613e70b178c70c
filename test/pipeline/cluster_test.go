package pipeline

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/hub"
	"github.com/outpost-edge/outpost/sync/state"
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
				LogPath: filepath.Join(dir, "hub.log"), Timeout: 90 * time.Second,
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
func enrol(t *testing.T, h *clusterHub, id string) state.Credentials {
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

	leader := func() (int, hub.Stats) {
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

	ids := deviceIDs(6)
	const perDevice = 1500
	devs := make([]*device, len(ids))
	var wg sync.WaitGroup
	for i, id := range ids {
		// Enrolled on hub a, connected anywhere: the registry is shared.
		creds := enrol(t, hubs[0], id)
		var urls []string
		for j := range hubs {
			urls = append(urls, "tcp://"+hubs[(i+j)%3].mqtt)
		}
		devs[i] = startDevice(t, creds, urls[0], urls[1:]...)
		wg.Add(1)
		go func(d *device) {
			defer wg.Done()
			d.produce(t, "windows", perDevice, 10, 50*time.Millisecond)
		}(devs[i])
	}

	time.Sleep(3 * time.Second)
	t.Logf("killing leader %s (pid %d) mid-stream", hubs[li].name, hubs[li].proc.PID())
	hubs[li].proc.Kill()
	dead := hubs[li]
	hubs[li] = &clusterHub{name: dead.name} // no process: skipped by leader()
	defer func() { hubs[li] = dead }()      // so cleanup finds the stopped process

	deadline = time.Now().Add(30 * time.Second)
	next, _ := leader()
	for next < 0 {
		if time.Now().After(deadline) {
			t.Fatal("no hub took over the pipeline lease within 30s")
		}
		time.Sleep(200 * time.Millisecond)
		next, _ = leader()
	}
	t.Logf("%s took over", hubs[next].name)

	wg.Wait()
	t.Log("produced")
	for _, d := range devs {
		d.waitDrained(t, 120*time.Second)
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
}
