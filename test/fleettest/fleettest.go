// Package fleettest runs devices' real data path (SQLite outbox, paho
// uplink, sender) in a test process, without sensors: the test appends
// records as a sensor pipeline would, each with a label, and reads them
// back from Kafka by content. The pipeline and chaos suites share it.
package fleettest

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outpost-edge/outpost/agent/outbox"
	"github.com/outpost-edge/outpost/agent/store"
	"github.com/outpost-edge/outpost/agent/uplink"
	"github.com/outpost-edge/outpost/sync/state"
	"github.com/outpost-edge/outpost/sync/topics"
)

// SendConfig is the tests' sender: a short ack timeout, so a lost batch
// is resent quickly.
var SendConfig = uplink.SendConfig{BatchRecords: 200, MaxInflight: 2000, AckTimeout: 2 * time.Second}

// Device is one board's data path.
type Device struct {
	ID     string
	Outbox *outbox.Outbox
	once   sync.Once
	db     *store.Store
	up     *uplink.Client
	sender *uplink.Sender
	cancel context.CancelFunc
	done   chan error
}

// Start runs an enrolled device's data path with its database in dir,
// against the hub at mqttURL, falling back to the others in order.
func Start(t *testing.T, dir string, sc uplink.SendConfig, creds state.Credentials, log *slog.Logger, mqttURL string, fallback ...string) *Device {
	t.Helper()
	ctx := context.Background()
	id := creds.Device
	db, err := store.Open(ctx, filepath.Join(dir, "agent.db"), store.SyncNormal)
	if err != nil {
		t.Fatal(err)
	}
	ob, err := outbox.New(ctx, db.DB(), 0)
	if err != nil {
		t.Fatal(err)
	}
	d := &Device{ID: id, Outbox: ob, db: db, done: make(chan error, 1)}
	log = log.With("device", id)
	var s *uplink.Sender
	d.up, err = uplink.New(uplink.Config{URL: mqttURL, FallbackURLs: fallback, Username: creds.Username, Password: creds.Password, KeepAlive: 5 * time.Second, ConnectTimeout: 2 * time.Second},
		uplink.Options{
			ClientID:      id,
			OnConnect:     func(*uplink.Client) { s.OnConnect() },
			Subscriptions: map[string]uplink.Subscription{topics.Ack(id): {Handle: func(t string, p []byte) { s.OnAck(t, p) }}},
		}, log)
	if err != nil {
		t.Fatal(err)
	}
	s = uplink.NewSender(sc, id, ob, d.up, log)
	d.sender = s
	runCtx, cancel := context.WithCancel(ctx)
	d.cancel = cancel
	go func() { _ = d.up.Connect(runCtx) }()
	go func() { d.done <- s.Run(runCtx) }()
	t.Cleanup(d.Close)
	return d
}

// Produce appends n records of stream in batches, like a sensor pipeline.
func (d *Device) Produce(t *testing.T, stream string, n, batch int, pause time.Duration) {
	t.Helper()
	for i := 0; i < n; i += batch {
		var items []outbox.Item
		for j := i; j < min(i+batch, n); j++ {
			data, _ := json.Marshal(map[string]any{"i": j, "v": float64(j) * 0.5})
			items = append(items, outbox.Item{Stream: stream, EventTime: time.Now(), Data: data})
		}
		if _, err := d.Outbox.Append(context.Background(), items); err != nil {
			t.Error(err)
			return
		}
		time.Sleep(pause)
	}
}

// ProduceLabels appends one record per label (data {"label": l, "pad":
// pad bytes}), batch at a time.
func (d *Device) ProduceLabels(t *testing.T, stream string, ls []string, batch, pad int, pause time.Duration) {
	t.Helper()
	for i := 0; i < len(ls); i += batch {
		if _, err := d.Outbox.Append(context.Background(), LabelItems(stream, ls[i:min(i+batch, len(ls))], pad)); err != nil {
			t.Error(err)
			return
		}
		time.Sleep(pause)
	}
}

