package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/test/kafkatest"
	"github.com/outpost-edge/outpost/test/service"
)

// TestSIGTERMLosesNoAcceptedLine pushes 10,000 readings to the agent's HTTP
// source from a few concurrent clients, stops the agent with SIGTERM
// mid-stream and starts it again on the same data directory. A client
// resends a request the agent did not accept (an error, a 503), as a real
// one would, and never one it accepted. Every accepted line must then be
// counted in its window in Kafka.
func TestSIGTERMLosesNoAcceptedLine(t *testing.T) {
	brokers := kafkatest.Brokers(t)
	cfg := hubConfig(t, brokers, t.TempDir())
	h := startHub(t, cfg)
	defer h.Close()
	creds, err := h.Registry().Add(context.Background(), "edge-sigterm", nil)
	if err != nil {
		t.Fatal(err)
	}
	bin := buildAgent(t)
	dir := t.TempDir()
	port, err := service.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := service.Addr(port)
	conf := filepath.Join(dir, "agent.yaml")
	// max_out_of_order keeps every window open until the closing reading
	// at the end, so a line is either in its window or lost: never late.
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`
device: {id: edge-sigterm}
data_dir: %s
hub: {url: "tcp://%s", username: %s, password: %s}
uplink: {ack_timeout: 1s}
metrics: {listen: ""}
log: {level: info}
pipelines:
  - name: push
    source: {type: http, http: {listen: %q}}
    decode: {key_field: k, time_field: ts, fields: [v]}
    window: {kind: tumbling, size: 1s, max_out_of_order: 1h}
    aggregations: [count]
`, filepath.Join(dir, "data"), h.MQTTAddr(), creds.Username, creds.Password, addr)), 0o644); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "agent.log")
	start := func() *exec.Cmd {
		cmd := exec.Command(bin, "--config", conf)
		logf, _ := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		cmd.Stdout, cmd.Stderr = logf, logf
		service.DiesWithTest(cmd)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	agentLog := func() string { b, _ := os.ReadFile(logPath); return tail(string(b), 40) }

	// 10,000 readings, 4 keys, one millisecond of event time apart: 40
	// windows of 250 readings, in 200 requests of 50 lines.
	const (
		lines, perRequest, keys, clients = 10000, 50, 4, 4
		requests                         = lines / perRequest
	)
	base := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	window := func(i int) string {
		return fmt.Sprintf("k%d@%s", i%keys, base.Add(time.Duration(i)*time.Millisecond).Truncate(time.Second).Format(time.RFC3339))
	}
	body := func(req int) string {
		var b strings.Builder
		for i := req * perRequest; i < (req+1)*perRequest; i++ {
			ts := base.Add(time.Duration(i) * time.Millisecond).Format(time.RFC3339Nano)
			fmt.Fprintf(&b, `{"k":"k%d","ts":"%s","v":%d}`+"\n", i%keys, ts, i)
		}
		return b.String()
	}

	client := &http.Client{Timeout: 30 * time.Second}
	// post answers whether the agent accepted the body: any 2xx is what a
	// client takes for "stored".
	post := func(b string) (bool, string) {
		resp, err := client.Post("http://"+addr+"/ingest", "application/x-ndjson", strings.NewReader(b))
		if err != nil {
			return false, "error"
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode/100 == 2 {
			return true, ""
		}
		if resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") == "" {
			t.Errorf("503 without Retry-After")
		}
		return false, resp.Status
	}

	agent := start()
	running := agent
	var stopped atomic.Bool
	defer func() {
		if !stopped.Load() {
			_ = running.Process.Signal(syscall.SIGKILL)
			_ = running.Wait()
		}
	}()

	var (
		mu            sync.Mutex
		accepted      = make([]int, requests) // times each request was accepted
		refusals      = map[string]int{}
		sent          atomic.Int64 // lines sent, resends included
		acceptedCount atomic.Int64 // requests accepted
		beforeStop    atomic.Int64 // lines accepted by the first agent
		first         atomic.Bool  // the first agent is running
	)
	first.Store(true)
	queue := make(chan int, requests)
	for r := 0; r < requests; r++ {
		queue <- r
	}
	var all sync.WaitGroup
	all.Add(requests)
	var senders sync.WaitGroup
	for c := 0; c < clients; c++ {
		senders.Add(1)
		go func() {
			defer senders.Done()
			for r := range queue {
				sent.Add(perRequest)
				ok, why := post(body(r))
				if !ok {
					mu.Lock()
					refusals[why]++
					mu.Unlock()
					time.Sleep(20 * time.Millisecond)
					queue <- r // resend: not accepted, so maybe not stored
					continue
				}
				mu.Lock()
				accepted[r]++
				mu.Unlock()
				if first.Load() {
					beforeStop.Add(perRequest)
				}
				acceptedCount.Add(1)
				all.Done()
			}
		}()
	}

	// SIGTERM once two fifths of the requests are accepted.
	for deadline := time.Now().Add(60 * time.Second); acceptedCount.Load() < requests*2/5; {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d requests accepted\nagent log:\n%s", acceptedCount.Load(), requests, agentLog())
		}
		time.Sleep(time.Millisecond)
	}
	stopped.Store(true)
	first.Store(false)
	if err := agent.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- agent.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("agent exited with %v after SIGTERM\nagent log:\n%s", err, agentLog())
		}
	case <-time.After(30 * time.Second):
		_ = agent.Process.Signal(syscall.SIGKILL)
		t.Fatalf("agent did not stop within 30 s of SIGTERM\nagent log:\n%s", agentLog())
	}
	atStop := acceptedCount.Load()
	if atStop >= requests {
		t.Fatalf("every request was accepted before SIGTERM took effect: the stop was not mid-stream")
	}
	running = start()
	stopped.Store(false)

	waited := make(chan struct{})
	go func() { all.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(120 * time.Second):
		t.Fatalf("%d of %d requests accepted after the restart\nagent log:\n%s", acceptedCount.Load(), requests, agentLog())
	}
	close(queue)
	senders.Wait()
	// One reading far ahead moves the watermark past every window.
	closer := fmt.Sprintf(`{"k":"closer","ts":"%s","v":0}`+"\n", base.Add(2*time.Hour).Format(time.RFC3339Nano))
	for i := 0; ; i++ {
		if ok, _ := post(closer); ok {
			break
		}
		if i == 100 {
			t.Fatalf("closing reading refused\nagent log:\n%s", agentLog())
		}
		time.Sleep(100 * time.Millisecond)
	}

	want := map[string]int{} // accepted lines per window
	for r, n := range accepted {
		for i := r * perRequest; i < (r+1)*perRequest; i++ {
			want[window(i)] += n
		}
	}
	recs, _ := readAgentRecords(t, brokers, []string{cfg.Kafka.TopicPrefix + "windows"}, len(want), 90*time.Second)
	got := map[string]int{}
	found := 0
	for _, r := range recs {
		var w struct {
			Key    string
			Start  time.Time
			Fields map[string]map[string]float64
		}
		if err := json.Unmarshal(r.Data, &w); err != nil {
			t.Fatalf("window record: %v", err)
		}
		n := int(w.Fields["v"]["count"])
		got[w.Key+"@"+w.Start.UTC().Format(time.RFC3339)] += n
		found += n
	}
	var lost []string
	missing := 0
	for id, n := range want {
		if got[id] < n {
			missing += n - got[id]
			if len(lost) < 10 {
				lost = append(lost, fmt.Sprintf("%s: %d of %d", id, got[id], n))
			}
		}
	}
	mu.Lock()
	t.Logf("lines: %d distinct, %d sent with resends; %d answered 2xx (%d by the agent stopped with SIGTERM, %d requests accepted when it stopped); refusals %v; %d counted in %d window records in Kafka",
		lines, sent.Load(), acceptedCount.Load()*perRequest, beforeStop.Load(), atStop, refusals, found, len(recs))
	mu.Unlock()
	if missing > 0 || found < lines {
		t.Fatalf("%d accepted lines missing from their windows in Kafka (%d counted, %d accepted): %v\nagent log:\n%s",
			missing, found, lines, lost, agentLog())
	}

	stopped.Store(true)
	_ = running.Process.Signal(syscall.SIGTERM)
	if err := running.Wait(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Errorf("agent exited with %v after the final SIGTERM", err)
	}
}
