//go:build peers

package peers

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outpost-edge/outpost/test/service"
)

// system is one system under test, running and subscribed to Topic.
type system interface {
	// PID is the process whose CPU and RSS are measured.
	PID() int
	// Processed is how many readings it has taken into event-time
	// processing (the agent's window operator; eKuiper's watermark
	// operator, which holds each reading until the watermark passes it).
	Processed(ctx context.Context) (int64, error)
	// Results are the window results it has delivered so far.
	Results() *windowCounts
	// Others are the supporting processes it runs (measured, not counted).
	Others() map[string]int
	// Log is the tail of its log, for errors.
	Log() string
	// Detail is its own account of what it took, dropped and emitted.
	Detail(ctx context.Context) string
	Stop()
}

// The rule both systems run: a 10 s tumbling window per sensor in event
// time, windows closing 1 s after their end (eKuiper's lateTolerance, the
// agent's max_out_of_order), with count, mean and max.
const (
	windowSize = 10 * time.Second
	tolerance  = time.Second
)

// httpJSON sends a request with an optional JSON body and decodes a JSON
// answer into out (when out is not nil).
func httpJSON(ctx context.Context, method, url string, body, out any) error {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		r = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, r)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	// The agent answers /healthz with 503 while degraded, with the same body.
	if resp.StatusCode >= 300 && resp.StatusCode != http.StatusServiceUnavailable {
		return fmt.Errorf("%s %s: %s: %s", method, url, resp.Status, bytes.TrimSpace(data))
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s %s: %w", method, url, err)
	}
	return nil
}

// httpReady succeeds once url answers 200.
func httpReady(url string) func(context.Context) error {
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s", url, resp.Status)
		}
		return nil
	}
}

func freePorts(n int) ([]int, error) {
	ports := make([]int, n)
	for i := range ports {
		p, err := service.FreePort()
		if err != nil {
			return nil, err
		}
		ports[i] = p
	}
	return ports, nil
}

// --- eKuiper ---------------------------------------------------------------

// ekuiperOut is the topic of eKuiper's MQTT sink.
const ekuiperOut = "peers/ekuiper/out"

type ekuiper struct {
	proc *service.Process
	rest string
	out  windowCounts
}

