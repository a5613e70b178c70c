package pipeline

// The ordinary life of a fleet (issue 13): boards replaced and restored,
// a hub whose disk was rebuilt, a week of traffic through a small stream,
// and a lease holder that stalls. Every acknowledged record must reach
// Kafka exactly once; each record carries a label, so the check is by
// content, not by seq.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outpost-edge/outpost/agent/uplink"
	"github.com/outpost-edge/outpost/hub"
	"github.com/outpost-edge/outpost/test/fleettest"
	"github.com/outpost-edge/outpost/test/kafkatest"
	"github.com/outpost-edge/outpost/test/schematest"
)

// TestBoardSwapAndRestore: a board streams, is backed up while records
// wait in its outbox, streams on, and is replaced by a new board under
// the same device id (added again, with a fresh data directory). Then the
// old board's backup is restored and started. Every record each board had
// acknowledged is in Kafka exactly once: the new board's seqs start at 1
// again and the restored board repeats seqs the old one already used.
func TestBoardSwapAndRestore(t *testing.T) {
	brokers := kafkatest.Brokers(t)
	cfg := hubConfig(t, brokers, t.TempDir())
	h := startHub(t, cfg)
	defer h.Close()
	url := "tcp://" + h.MQTTAddr()
	creds, err := h.Registry().Add(context.Background(), "swap-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	oldDir := t.TempDir()
	old := startDeviceIn(t, oldDir, creds, url)
	want = append(want, fleettest.Labels("old", 100)...)
	old.ProduceLabels(t, "windows", fleettest.Labels("old", 100), 10, 0, 0)
	old.WaitDrained(t, 30*time.Second)
	old.Close()
	// Cut off: 50 records wait in the outbox when the backup is taken.
	offline := fleettest.Labels("old-offline", 50)
	fleettest.AppendOffline(t, oldDir, "windows", offline)
	want = append(want, offline...)
	backup := t.TempDir()
	fleettest.CopyDir(t, oldDir, backup)
	old = startDeviceIn(t, oldDir, creds, url)
	want = append(want, fleettest.Labels("old-late", 150)...)
	old.ProduceLabels(t, "windows", fleettest.Labels("old-late", 150), 10, 0, 0)
	old.WaitDrained(t, 30*time.Second)
	old.Close()

	// The board is replaced: device add again, a fresh data directory.
	creds, err = h.Registry().Add(context.Background(), "swap-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	board := startDeviceIn(t, t.TempDir(), creds, url)
	want = append(want, fleettest.Labels("new", 200)...)
	board.ProduceLabels(t, "windows", fleettest.Labels("new", 200), 10, 0, 0)
	board.WaitDrained(t, 30*time.Second)
	board.Close()

	// The old board's backup is restored onto a board and started: its 50
	// waiting records are resent (Kafka has them), and it records more.
	restored := t.TempDir()
	fleettest.CopyDir(t, backup, restored)
	rb := startDeviceIn(t, restored, creds, url)
	want = append(want, fleettest.Labels("restored", 100)...)
	rb.ProduceLabels(t, "windows", fleettest.Labels("restored", 100), 10, 0, 0)
	rb.WaitDrained(t, 30*time.Second)
	rb.Close()

	got := fleettest.ReadLabels(t, brokers, []string{cfg.Kafka.TopicPrefix + "windows"}, len(want), 60*time.Second)
	got.ExactlyOnce(t, want)
	s := h.Stats()
	t.Logf("%d records exactly once across a swap and a restore; bridge: %d records, %d duplicates dropped", len(want), s.BridgeRecords, s.BridgeDuplicates)
	if s.BridgeDuplicates < int64(len(offline)) {
		t.Errorf("the restored board's %d resent records were not dropped as duplicates (%d dropped)", len(offline), s.BridgeDuplicates)
	}
}

// TestHubStorageRebuiltOnExistingKafka: a hub streams, stops, loses its
// data directory (a rebuilt disk), and starts again on the same Kafka.
// Its new stream starts again at sequence 1, below the checkpoint's: the
// bridge must notice and deliver it all, nothing lost and nothing
// duplicated in read_committed.
func TestHubStorageRebuiltOnExistingKafka(t *testing.T) {
	brokers := kafkatest.Brokers(t)
	cfg := hubConfig(t, brokers, t.TempDir())
	h := startHub(t, cfg)
	creds, err := h.Registry().Add(context.Background(), "rebuilt-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	d := startDeviceIn(t, dir, creds, "tcp://"+h.MQTTAddr())
	want := fleettest.Labels("before", 400)
	d.ProduceLabels(t, "windows", want, 10, 0, 0)
	d.WaitDrained(t, 30*time.Second)
	d.Close()
	// Only what reached Kafka survives a lost disk (a replicated stream
	// would keep the rest): wait for the bridge before the disk goes.
	for deadline := time.Now().Add(30 * time.Second); h.Stats().BridgeRecords < int64(len(want)); {
		if time.Now().After(deadline) {
			t.Fatalf("bridge wrote %d of %d records", h.Stats().BridgeRecords, len(want))
		}
		time.Sleep(50 * time.Millisecond)
	}
	before := h.Stats()
	h.Close()

	if err := os.RemoveAll(cfg.DataDir); err != nil {
		t.Fatal(err)
	}
	h = startHub(t, cfg)
	defer h.Close()
	// The registry went with the disk: the installer enrols the board again.
	if creds, err = h.Registry().Add(context.Background(), "rebuilt-1", nil); err != nil {
		t.Fatal(err)
	}
	d = startDeviceIn(t, dir, creds, "tcp://"+h.MQTTAddr())
	after := fleettest.Labels("after", 400)
	want = append(want, after...)
	d.ProduceLabels(t, "windows", after, 10, 0, 0)
	d.WaitDrained(t, 30*time.Second)
	d.Close()

	got := fleettest.ReadLabels(t, brokers, []string{cfg.Kafka.TopicPrefix + "windows"}, len(want), 60*time.Second)
	got.ExactlyOnce(t, want)
	t.Logf("%d records exactly once across a rebuilt hub disk (%d bridge transactions before it)", len(want), before.BridgeTxns)
}

// logTee keeps what a logger wrote, for tests that read the log.
type logTee struct {
	mu  sync.Mutex
	buf bytes.Buffer
	t   *testing.T
}

func (l *logTee) Write(p []byte) (int, error) {
	l.mu.Lock()
	l.buf.Write(p)
	l.mu.Unlock()
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func (l *logTee) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// TestWeekOfTrafficThroughASmallStream writes many times ingest.max_bytes
// through a 1 MiB stream: everything reaches Kafka exactly once and the
// stream never fills, because what Kafka has leaves it. Then the bridge is
// stopped on purpose: the stream fills, and the hub says so in its log,
// its metrics, its stats and outpost.events, with the reason; devices keep
// their data. Once the bridge runs again, all of it arrives.
func TestWeekOfTrafficThroughASmallStream(t *testing.T) {
	brokers := kafkatest.Brokers(t)
	cfg := hubConfig(t, brokers, t.TempDir())
	cfg.Ingest.MaxBytes = 1 << 20
	cfg.Ingest.TrimInterval = 100 * time.Millisecond
	var stall sync.Mutex // held: the bridge stops after its next commit
	tee := &logTee{t: t}
	log := slog.New(slog.NewTextHandler(tee, &slog.HandlerOptions{Level: slog.LevelInfo}))
	h, err := hub.Start(context.Background(), cfg, log, hub.Options{AfterCommit: func() error {
		stall.Lock()
		defer stall.Unlock()
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	url := "tcp://" + h.MQTTAddr()

	// 4 devices × 4000 records × ~300 B: about 4.5× max_bytes, at the pace
	// of a busy site (250 records/s per device, 300 KB/s in all): the 1 MiB
	// stream holds some 3 s of it while the bridge commits.
	const devices, perDevice, pad = 4, 4000, 250
	var want []string
	var devs []*device
	var wg sync.WaitGroup
	full := false
	stopWatch := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for {
			select {
			case <-stopWatch:
				return
			case <-time.After(50 * time.Millisecond):
				if h.Stats().IngestFull {
					full = true
				}
			}
		}
	}()
	for i := 0; i < devices; i++ {
		d := newDevice(t, h, fmt.Sprintf("week-%d", i), url)
		devs = append(devs, d)
		ls := fleettest.Labels(d.ID, perDevice)
		want = append(want, ls...)
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.ProduceLabels(t, "windows", ls, 10, pad, 40*time.Millisecond)
		}()
	}
	wg.Wait()
	for _, d := range devs {
		d.WaitDrained(t, 60*time.Second)
	}
	close(stopWatch)
	<-watched
	s := h.Stats()
	if full || s.IngestFull || s.AckerGaps > 0 {
		t.Fatalf("the stream was full, or refused batches, during ordinary traffic (stats %+v)", s)
	}
	if s.IngestTrimmed == 0 || s.IngestBytes > uint64(cfg.Ingest.MaxBytes) {
		t.Fatalf("nothing trimmed (%d) or the stream holds %d bytes", s.IngestTrimmed, s.IngestBytes)
	}
	t.Logf("%d records (%.1f MiB) through a 1 MiB stream; %d stream messages trimmed; acker gaps %d", len(want), float64(len(want)*(pad+50))/(1<<20), s.IngestTrimmed, s.AckerGaps)

	// Stop the bridge: the stream fills.
	stall.Lock()
	more := fleettest.Labels("stalled", 5000)
	want = append(want, more...)
	go devs[0].ProduceLabels(t, "windows", more, 50, pad, 5*time.Millisecond)
	deadline := time.Now().Add(60 * time.Second)
	for !h.Stats().IngestFull {
		if time.Now().After(deadline) {
			stall.Unlock()
			t.Fatalf("the stream never reported full with the bridge stopped: %+v", h.Stats())
		}
		time.Sleep(100 * time.Millisecond)
	}
	s = h.Stats()
	resp, err := http.Get("http://" + h.HTTPAddr() + "/metrics")
	if err != nil {
		stall.Unlock()
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	stall.Unlock()
	if !strings.Contains(s.IngestFullReason, "bridge") {
		t.Errorf("full reason %q does not name the bridge", s.IngestFullReason)
	}
	if !strings.Contains(string(metrics), "outpost_hub_ingest_full 1") {
		t.Errorf("/metrics does not show outpost_hub_ingest_full 1")
	}
	if !strings.Contains(tee.String(), "is full") {
		t.Errorf("the hub's log does not say the stream is full")
	}
	devs[0].WaitDrained(t, 90*time.Second)
	got := fleettest.ReadLabels(t, brokers, []string{cfg.Kafka.TopicPrefix + "windows"}, len(want), 90*time.Second)
	got.ExactlyOnce(t, want)

	// The full state and its end are events in outpost.events.
	kinds := map[string]bool{}
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(cfg.Kafka.TopicPrefix+"events"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for end := time.Now().Add(30 * time.Second); !(kinds["ingest_full"] && kinds["ingest_resumed"]) && time.Now().Before(end); {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			var v struct {
				Device string `json:"device"`
				Data   struct {
					Kind   string `json:"kind"`
					Reason string `json:"reason"`
				} `json:"data"`
			}
			if json.Unmarshal(r.Value, &v) == nil && v.Device == hub.HubDevice {
				schematest.Check(t, r.Topic, r.Value) // the hub's own; devices' here are fleettest's
				kinds[v.Data.Kind] = true
			}
		})
		cancel()
	}
	if !kinds["ingest_full"] || !kinds["ingest_resumed"] {
		t.Errorf("outpost.events lacks the stream's full/resumed events: %v", kinds)
	}
	t.Logf("full with the bridge stopped (%s), drained after: %d records exactly once", s.IngestFullReason, len(want))
}

// TestAckerFailoverResumesEveryStream: three hubs; devices stream through
// the hubs that do not hold the lease. The lease holder is stopped
// (SIGSTOP) past its lease, so another hub's acker takes over, while
// windows keep flowing: some were stored while no acker ran. Events start
// only after the failover and are acked all along. With the old hub still
// stopped, the windows must resume their acks while events flow (acks of
// one stream must not hold back another's resend); then it continues,
// every outbox drains, and Kafka holds every record exactly once.
func TestAckerFailoverResumesEveryStream(t *testing.T) {
	brokers := kafkatest.Brokers(t)
	prefix := fmt.Sprintf("t%d.", time.Now().UnixNano())
	hubs := startCluster(t, brokers, prefix)
	li := waitLeader(t, hubs)
	var urls []string
	for i, c := range hubs {
		if i != li {
			urls = append(urls, "tcp://"+c.mqtt)
		}
	}
	var want []string
	var devs []*device
	var windows, events sync.WaitGroup
	failedOver := make(chan struct{})
	for i := 0; i < 3; i++ {
		id := fmt.Sprintf("fail-%d", i)
		creds := enrolOn(t, hubs[(li+1)%3], id)
		// The default ack timeout (10 s), longer than the stall: acks of
		// events, not the timer, are what the device sees meanwhile.
		sc := testSendConfig
		sc.AckTimeout = 10 * time.Second
		d := startDeviceWith(t, t.TempDir(), sc, creds, urls[i%2], urls[(i+1)%2])
		devs = append(devs, d)
		ws, es := fleettest.Labels(id+"-windows", 1200), fleettest.Labels(id+"-events", 100)
		want = append(want, ws...)
		want = append(want, es...)
		windows.Add(1)
		go func() {
			defer windows.Done()
			d.ProduceLabels(t, "windows", ws, 5, 0, 50*time.Millisecond) // 12 s
		}()
		events.Add(1)
		go func() {
			defer events.Done()
			<-failedOver
			d.ProduceLabels(t, "events", es, 1, 0, 250*time.Millisecond) // 25 s, acked all along
		}()
	}
	time.Sleep(time.Second)
	leader := hubs[li]
	t.Logf("stopping lease holder %s (pid %d)", leader.name, leader.proc.PID())
	if err := syscall.Kill(leader.proc.PID(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := true
	defer func() {
		if stopped {
			syscall.Kill(leader.proc.PID(), syscall.SIGCONT)
		}
	}()
	time.Sleep(4 * time.Second) // lease_ttl is 2 s
	close(failedOver)
	windows.Wait()
	start := time.Now()
	// The device's ack timeout is 10 s; events flow for 25 s.
	for _, d := range devs {
		for {
			recs, err := d.Outbox.Pending(context.Background(), "windows", 0, 1)
			if err != nil {
				t.Fatal(err)
			}
			if len(recs) == 0 {
				break
			}
			if time.Since(start) > 15*time.Second {
				t.Fatalf("%s: windows still unacknowledged %s after they were sent, while its events are acked", d.ID, time.Since(start).Round(time.Second))
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	t.Logf("windows of every device acknowledged %s after the last was sent", time.Since(start).Round(100*time.Millisecond))
	if err := syscall.Kill(leader.proc.PID(), syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	stopped = false
	events.Wait()
	for _, d := range devs {
		d.WaitDrained(t, 60*time.Second)
	}
	got := fleettest.ReadLabels(t, brokers, []string{prefix + "windows", prefix + "events"}, len(want), 90*time.Second)
	got.ExactlyOnce(t, want)
	for i, c := range hubs {
		if s, err := c.stats(t); err == nil {
			t.Logf("%s: leader=%v acker_gaps=%d acker_replayed=%d", hubs[i].name, s.Leader, s.AckerGaps, s.AckerReplayed)
		}
	}
}

// A fleet flushing its outboxes at once (after an outage) into a hub whose
// store cannot keep up: the MQTT PUBACK does not wait for OUTPOST_UP, so
// JetStream drops what its ingest queue (broker.stream_buffer, here four
// batches) cannot hold. The acker names each gap when the next batch comes,
// and the devices resend at once: everything arrives, exactly once, long
// before the devices' ack timeout (30 s here) could have resent it.
func TestBatchesDroppedOnTheWayInAreResentAtOnce(t *testing.T) {
	brokers := kafkatest.Brokers(t)
	cfg := hubConfig(t, brokers, t.TempDir())
	cfg.Broker.SyncAlways = true
	cfg.Broker.MaxPayload = 64 << 10
	cfg.Broker.StreamBuffer = 4 * int64(cfg.Broker.MaxPayload)
	h := startHub(t, cfg)
	defer h.Close()
	url := "tcp://" + h.MQTTAddr()
	sc := uplink.SendConfig{BatchRecords: 200, BatchBytes: 48 << 10, MaxInflight: 1000, AckTimeout: 30 * time.Second}

	const devices, perDevice, pad, rounds = 6, 3000, 200, 8
	var want []string
	var devs []*device
	for i := 0; i < devices; i++ {
		id := fmt.Sprintf("flush-%d", i)
		creds, err := h.Registry().Add(context.Background(), id, nil)
		if err != nil {
			t.Fatal(err)
		}
		devs = append(devs, startDeviceWith(t, t.TempDir(), sc, creds, url))
	}
	// A burst's drops show as gaps only where a later batch of the same
	// device is stored; when the broker's own $MQTT_msgs queue overflows
	// too, it closes the device's connection instead, and the device
	// resends on reconnect. Which comes first is up to the disk (either
	// way one run in two or four named no gap), so bursts repeat until
	// the acker has named one.
	round := 0
	for ; round < rounds && h.Stats().AckerGaps == 0; round++ {
		var wg sync.WaitGroup
		for _, d := range devs {
			ls := fleettest.Labels(fmt.Sprintf("%s-r%d", d.ID, round), perDevice)
			tail := fleettest.Labels(fmt.Sprintf("%s-r%d-tail", d.ID, round), 10)
			want = append(append(want, ls...), tail...)
			wg.Add(1)
			go func() {
				defer wg.Done()
				d.ProduceLabels(t, "windows", ls, perDevice, pad, 0)
				// A last batch once the burst has been stored: a lost
				// batch with nothing after it is found only by the ack
				// timeout.
				time.Sleep(3 * time.Second)
				d.ProduceLabels(t, "windows", tail, len(tail), pad, 0)
			}()
		}
		wg.Wait()
		for _, d := range devs {
			d.WaitDrained(t, 25*time.Second)
		}
	}
	s := h.Stats()
	if s.IngestOverflows == 0 || s.AckerGaps == 0 {
		t.Fatalf("in %d bursts no batch was dropped on its way in before a later one of its device (overflows %d, acker gaps %d): the test did not exercise the resend", round, s.IngestOverflows, s.AckerGaps)
	}
	fleettest.ReadLabels(t, brokers, []string{cfg.Kafka.TopicPrefix + "windows"}, len(want), 60*time.Second).ExactlyOnce(t, want)
	t.Logf("%d records from %d devices in %d bursts; %d seconds with batches dropped, %d gaps named by the acker", len(want), devices, round, s.IngestOverflows, s.AckerGaps)
}
