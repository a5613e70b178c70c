package pipeline

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/test/kafkatest"
)

// TestDevicesToKafka: several agents' outboxes drain through the hub into
// the real Kafka broker; every record arrives once, keyed and with
// CloudEvents headers, and every outbox empties on the hub's acks.
func TestDevicesToKafka(t *testing.T) {
	brokers := kafkatest.Brokers(t)
	cfg := hubConfig(t, brokers, t.TempDir())
	h := startHub(t, cfg)
	defer h.Close()

	ids := deviceIDs(3)
	const perDevice = 1000
	var wg sync.WaitGroup
	for _, id := range ids {
		d := newDevice(t, h, id, "tcp://"+h.MQTTAddr())
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.Produce(t, "windows", perDevice, 100, 10*time.Millisecond)
			d.WaitDrained(t, 60*time.Second)
		}()
	}
	wg.Wait()
	recs, headers := readAll(t, brokers, []string{cfg.Kafka.TopicPrefix + "windows"}, len(ids)*perDevice, 60*time.Second)
	checkExactlyOnce(t, recs, ids, perDevice)
	for i, r := range recs {
		h := headers[i]
		if len(h) == 0 {
			continue // lingering read
		}
		if r.Epoch == "" || h["ce_id"] != r.Device+":"+r.Epoch+":"+strconv.FormatUint(r.Seq, 10) || h["ce_type"] != "dev.outpost.windows.v1" ||
			!strings.HasSuffix(h["ce_source"], "/"+r.Device) || h["ce_time"] == "" || h["content-type"] != "application/json" {
			t.Fatalf("record %d headers = %v", i, h)
		}
	}
	st := h.Stats()
	if st.BridgeRecords != int64(len(ids)*perDevice) || st.BridgeDeadLetters != 0 {
		t.Fatalf("stats = %+v", st)
	}
	// Per topic, the same records: all of them windows.
	var sum int64
	for _, n := range st.BridgeTopicRecords {
		sum += n
	}
	if sum != st.BridgeRecords+st.BridgeDeadLetters || st.BridgeTopicRecords["windows"] != st.BridgeRecords {
		t.Errorf("records per topic %v, want %d windows in all", st.BridgeTopicRecords, st.BridgeRecords)
	}
	// Each payload is decoded once: the bridge, a batch behind the acker,
	// takes the acker's decodings (a few may be read by both at once).
	if st.DecodeShared < st.AckerEnvelopes*8/10 || st.DecodeEvicted != 0 {
		t.Errorf("the bridge took %d of %d envelopes decoded by the acker (%d evicted), want nearly all", st.DecodeShared, st.AckerEnvelopes, st.DecodeEvicted)
	}
	t.Logf("%d of %d envelopes decoded once for the acker and the bridge", st.DecodeShared, st.AckerEnvelopes)
	resp, err := http.Get("http://" + h.HTTPAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, want := range []string{
		"outpost_hub_bridge_records_total " + strconv.Itoa(len(ids)*perDevice),
		"outpost_hub_auth_accepted_total ",
		"outpost_hub_bridge_backlog_messages 0",
		"outpost_hub_decode_shared_total ",
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}