// startEKuiper runs kuiperd from dist (kuiperd and etc/ of the build) on
// cpus, every listener on loopback, subscribes mon to its results, and
// creates the stream and the rule through its REST API; options (a JSON
// object, may be empty) are merged into the rule's options. It adds two
// subscriptions to the broker: mon's and the rule's source.
func startEKuiper(ctx context.Context, dir, dist, cpus, broker, options string, mon mqtt.Client) (*ekuiper, error) {
	base := filepath.Join(dir, "ekuiper")
	if err := os.CopyFS(filepath.Join(base, "etc"), os.DirFS(filepath.Join(dist, "etc"))); err != nil {
		return nil, fmt.Errorf("ekuiper etc: %w", err)
	}
	for _, d := range []string{"data", "log", "plugins"} {
		if err := os.MkdirAll(filepath.Join(base, d), 0o755); err != nil {
			return nil, err
		}
	}
	// The MQTT source's default connection: the run's broker, QoS 1.
	src := fmt.Sprintf("default:\n  qos: 1\n  server: %q\n  protocolVersion: \"3.1.1\"\n", broker)
	if err := os.WriteFile(filepath.Join(base, "etc", "mqtt_source.yaml"), []byte(src), 0o644); err != nil {
		return nil, err
	}
	opts := map[string]any{"isEventTime": true, "lateTolerance": tolerance.Milliseconds()}
	if options != "" {
		if err := json.Unmarshal([]byte(options), &opts); err != nil {
			return nil, fmt.Errorf("PEERS_EKUIPER_OPTIONS: %w", err)
		}
	}
	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	path, args, err := pinned(cpus, filepath.Join(dist, "kuiperd"))
	if err != nil {
		return nil, err
	}
	rest := "http://" + service.Addr(ports[0])
	p, err := service.Start(ctx, service.Spec{
		Name: "ekuiper", Path: path, Args: args,
		Env: []string{
			"KuiperBaseKey=" + base,
			"KUIPER__BASIC__RESTIP=127.0.0.1", "KUIPER__BASIC__RESTPORT=" + strconv.Itoa(ports[0]),
			"KUIPER__BASIC__IP=127.0.0.1", "KUIPER__BASIC__PORT=" + strconv.Itoa(ports[1]),
			"KUIPER__SOURCE__HTTPSERVERIP=127.0.0.1", "KUIPER__SOURCE__HTTPSERVERPORT=" + strconv.Itoa(ports[2]),
			"KUIPER__BASIC__PPROF=false", "KUIPER__BASIC__PROMETHEUS=false",
			"KUIPER__BASIC__CONSOLELOG=true", "KUIPER__BASIC__FILELOG=false", "KUIPER__BASIC__LOGLEVEL=warn",
		},
		LogPath: filepath.Join(base, "kuiperd.log"),
		Ready:   httpReady(rest + "/ping"), Timeout: 30 * time.Second,
	})
	if err != nil {
		return nil, err
	}
	e := &ekuiper{proc: p, rest: rest}
	if err := subscribe(ctx, mon, ekuiperOut, e.onResult); err != nil {
		p.Stop()
		return nil, err
	}
	stream := `CREATE STREAM readings (s STRING, ts BIGINT, v FLOAT) WITH (DATASOURCE="` + Topic + `", FORMAT="JSON", TIMESTAMP="ts")`
	rule := map[string]any{
		"id": "peers",
		"sql": fmt.Sprintf("SELECT s, count(*) AS n, avg(v) AS mean, max(v) AS vmax, window_start() AS ws FROM readings GROUP BY s, TUMBLINGWINDOW(ss, %d)",
			int(windowSize.Seconds())),
		"actions": []any{map[string]any{"mqtt": map[string]any{"server": broker, "topic": ekuiperOut, "qos": 1}}},
		"options": opts,
	}
	if err := httpJSON(ctx, http.MethodPost, rest+"/streams", map[string]string{"sql": stream}, nil); err != nil {
		p.Stop()
		return nil, fmt.Errorf("ekuiper stream: %w", err)
	}
	if err := httpJSON(ctx, http.MethodPost, rest+"/rules", rule, nil); err != nil {
		p.Stop()
		return nil, fmt.Errorf("ekuiper rule: %w", err)
	}
	return e, nil
}

// onResult takes one sink message: a JSON array of the window's rows (or
// one row).
func (e *ekuiper) onResult(_ mqtt.Client, m mqtt.Message) {
	type row struct {
		S string `json:"s"`
		N int64  `json:"n"`
	}
	var rows []row
	if err := json.Unmarshal(m.Payload(), &rows); err != nil {
		var r row
		if json.Unmarshal(m.Payload(), &r) != nil {
			return
		}
		rows = []row{r}
	}
	for _, r := range rows {
		e.out.add(r.S, r.N)
	}
}

func (e *ekuiper) PID() int               { return e.proc.PID() }
func (e *ekuiper) Results() *windowCounts { return &e.out }
func (e *ekuiper) Others() map[string]int { return nil }
func (e *ekuiper) Stop()                  { e.proc.Stop() }
func (e *ekuiper) Log() string            { return e.proc.LogTail(20) }

// Detail lists the rule's counters: records in and out of every operator,
// and exceptions.
func (e *ekuiper) Detail(ctx context.Context) string {
	var st map[string]any
	if err := httpJSON(ctx, http.MethodGet, e.rest+"/rules/peers/status", nil, &st); err != nil {
		return err.Error()
	}
	var out []string
	for k, v := range st {
		if strings.HasSuffix(k, "_records_in_total") || strings.HasSuffix(k, "_records_out_total") ||
			strings.HasSuffix(k, "_exceptions_total") || strings.HasSuffix(k, "_last_exception") {
			if v != 0.0 && v != "" {
				out = append(out, fmt.Sprintf("%s=%v", k, v))
			}
		}
	}
	slices.Sort(out)
	return strings.Join(out, " ")
}

