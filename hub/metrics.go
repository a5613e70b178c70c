package hub

import (
	"net/http"
	"regexp"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metricsHandler exposes the pipeline counters for Prometheus. The values
// are read from the same atomics /v1/stats shows, at scrape time.
func (h *Hub) metricsHandler() http.Handler {
	reg := prometheus.NewRegistry()
	// go_gc_heap_live_bytes too: the heap the last collection found live.
	// Heap in use also counts garbage not yet collected, which at low
	// traffic lingers for up to the runtime's forced collection (2 min).
	live := collectors.GoRuntimeMetricsRule{Matcher: regexp.MustCompile(`^/gc/heap/live:bytes$`)}
	reg.MustRegister(collectors.NewGoCollector(collectors.WithGoCollectorRuntimeMetrics(live)),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	counter := func(name, help string, read func(Stats) int64) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "outpost_hub", Name: name, Help: help},
			func() float64 { return float64(read(h.Stats())) }))
	}
	counter("acked_envelopes_total", "Device batches acknowledged as stored.", func(s Stats) int64 { return s.AckerEnvelopes })
	counter("acked_compressed_envelopes_total", "Of the acknowledged batches, those that came zstd-compressed.", func(s Stats) int64 { return s.AckerCompressed })
	counter("ack_gaps_total", "Device batches not acknowledged because an earlier batch was missing.", func(s Stats) int64 { return s.AckerGaps })
	counter("malformed_payloads_total", "Device payloads that were not valid envelopes for their topic.", func(s Stats) int64 { return s.Malformed })
	counter("bridge_records_total", "Records committed to Kafka.", func(s Stats) int64 { return s.BridgeRecords })
	counter("bridge_duplicates_total", "Resent records dropped because Kafka already had them.", func(s Stats) int64 { return s.BridgeDuplicates })
	counter("bridge_dead_letters_total", "Payloads written to the dead-letter topic.", func(s Stats) int64 { return s.BridgeDeadLetters })
	counter("bridge_transactions_total", "Kafka transactions committed.", func(s Stats) int64 { return s.BridgeTxns })
	counter("bridge_aborts_total", "Kafka transactions aborted (retried).", func(s Stats) int64 { return s.BridgeAborts })
	counter("bridge_delivery_gaps_total", "JetStream deliveries to the bridge that skipped messages (read again from the checkpoint).", func(s Stats) int64 { return s.BridgeDeliveryGaps })
	counter("bridge_feed_messages_total", "Stream messages the bridge took as the acker received them (one JetStream delivery for both).", func(s Stats) int64 { return s.BridgeFromFeed })
	counter("bridge_stream_messages_total", "Stream messages the bridge read through a consumer of its own (behind by more than bridge.feed_bytes, or the acker restarting).", func(s Stats) int64 { return s.BridgeFromStream })
	counter("bridge_feed_fallbacks_total", "Times the bridge left the acker's feed for a consumer of its own.", func(s Stats) int64 { return s.BridgeFallbacks })
	counter("auth_accepted_total", "Broker connections authenticated.", func(s Stats) int64 { return s.AuthAccepted })
	counter("auth_refused_total", "Broker connections refused (unknown, revoked, wrong secret).", func(s Stats) int64 { return s.AuthRefused })
	counter("trainer_labelled_rows_total", "Labelled windows the trainer learned from (this lease).", func(s Stats) int64 { return s.TrainerLabelled })
	counter("trainer_drifts_total", "Concept drifts ADWIN found in production models' error rates.", func(s Stats) int64 { return s.TrainerDrifts })
	counter("trainer_releases_total", "Retrained models registered (and canaried when configured).", func(s Stats) int64 { return s.TrainerReleases })
	counter("trainer_unmatched_labels_total", "Labels that found no window within trainer.join_wait.", func(s Stats) int64 { return s.UnmatchedLabels })
	counter("trainer_bad_labels_total", "Label records from Kafka that could not be decoded.", func(s Stats) int64 { return s.BadLabels })
	counter("enrolments_total", "Devices enrolled with a one-time token.", func(s Stats) int64 { return s.Enrolled })
	counter("enrolments_refused_total", "Enrolments refused (unknown, used or expired token; device exists).", func(s Stats) int64 { return s.EnrolRefused })
	counter("ingest_trimmed_messages_total", "Stream messages removed once Kafka (and the trainer) had them.", func(s Stats) int64 { return s.IngestTrimmed })
	counter("ingest_trainer_skipped_messages_total", "Stream messages removed before the trainer read them, because the stream was over half full.", func(s Stats) int64 { return s.IngestOvertook })
	counter("store_heals_total", "JetStream stores reloaded in process because a full disk had latched their write error (logged by the store healer).", func(s Stats) int64 { return s.StoreHeals })
	counter("ingest_overflows_total", "Seconds in which JetStream dropped device batches because a stream's ingest queue (broker.stream_buffer) was full; the acker asked those devices to resend.", func(s Stats) int64 { return s.IngestOverflows })
	counter("acker_replayed_messages_total", "Stream messages the acker read at start or failover to restore its marks.", func(s Stats) int64 { return s.AckerReplayed })
	counter("decode_shared_total", "Device payloads the bridge took as the acker had decoded them (decoded once).", func(s Stats) int64 { return s.DecodeShared })
	counter("decode_evicted_total", "Decoded payloads dropped before the bridge came (bridge.shared_decode_bytes exceeded); the bridge decoded them again.", func(s Stats) int64 { return s.DecodeEvicted })
	counter("decode_unshared_total", "Device payloads read while bridge.shared_decode_bytes of decodings waited for the bridge: the acker parsed the header alone, the bridge decodes them itself.", func(s Stats) int64 { return s.DecodeUnshared })
	gauge := func(name, help string, read func(Stats) float64) {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "outpost_hub", Name: name, Help: help},
			func() float64 { return read(h.Stats()) }))
	}
	gauge("ingest_full", "1 while OUTPOST_UP is full (95% of ingest.max_bytes): devices' batches are refused and wait in their outboxes; the log and outpost.events say why.", func(s Stats) float64 {
		if s.IngestFull {
			return 1
		}
		return 0
	})
	gauge("ingest_bytes", "Bytes OUTPOST_UP holds (what Kafka or the trainer do not have yet), as of the last trim.", func(s Stats) float64 { return float64(s.IngestBytes) })
	gauge("ingest_messages", "Device batches OUTPOST_UP holds, as of the last trim.", func(s Stats) float64 { return float64(s.IngestMessages) })
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "outpost_hub", Name: "bridge_backlog_messages",
		Help: "Device batches in JetStream not yet written to Kafka."}, func() float64 { return float64(h.Stats().BridgeBacklog) }))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "outpost_hub", Name: "bridge_backlog_age_seconds",
		Help: "How long the oldest batch not yet in Kafka has waited (as of the bridge's last batch)."}, func() float64 { return h.Stats().BridgeBacklogAgeS }))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "outpost_hub", Name: "leader",
		Help: "1 while this hub holds the pipeline lease and runs the Kafka bridge and the acker."}, func() float64 {
		if h.leader.Load() {
			return 1
		}
		return 0
	}))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "outpost_hub", Name: "stream_replicas_current",
		Help: "Copies of OUTPOST_UP that are current, the stream leader included."}, func() float64 { return float64(h.streamReplicas()) }))
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}
