// Package bench holds the system benchmarks that span components and run
// against the real services `make bench` starts.
package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outpost-edge/outpost/hub"
	"github.com/outpost-edge/outpost/sync/envelope"
	"github.com/outpost-edge/outpost/sync/topics"
	"github.com/outpost-edge/outpost/test/kafkatest"
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(loadSlotEnv); dir != "" { // a child of BenchmarkAgentModelFootprint
		if err := loadSlotHelper(dir); err != nil {
			fmt.Fprintln(os.Stderr, "loadslot:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(kafkatest.Main(m))
}

const (
	devices         = 10
	recordsPerBatch = 500
	// windowKeys is how many sensors the records cycle through, as the
	// fleet's 10 s windows close (each 500-record batch is half of them).
	windowKeys = 1000
)

// windowRecords are the records both benchmarks send: an agent's window
// results, each sensor's own figures (what a fleet sends compresses far
// less than one record repeated, for zstd on the uplink and lz4 in Kafka).
// Record i closes window i/windowKeys of sensor i%windowKeys.
func windowRecords(n int, t0 time.Time) (data [][]byte, eventTimes []time.Time) {
	rng := rand.New(rand.NewPCG(19, 7))
	data, eventTimes = make([][]byte, n), make([]time.Time, n)
	for i := range data {
		start := t0.Add(time.Duration(i/windowKeys) * 10 * time.Second)
		mean := 15 + 15*rng.Float64()
		spread := 0.2 + 2*rng.Float64()
		data[i] = fmt.Appendf(nil, `{"key":"sensor-%03d","window":"%s/PT10S","count":%d,"mean":%.3f,"min":%.2f,"max":%.2f,"std":%.3f}`,
			i%windowKeys, start.Format(time.RFC3339), 90+rng.IntN(21), mean, mean-spread, mean+spread, spread/3)
		eventTimes[i] = start.Add(10 * time.Second)
	}
	return data, eventTimes
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkHubToKafka: batched envelopes over MQTT into the hub, through
// JetStream and the transactional bridge into the real Kafka broker. One
// iteration is one MQTT message of 500 records; the clock stops when Kafka
// holds every record (checked by end offsets, exactly once). It runs with
// the hub's default sync_always (true: JetStream fsyncs every write before
// the device is acked) and without it, which measures the pipeline rather
// than the disk's fsync rate.
func BenchmarkHubToKafka(b *testing.B) {
	for _, sync := range []bool{true, false} {
		for _, z := range []bool{false, true} {
			b.Run(fmt.Sprintf("sync_always=%t/compress=%t", sync, z), func(b *testing.B) { hubToKafka(b, sync, z) })
		}
	}
}

func hubToKafka(b *testing.B, syncAlways, compress bool) {
	brokers := kafkatest.Brokers(b)
	cfg := hub.Defaults()
	cfg.DataDir = b.TempDir()
	cfg.Broker.ServerName = fmt.Sprintf("bench-%d", time.Now().UnixNano())
	cfg.Broker.NATSPort, cfg.Broker.MQTTPort = -1, -1
	cfg.Broker.SyncAlways = syncAlways
	// The whole burst fits JetStream's ingest queue: these publishers are
	// plain MQTT clients that never resend a batch the queue dropped, as
	// agents do on the acker's word (at 2000 messages with sync_always the
	// default 128 MiB overflowed and the run stalled).
	cfg.Broker.StreamBuffer = 1 << 30
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.Kafka.Brokers = brokers
	cfg.Kafka.TopicPrefix = fmt.Sprintf("b%d.", time.Now().UnixNano())
	cfg.Kafka.Partitions = 3
	h, err := hub.Start(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	defer h.Close()

	// Pre-encode every envelope so the clock measures the hub, not JSON.
	clients := make([]mqtt.Client, devices)
	for d := range clients {
		id := "bench-" + strconv.Itoa(d)
		creds, err := h.Registry().Add(context.Background(), id, nil)
		if err != nil {
			b.Fatal(err)
		}
		c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://" + h.MQTTAddr()).SetClientID(id).
			SetUsername(creds.Username).SetPassword(creds.Password).SetOrderMatters(false).SetMaxResumePubInFlight(64))
		if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			b.Fatal(tok.Error())
		}
		defer c.Disconnect(100)
		clients[d] = c
	}
	// Warm-up batches first (producer id, transaction coordinator, JIT of
	// the broker), so the clock measures steady throughput.
	const warmup = 20
	payloads := make([][]byte, b.N+warmup)
	next := make([]uint64, devices)
	t0 := time.Now().UTC().Truncate(10 * time.Second)
	recData, recTimes := windowRecords(len(payloads)*recordsPerBatch, t0)
	for i := range payloads {
		d := i % devices
		e := &envelope.Envelope{V: envelope.Version, Device: "bench-" + strconv.Itoa(d), Stream: "windows", Prev: next[d]}
		for j := 0; j < recordsPerBatch; j++ {
			next[d]++
			k := i*recordsPerBatch + j
			e.Records = append(e.Records, envelope.Record{Seq: next[d], EventTime: recTimes[k], Data: json.RawMessage(recData[k])})
		}
		if payloads[i], err = envelope.Encode(e, compress); err != nil {
			b.Fatal(err)
		}
	}
	topic := cfg.Kafka.TopicPrefix + "windows"
	publish := func(from, to int) []mqtt.Token {
		toks := make([]mqtt.Token, 0, to-from)
		for i := from; i < to; i++ {
			d := i % devices
			toks = append(toks, clients[d].Publish(topics.Up("bench-"+strconv.Itoa(d), "windows"), 1, false, payloads[i]))
		}
		return toks
	}
	for _, t := range publish(0, warmup) {
		if t.Wait(); t.Error() != nil {
			b.Fatal(t.Error())
		}
	}
	for h.Stats().BridgeRecords < warmup*recordsPerBatch {
		time.Sleep(2 * time.Millisecond)
	}
	txn0 := h.Stats().BridgeTxns
	want := int64((b.N + warmup) * recordsPerBatch)

	b.SetBytes(int64(len(payloads[0])))
	b.ResetTimer()
	stopProfile := profileTimed(b)
	cpu0, start := cpuTime(), time.Now()
	toks := publish(warmup, len(payloads))
	for _, t := range toks {
		if t.Wait(); t.Error() != nil {
			b.Fatal(t.Error())
		}
	}
	// A bridge that stops short fails with the hub's counters (gaps,
	// duplicates, dead letters say where the records went) rather than
	// waiting out the test's timeout.
	last, lastAt := int64(-1), time.Now()
	for {
		st := h.Stats()
		if st.BridgeRecords >= want {
			break
		}
		if st.BridgeRecords != last {
			last, lastAt = st.BridgeRecords, time.Now()
		} else if time.Since(lastAt) > time.Minute {
			js, _ := json.Marshal(st)
			b.Fatalf("bridged %d of %d records, none more for a minute; hub stats: %s", st.BridgeRecords, want, js)
		}
		time.Sleep(2 * time.Millisecond)
	}
	elapsed, cpu := time.Since(start), cpuTime()-cpu0
	b.StopTimer()
	stopProfile()

	if got := endOffsets(b, brokers, topic); got != want+0 && got < want {
		b.Fatalf("kafka holds %d records, want %d", got, want)
	}
	timed := float64(b.N * recordsPerBatch)
	b.ReportMetric(timed/elapsed.Seconds(), "records/s")
	b.ReportMetric(float64(cpu.Nanoseconds())/timed, "cpu-ns/record")
	st := h.Stats()
	b.ReportMetric(timed/float64(st.BridgeTxns-txn0), "records/txn")
	// Fetches that lost messages between JetStream and the bridge, each
	// read again from the checkpoint (their cost is in the rate).
	b.ReportMetric(float64(st.BridgeDeliveryGaps), "delivery-gaps")
	// How the acker's decodings reached the bridge: taken (decoded once),
	// evicted (decoded twice) or never kept (the acker parsed headers only).
	msgs := float64(b.N + warmup)
	b.ReportMetric(float64(st.DecodeShared)/msgs, "shared/msg")
	b.ReportMetric(float64(st.DecodeEvicted)/msgs, "evicted/msg")
	// Messages the bridge took as the acker received them (one JetStream
	// delivery for both) rather than through a consumer of its own.
	b.ReportMetric(float64(st.BridgeFromFeed)/msgs, "feed/msg")
}

// BenchmarkKafkaProducerBaseline: a bare franz-go producer writing the
// same records to the same broker, idempotent and lz4-compressed like the
// bridge, without JetStream, transactions or MQTT. Read the hub figure as
// a ratio of this one. headers=cloudevents writes the records exactly as
// the bridge does, with its six CloudEvents headers (about 150 bytes a
// record); headers=none writes the value alone.
func BenchmarkKafkaProducerBaseline(b *testing.B) {
	for _, ce := range []bool{true, false} {
		name := "headers=none"
		if ce {
			name = "headers=cloudevents"
		}
		b.Run(name, func(b *testing.B) { producerBaseline(b, ce) })
	}
}

func producerBaseline(b *testing.B, cloudEvents bool) {
	brokers := kafkatest.Brokers(b)
	topic := fmt.Sprintf("baseline-%d", time.Now().UnixNano())
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic(topic),
		kgo.ProducerBatchCompression(kgo.Lz4Compression()), kgo.ProducerBatchMaxBytes(1<<20), kgo.MaxBufferedRecords(1<<20),
		kgo.ProducerLinger(0)) // as the bridge's
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	if _, err := kadm.NewClient(cl).CreateTopic(context.Background(), 3, 1, nil, topic); err != nil {
		b.Fatal(err)
	}
	// The records the bridge writes for the hub benchmark's messages (500
	// consecutive records of one device each, devices in turn, the same
	// warm-up first), laid out before the clock starts in one slab without
	// pointers, so that the collector has nothing to scan in them (a record
	// object each, built beforehand, made every collection mark hundreds of
	// megabytes). Each message's records and headers are then carved from
	// one allocation, as the bridge carves them.
	const warmup = 20
	total := (b.N + warmup) * recordsPerBatch
	recData, recTimes := windowRecords(total, time.Now().UTC().Truncate(10*time.Second))
	var slab []byte
	ends := make([]int, 0, 3*total) // per record: where its value, ce_id and ce_time end
	for i := range total {
		d := (i / recordsPerBatch) % devices
		device := "bench-" + strconv.Itoa(d)
		seq := strconv.Itoa((i/(recordsPerBatch*devices))*recordsPerBatch + i%recordsPerBatch + 1)
		et := recTimes[i].Format(time.RFC3339Nano)
		slab = append(slab, `{"device":"`+device+`","stream":"windows","seq":`+seq+`,"event_time":"`+et+`","data":`...)
		slab = append(append(slab, recData[i]...), '}')
		ends = append(ends, len(slab))
		slab = append(slab, device+":"+seq...)
		ends = append(ends, len(slab))
		slab = append(slab, et...)
		ends = append(ends, len(slab))
	}
	recData, recTimes = nil, nil
	keys, sources := make([][]byte, devices), make([][]byte, devices)
	for d := range keys {
		keys[d], sources[d] = []byte("bench-"+strconv.Itoa(d)), []byte("/outpost/devices/bench-"+strconv.Itoa(d))
	}
	specVersion, ceType, contentType := []byte("1.0"), []byte("dev.outpost.windows.v1"), []byte("application/json")
	var failed error
	at := 0
	produce := func(from, to int) {
		for m := from; m < to; m += recordsPerBatch {
			recs := make([]kgo.Record, recordsPerBatch)
			var hdrs []kgo.RecordHeader
			if cloudEvents {
				hdrs = make([]kgo.RecordHeader, 0, 6*recordsPerBatch)
			}
			for j := range recs {
				i := m + j
				e, d := ends[3*i:3*i+3], (i/recordsPerBatch)%devices
				r := &recs[j]
				r.Key, r.Value = keys[d], slab[at:e[0]:e[0]]
				if cloudEvents {
					hdrs = append(hdrs,
						kgo.RecordHeader{Key: "ce_specversion", Value: specVersion}, kgo.RecordHeader{Key: "ce_id", Value: slab[e[0]:e[1]:e[1]]},
						kgo.RecordHeader{Key: "ce_source", Value: sources[d]}, kgo.RecordHeader{Key: "ce_type", Value: ceType},
						kgo.RecordHeader{Key: "ce_time", Value: slab[e[1]:e[2]:e[2]]}, kgo.RecordHeader{Key: "content-type", Value: contentType})
					r.Headers = hdrs[len(hdrs)-6 : len(hdrs) : len(hdrs)]
				}
				at = e[2]
				cl.Produce(context.Background(), r, func(_ *kgo.Record, err error) {
					if err != nil && failed == nil {
						failed = err
					}
				})
			}
		}
		if err := cl.Flush(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
	// Warm-up first, as the hub's: the producer id, the connection, the
	// broker's JIT.
	produce(0, warmup*recordsPerBatch)
	want := b.N * recordsPerBatch
	b.ResetTimer()
	stopProfile := profileTimed(b)
	cpu0, start := cpuTime(), time.Now()
	produce(warmup*recordsPerBatch, total)
	elapsed, cpu := time.Since(start), cpuTime()-cpu0
	b.StopTimer()
	stopProfile()
	if failed != nil {
		b.Fatal(failed)
	}
	b.ReportMetric(float64(want)/elapsed.Seconds(), "records/s")
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(want), "cpu-ns/record")
}

func endOffsets(b *testing.B, brokers []string, topic string) int64 {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(context.Background(), topic)
	if err != nil {
		b.Fatal(err)
	}
	var n int64
	ends.Each(func(o kadm.ListedOffset) { n += o.Offset })
	return n
}