// Depth is the number of records the hub has not acknowledged.
func (d *Device) Depth(t *testing.T) int64 {
	t.Helper()
	n, _, err := d.Outbox.Depth(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// WaitDrained waits until the hub has acknowledged everything.
func (d *Device) WaitDrained(t *testing.T, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		n := d.Depth(t)
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("device %s: %d records still unacknowledged after %s", d.ID, n, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// AckErrors counts the hub's acks the outbox could not record.
func (d *Device) AckErrors() int64 { return d.sender.AckErrors() }

// Close stops the data path and closes the database (once).
func (d *Device) Close() {
	d.once.Do(func() {
		d.cancel()
		<-d.done
		d.up.Close()
		d.db.Close()
	})
}

// IDs are n device ids.
func IDs(n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("dev-%02d", i)
	}
	return ids
}

// Labels are the record labels prefix-0 .. prefix-(n-1).
func Labels(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%d", prefix, i)
	}
	return out
}

// LabelItems are outbox items carrying ls.
func LabelItems(stream string, ls []string, pad int) []outbox.Item {
	items := make([]outbox.Item, len(ls))
	for i, l := range ls {
		data, _ := json.Marshal(map[string]any{"label": l, "pad": strings.Repeat("x", pad)})
		items[i] = outbox.Item{Stream: stream, EventTime: time.Now(), Data: data}
	}
	return items
}

// AppendOffline appends records to a board's outbox while its agent is
// not running (it was cut off, or powered down before it could send).
func AppendOffline(t *testing.T, dir, stream string, ls []string) {
	t.Helper()
	ctx := context.Background()
	db, err := store.Open(ctx, filepath.Join(dir, "agent.db"), store.SyncFull)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ob, err := outbox.New(ctx, db.DB(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ob.Append(ctx, LabelItems(stream, ls, 0)); err != nil {
		t.Fatal(err)
	}
}

// CopyDir copies a board's data directory (a backup, or its restore).
func CopyDir(t *testing.T, src, dst string) {
	t.Helper()
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// Delivered is what Kafka holds, read read_committed: how often each label
// and each ce_id was written.
type Delivered struct {
	Labels, IDs map[string]int
	Records     int
}

// ReadLabels reads topics until want distinct labels arrived (or timeout),
// then a little longer, so duplicates would show.
func ReadLabels(t *testing.T, brokers, topics []string, want int, timeout time.Duration) Delivered {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topics...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	d := Delivered{Labels: map[string]int{}, IDs: map[string]int{}}
	poll := func(ctx context.Context) {
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			var v struct {
				Data struct {
					Label string `json:"label"`
				} `json:"data"`
			}
			if err := json.Unmarshal(r.Value, &v); err != nil {
				t.Errorf("%s@%d: %v", r.Topic, r.Offset, err)
				return
			}
			if v.Data.Label == "" {
				return // the hub's own events
			}
			d.Records++
			d.Labels[v.Data.Label]++
			for _, h := range r.Headers {
				if h.Key == "ce_id" {
					d.IDs[string(h.Value)]++
				}
			}
		})
	}
	deadline := time.Now().Add(timeout)
	for len(d.Labels) < want && time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		poll(ctx)
		cancel()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	poll(ctx)
	cancel()
	return d
}

// Count returns how many of want are missing and how many duplicated.
func (d Delivered) Count(want []string) (lost, dup []string) {
	for _, l := range want {
		switch d.Labels[l] {
		case 0:
			lost = append(lost, l)
		case 1:
		default:
			dup = append(dup, l)
		}
	}
	return lost, dup
}

// ExactlyOnce requires every label of want exactly once, nothing else, and
// every ce_id once.
func (d Delivered) ExactlyOnce(t *testing.T, want []string) {
	t.Helper()
	lost, dup := d.Count(want)
	for id, n := range d.IDs {
		if n > 1 {
			t.Errorf("ce_id %s written %d times", id, n)
		}
	}
	if len(lost) > 0 || len(dup) > 0 || d.Records != len(want) || len(d.IDs) != len(want) {
		t.Fatalf("exactly once violated: %d of %d lost (first %v), %d duplicated (first %v), %d records, %d distinct ce_ids",
			len(lost), len(want), head(lost), len(dup), head(dup), d.Records, len(d.IDs))
	}
}

func head(s []string) []string { return s[:min(len(s), 5)] }

// Logger writes WARN and above to t's log.
func Logger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
