package pipeline

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/hub"
	"github.com/outpost-edge/outpost/test/kafkatest"
)

// TestExactlyOnceUnderFaults streams from several agents while the bridge
// crashes between a Kafka commit and its JetStream ack, Kafka is stopped
// and restarted, and the hub is stopped and restarted. Kafka, read
// read_committed, must hold every (device, seq) exactly once.
func TestExactlyOnceUnderFaults(t *testing.T) {
	// A broker of its own: this test restarts it.
	kb, err := kafkatest.Start(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer kb.Stop()
	brokers := []string{kb.Addr}
	cfg := hubConfig(t, brokers, t.TempDir())
	cfg.Bridge.BatchMessages = 8 // many small transactions, so faults hit mid-stream

	// Fault 1: the bridge dies right after its 5th commit, before acking
	// JetStream; the next hub must not write that batch again.
	crashed := make(chan struct{})
	var commits atomic.Int64
	h := startHub(t, cfg, hub.Options{AfterCommit: func() error {
		if commits.Add(1) == 5 {
			close(crashed)
			return errors.New("injected crash")
		}
		return nil
	}})
	var hmu sync.Mutex
	current := func() *hub.Hub { hmu.Lock(); defer hmu.Unlock(); return h }
	restartHub := func() {
		hmu.Lock()
		defer hmu.Unlock()
		h.Close()
		h = startHub(t, cfg)
	}
	defer func() { current().Close() }()

	ids := deviceIDs(4)
	// About 25s of streaming, so every fault lands while data flows.
	const perDevice = 2500
	mqttURL := "tcp://" + h.MQTTAddr()
	devs := make([]*device, len(ids))
	var wg sync.WaitGroup
	for i, id := range ids {
		devs[i] = newDevice(t, h, id, mqttURL)
		wg.Add(1)
		go func(d *device) {
			defer wg.Done()
			d.Produce(t, "inferences", perDevice, 10, 100*time.Millisecond)
		}(devs[i])
	}

	select {
	case <-crashed:
	case <-time.After(60 * time.Second):
		t.Fatalf("bridge never reached its 5th commit; stats %+v", current().Stats())
	}
	t.Log("fault 1: bridge crashed between commit and ack; restarting hub")
	restartHub()

	time.Sleep(2 * time.Second)
	t.Log("fault 2: stopping Kafka for 5s")
	kb.Stop()
	time.Sleep(5 * time.Second)
	if err := kb.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}

	time.Sleep(3 * time.Second)
	t.Log("fault 3: restarting the hub mid-stream")
	restartHub()

	wg.Wait()
	for _, d := range devs {
		d.WaitDrained(t, 120*time.Second)
	}
	recs, _ := readAll(t, brokers, []string{cfg.Kafka.TopicPrefix + "inferences"}, len(ids)*perDevice, 120*time.Second)
	checkExactlyOnce(t, recs, ids, perDevice)
	t.Logf("after faults: %d records exactly once; hub stats %+v", len(recs), current().Stats())
}

// TestBrokerDownFor30s: the hub (and with it the broker) is gone for 30 s
// while agents keep producing into their outboxes; once it is back, every
// record arrives in Kafka exactly once.
func TestBrokerDownFor30s(t *testing.T) {
	brokers := kafkatest.Brokers(t)
	cfg := hubConfig(t, brokers, t.TempDir())
	h := startHub(t, cfg)
	ids := deviceIDs(2)
	const perDevice = 600
	devs := make([]*device, len(ids))
	var wg sync.WaitGroup
	for i, id := range ids {
		devs[i] = newDevice(t, h, id, "tcp://"+h.MQTTAddr())
		wg.Add(1)
		go func(d *device) {
			defer wg.Done()
			d.Produce(t, "telemetry", perDevice, 10, 50*time.Millisecond) // 3 s of data, then more during the outage
		}(devs[i])
	}
	time.Sleep(time.Second)
	h.Close()
	t.Log("hub down for 30s")
	time.Sleep(30 * time.Second)
	h = startHub(t, cfg)
	defer h.Close()
	wg.Wait()
	for _, d := range devs {
		d.WaitDrained(t, 90*time.Second)
	}
	recs, _ := readAll(t, brokers, []string{cfg.Kafka.TopicPrefix + "telemetry"}, len(ids)*perDevice, 60*time.Second)
	checkExactlyOnce(t, recs, ids, perDevice)
}