// Processed reads the rule's metrics: records into the watermark operator.
// The window operator's count trails it by lateTolerance: the watermark
// operator releases a reading once the watermark passes it.
func (e *ekuiper) Processed(ctx context.Context) (int64, error) {
	var st map[string]any
	if err := httpJSON(ctx, http.MethodGet, e.rest+"/rules/peers/status", nil, &st); err != nil {
		return 0, err
	}
	for k, v := range st {
		if strings.HasPrefix(k, "op_") && strings.HasSuffix(k, "_watermark_0_records_in_total") {
			if f, ok := v.(float64); ok {
				return int64(f), nil
			}
		}
	}
	return 0, fmt.Errorf("ekuiper: no watermark operator in the rule's status")
}

// --- Outpost ---------------------------------------------------------------

type outpost struct {
	hub, agent *service.Process
	metrics    string
	out        windowCounts
	cancel     context.CancelFunc
	wg         sync.WaitGroup
}

// startOutpost runs an outpost-hub (embedded MQTT/JetStream broker and
// embedded development Kafka, on the harness's CPUs), enrols a device, and
// runs outpost-agent on cpus with one MQTT pipeline on the run's broker,
// uplinking to the hub. The harness reads the window records from the
// hub's Kafka. It adds one subscription to the broker: the agent's.
func startOutpost(ctx context.Context, dir, bin, cpus, broker string, maxUnacked int) (*outpost, error) {
	ports, err := freePorts(4)
	if err != nil {
		return nil, err
	}
	httpAddr, mqttPort, kafkaPort := service.Addr(ports[0]), ports[1], ports[2]
	hubYAML := fmt.Sprintf(`data_dir: %s
http: {listen: %q}
broker: {host: 127.0.0.1, mqtt_port: %d, nats_port: -1}
kafka: {embedded_port: %d}
log: {level: warn}
`, filepath.Join(dir, "hub"), httpAddr, mqttPort, kafkaPort)
	if err := os.WriteFile(filepath.Join(dir, "hub.yaml"), []byte(hubYAML), 0o644); err != nil {
		return nil, err
	}
	hub, err := service.Start(ctx, service.Spec{
		Name: "outpost-hub", Path: filepath.Join(bin, "outpost-hub"), Args: []string{"--config", filepath.Join(dir, "hub.yaml")},
		LogPath: filepath.Join(dir, "hub.log"),
		Ready:   httpReady("http://" + httpAddr + "/healthz"), Timeout: 60 * time.Second,
	})
	if err != nil {
		return nil, err
	}
	o := &outpost{hub: hub, metrics: "http://" + service.Addr(ports[3])}
	var creds struct {
		Device, Username, Password string
	}
	if err := httpJSON(ctx, http.MethodPost, "http://"+httpAddr+"/v1/devices", map[string]any{"id": "peers-1"}, &creds); err != nil {
		hub.Stop()
		return nil, fmt.Errorf("enrol device: %w", err)
	}
	agentYAML := fmt.Sprintf(`device: {id: %s}
data_dir: %s
hub: {url: "tcp://127.0.0.1:%d"}
metrics: {listen: %q}
log: {level: warn}
pipelines:
  - name: peers
    source:
      type: mqtt
      mqtt: {url: %q, topic: %q, max_unacked: %d}
    decode: {key_field: s, time_field: ts, fields: [v]}
    window: {kind: tumbling, size: %s, max_out_of_order: %s}
    aggregations: [count, mean, max]
`, creds.Device, filepath.Join(dir, "agent"), mqttPort, service.Addr(ports[3]), broker, Topic, maxUnacked, windowSize, tolerance)
	if err := os.WriteFile(filepath.Join(dir, "agent.yaml"), []byte(agentYAML), 0o644); err != nil {
		hub.Stop()
		return nil, err
	}
	path, args, err := pinned(cpus, filepath.Join(bin, "outpost-agent"), "--config", filepath.Join(dir, "agent.yaml"))
	if err != nil {
		hub.Stop()
		return nil, err
	}
	agent, err := service.Start(ctx, service.Spec{
		Name: "outpost-agent", Path: path, Args: args,
		Env:     []string{"OUTPOST_AGENT_HUB_USERNAME=" + creds.Username, "OUTPOST_AGENT_HUB_PASSWORD=" + creds.Password},
		LogPath: filepath.Join(dir, "agent.log"),
		Ready:   httpReady(o.metrics + "/healthz"), Timeout: 30 * time.Second, // 200 once the uplink is connected
	})
	if err != nil {
		hub.Stop()
		return nil, err
	}
	o.agent = agent
	kc, err := kgo.NewClient(kgo.SeedBrokers(service.Addr(kafkaPort)), kgo.ConsumeTopics("outpost.windows"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		o.Stop()
		return nil, fmt.Errorf("kafka reader: %w", err)
	}
	kctx, cancel := context.WithCancel(ctx)
	o.cancel = cancel
	o.wg.Add(1)
	go func() {
		defer o.wg.Done()
		defer kc.Close()
		o.readWindows(kctx, kc)
	}()
	return o, nil
}

// readWindows consumes outpost.windows: the bridge's JSON records, each
// carrying one window result.
func (o *outpost) readWindows(ctx context.Context, kc *kgo.Client) {
	for ctx.Err() == nil {
		fs := kc.PollFetches(ctx)
		fs.EachRecord(func(r *kgo.Record) {
			var v struct {
				Data struct {
					Key      string `json:"key"`
					Firing   string `json:"firing"`
					Revision int    `json:"revision"`
					Count    int64  `json:"count"`
				} `json:"data"`
			}
			if json.Unmarshal(r.Value, &v) == nil && v.Data.Firing == "final" && v.Data.Revision == 0 {
				o.out.add(v.Data.Key, v.Data.Count)
			}
		})
		if err := fs.Err0(); err != nil && !errors.Is(err, context.Canceled) {
			time.Sleep(100 * time.Millisecond)
		}
	}
}

func (o *outpost) PID() int               { return o.agent.PID() }
func (o *outpost) Results() *windowCounts { return &o.out }
func (o *outpost) Others() map[string]int { return map[string]int{"hub": o.hub.PID()} }
func (o *outpost) Log() string            { return o.agent.LogTail(20) }

func (o *outpost) Stop() {
	if o.cancel != nil {
		o.cancel()
		o.wg.Wait()
	}
	if o.agent != nil {
		o.agent.Stop()
	}
	o.hub.Stop()
}

// Detail is the agent's /healthz.
func (o *outpost) Detail(ctx context.Context) string {
	var h map[string]any
	if err := httpJSON(ctx, http.MethodGet, o.metrics+"/healthz", nil, &h); err != nil {
		return err.Error()
	}
	b, _ := json.Marshal(h)
	return string(b)
}

// Processed reads the agent's /healthz: readings accepted into windows.
func (o *outpost) Processed(ctx context.Context) (int64, error) {
	var h struct {
		Pipelines map[string]struct {
			Events int64 `json:"events"`
		} `json:"pipelines"`
	}
	if err := httpJSON(ctx, http.MethodGet, o.metrics+"/healthz", nil, &h); err != nil {
		return 0, err
	}
	p, ok := h.Pipelines["peers"]
	if !ok {
		return 0, fmt.Errorf("agent: no pipeline peers in /healthz")
	}
	return p.Events, nil
}
