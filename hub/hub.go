// Package hub is the outpost-hub runtime: the embedded MQTT/JetStream broker,
// the Kafka connection and the HTTP API, wired together and run until the
// context ends.
package hub

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"reflect"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"
	"golang.org/x/time/rate"

	"github.com/outpost-edge/outpost/hub/api"
	"github.com/outpost-edge/outpost/hub/bridge"
	"github.com/outpost-edge/outpost/hub/broker"
	"github.com/outpost-edge/outpost/hub/console"
	"github.com/outpost-edge/outpost/hub/devca"
	"github.com/outpost-edge/outpost/hub/ingest"
	"github.com/outpost-edge/outpost/hub/kafka"
	"github.com/outpost-edge/outpost/hub/lease"
	"github.com/outpost-edge/outpost/hub/modelstore"
	"github.com/outpost-edge/outpost/hub/registry"
	"github.com/outpost-edge/outpost/hub/rollout"
	"github.com/outpost-edge/outpost/hub/trainer"
	"github.com/outpost-edge/outpost/hub/updates"
	"github.com/outpost-edge/outpost/sync/envelope"
	"github.com/outpost-edge/outpost/sync/state"
	"github.com/outpost-edge/outpost/sync/topics"
)

// Hub is a running hub.
type Hub struct {
	cfg    *Config
	log    *slog.Logger
	broker *broker.Broker
	kafka  *kafka.Conn
	nc     *nats.Conn
	// ackNC is the acker's own connection: each stored batch reaches the
	// acker and the bridge, and on one connection a single read loop
	// would parse both copies in turn.
	ackNC   *nats.Conn
	devices *devices
	http    *http.Server
	httpLn  net.Listener
	acker   *ingest.Acker
	feed    *bridge.Feed // what the acker received, for the bridge (nil: off)
	// decodings are the payloads the acker decoded, waiting for the
	// bridge.
	decodings *envelope.Shared
	registry  *registry.Registry
	ca        atomic.Pointer[devca.CA] // set once JetStream is up
	bridge    *bridge.Bridge
	leader    atomic.Bool
	stream    jetstream.Stream
	ackStream jetstream.Stream // stream, on ackNC
	models    *modelstore.Store
	updates   *updates.Service
	rollouts  *rollout.Controller
	trainer   *trainer.Trainer
	events    *kafkaSink
	audit     *console.Audit
	timeline  *console.Timeline
	training  trainingStore
	sessions  *console.KVSessions
	// timelineW writes the device timeline; nil until the pipeline starts.
	timelineW atomic.Pointer[timelineWriter]
	console   *console.Console
	js        jetstream.JetStream
	stop      context.CancelFunc
	group     errgroup.Group // the lease runner and the HTTP server
	// retention trims OUTPOST_UP while this hub holds the lease.
	retention   *ingest.Retention
	streamStats ingest.RetentionStats
	lease       *lease.Lease     // the pipeline lease
	sampler     *console.Sampler // the streams page's readings
	healer      *storeHealer     // reloads a store that latched a write error
	routes      *routeTable      // what startHTTP registered
}

// Options are test hooks; a production hub passes none.
type Options struct {
	// AfterCommit runs in the bridge between the Kafka commit and the
	// JetStream ack (see bridge.Options).
	AfterCommit func() error
	// Now is the clock of the devices' CA (time.Now).
	Now func() time.Time
}

// Start brings every part up; on error, whatever started is stopped again.
func Start(ctx context.Context, cfg *Config, log *slog.Logger, opts ...Options) (h *Hub, err error) {
	var o Options
	if len(opts) > 0 {
		o = opts[0]
	}
	h = &Hub{cfg: cfg, log: log, devices: newDevices()}
	started := h // the named result is nil on error returns
	defer func() {
		if err != nil {
			started.Close()
		}
	}()
	// The HTTP port is bound first, like the broker's, so that a port
	// another process holds stops the start at once with its reason, not
	// after the wait for a cluster's quorum (in which it may be taken).
	if h.httpLn, err = net.Listen("tcp", cfg.HTTP.Listen); err != nil {
		return nil, fmt.Errorf("hub: http listen: %w", err)
	}
	bcfg := cfg.Broker
	bcfg.StoreDir = cfg.StoreDir()
	bcfg.MQTTReplicas = cfg.Ingest.Replicas
	h.registry = registry.New(log)
	if h.broker, err = broker.Start(ctx, bcfg, log, h.registry); err != nil {
		return nil, err
	}
	log.Info("broker ready", "mqtt", h.broker.MQTTAddr(), "nats", h.broker.NATSURL(), "sync_always", bcfg.SyncAlways)
	if h.kafka, err = kafka.Connect(ctx, cfg.Kafka, filepath.Join(cfg.DataDir, "devkafka"), log); err != nil {
		return nil, err
	}
	if h.nc, err = h.connect("outpost-hub"); err != nil {
		return nil, err
	}
	if h.ackNC, err = h.connect("outpost-hub-acker"); err != nil {
		return nil, err
	}
	if _, err = h.nc.Subscribe(topics.Subject(topics.Reported("*")), h.onReported); err != nil {
		return nil, fmt.Errorf("hub: subscribe reported: %w", err)
	}
	if err = h.startPipeline(ctx, o); err != nil {
		return nil, err
	}
	if err = h.startHTTP(); err != nil {
		return nil, err
	}
	return h, nil
}

// connect opens a connection of the hub's own to its embedded server.
// Over loopback TCP, not nats.InProcessServer: its net.Pipe hands each
// write over synchronously, and BenchmarkHubToKafka ran 18-42% slower on it.
func (h *Hub) connect(name string) (*nats.Conn, error) {
	nc, err := nats.Connect(h.broker.NATSURL(), nats.Name(name), nats.UserInfo(h.registry.Internal()))
	if err != nil {
		return nil, fmt.Errorf("hub: connect %s to the embedded broker: %w", name, err)
	}
	return nc, nil
}

// pipelineLease is the lease whose holder runs the acker and the bridge:
// in a cluster one hub does, so each record is bridged once and each
// envelope acked once.
const pipelineLease = "pipeline"

// startPipeline creates the registry bucket, OUTPOST_UP and the lease,
// then runs the acker and the Kafka bridge until Close on whichever hub of
// the cluster holds the lease.
func (h *Hub) startPipeline(ctx context.Context, o Options) error {
	js, err := jetstream.New(h.nc)
	if err != nil {
		return fmt.Errorf("hub: jetstream: %w", err)
	}
	ackJS, err := jetstream.New(h.ackNC)
	if err != nil {
		return fmt.Errorf("hub: jetstream: %w", err)
	}
	var stream, ackStream jetstream.Stream
	var ls *lease.Lease
	// A clustered JetStream needs a quorum of hubs before a replicated
	// stream can be created, so a hub that starts first waits for its peers.
	err = h.untilReady(ctx, func(ctx context.Context) error {
		if err := h.registry.Attach(ctx, js, h.cfg.Ingest.Replicas, h.broker.Server()); err != nil {
			return err
		}
		ca, err := devca.Open(ctx, js, h.cfg.Ingest.Replicas, h.cfg.Devices.CA, devca.Options{Validity: h.cfg.Devices.CertValidity, Now: o.Now}, h.log)
		if err != nil {
			return err
		}
		h.ca.Store(ca)
		h.broker.TrustDevices(ca.Certificate())
		h.registry.SetIssuer(ca, h.cfg.Broker.TLS.VerifyClients)
		if stream, err = ingest.EnsureStream(ctx, js, h.cfg.Ingest); err != nil {
			return err
		}
		if ackStream, err = ackJS.Stream(ctx, ingest.StreamName); err != nil {
			return fmt.Errorf("hub: acker stream: %w", err)
		}
		if h.models, err = modelstore.Open(ctx, js, h.cfg.Ingest.Replicas); err != nil {
			return err
		}
		if h.audit, err = console.OpenAudit(ctx, js, h.cfg.Ingest.Replicas); err != nil {
			return err
		}
		if h.timeline, err = console.OpenTimeline(ctx, js, h.cfg.Ingest.Replicas, h.cfg.Console.TimelineRetention); err != nil {
			return err
		}
		if h.training, err = openTrainingStore(ctx, js, h.cfg.Ingest.Replicas); err != nil {
			return err
		}
		if h.sessions, err = console.OpenSessions(ctx, js, h.cfg.Ingest.Replicas, h.cfg.Console.SessionTTL); err != nil {
			return err
		}
		if h.rollouts, err = rollout.Open(ctx, js, h.cfg.Ingest.Replicas, fleet{h}, fleet{h}, h.log); err != nil {
			return err
		}
		if h.cfg.Broker.Cluster.Enabled() {
			// The shared TUF bucket, like every other, waits for a quorum.
			if h.updates, err = updates.OpenShared(ctx, h.cfg.Updates, h.cfg.DataDir, js, h.cfg.Ingest.Replicas, h.log); err != nil {
				return err
			}
		}
		ls, err = lease.Open(ctx, js, pipelineLease, h.cfg.Broker.ServerName, h.cfg.Broker.Cluster.LeaseTTL, h.cfg.Ingest.Replicas, h.log)
		return err
	})
	if err != nil {
		return err
	}
	h.stream, h.ackStream, h.js, h.lease = stream, ackStream, js, ls
	h.rollouts.OnState = h.followStage
	h.trainer = trainer.New(h.cfg.Trainer, trainerRegistry{h}, trainerRegistry{h}, h.registry.Labels, h.log)
	h.events = &kafkaSink{h: h}
	h.trainer.Sink = h.events
	h.trainer.Store = h.training
	h.audit.Emit = h.events.EmitAudit
	runCtx, stop := context.WithCancel(context.Background())
	h.stop = stop
	h.startHealer(runCtx)
	h.startTimeline(runCtx)
	h.trainer.OnDrift = h.timelineW.Load().drifted
	if err := h.startUpdates(ctx, runCtx); err != nil {
		return err
	}
	// Each payload inflates to at most a few times the largest message.
	dec := envelope.NewDecoder(int(h.cfg.Broker.MaxPayload) * envelope.InflateFactor)
	// The acker and the bridge read the same stream: each payload is
	// decoded once, by the first of them, for both.
	h.decodings = envelope.NewShared(dec, int(h.cfg.Bridge.SharedDecodeBytes))
	h.acker = ingest.NewAcker(h.ackNC, h.decodings, h.log)
	// The bridge reads what the acker received while it keeps up: one
	// delivery of each message, not two.
	if h.cfg.Bridge.FeedBytes > 0 {
		h.feed = bridge.NewFeed(int(h.cfg.Bridge.FeedBytes))
		h.acker.OnStored = h.feed.Put
	}
	h.trainer.Decoder = dec
	h.bridge = bridge.New(h.cfg.Bridge, bridge.Options{
		Decoder:         h.decodings,
		Feed:            h.feed,
		Stream:          stream,
		ClientOpts:      h.kafka.Opts,
		Kafka:           h.cfg.Kafka,
		TransactionalID: h.cfg.BridgeID(),
		Log:             h.log,
		AfterCommit:     o.AfterCommit,
	})
	h.retention = &ingest.Retention{
		Stream: stream, MaxBytes: h.cfg.Ingest.MaxBytes, Every: h.cfg.Ingest.TrimInterval,
		Holds: h.streamHolds, OnFull: h.onStreamFull, Log: h.log, Stats: &h.streamStats,
	}
	h.group.Go(func() error {
		ls.Run(runCtx, h.lead)
		return nil
	})
	// Every hub reads its own counters: a hub without the lease charts
	// zeros and says who holds it.
	h.sampler = console.NewSampler(console.SampleEvery, console.SampleWindow)
	supervise(runCtx, &h.group, h.log, "stream sampler", func(ctx context.Context) error {
		return h.sampler.Run(ctx, consoleBackend{h})
	})
	return nil
}

// lead runs what the holder of the pipeline lease runs, until the lease
// ends: rollouts, the trainer (and its labels consumer), TUF signing in a
// cluster, the acker, the bridge and the stream's retention. Right after a
// failover JetStream may still be electing leaders, so each part is
// restarted until the lease ends.
func (h *Hub) lead(ctx context.Context) {
	h.leader.Store(true)
	defer h.leader.Store(false)
	if h.feed != nil {
		h.feed.Reset()
	}
	var g errgroup.Group
	supervise(ctx, &g, h.log, "rollout controller", func(ctx context.Context) error {
		h.rollouts.Run(ctx, h.cfg.Updates.RolloutInterval)
		return nil
	})
	supervise(ctx, &g, h.log, "trainer", func(ctx context.Context) error { return h.trainer.Run(ctx, h.js, ingest.StreamName) })
	if h.trainer.JoinsLabels() {
		// One group per cluster (or standalone hub): its lease holder reads.
		name := h.cfg.Broker.Cluster.Name
		if name == "" {
			name = h.cfg.Broker.ServerName
		}
		topic, group := h.cfg.Kafka.TopicPrefix+"labels", "outpost-trainer-"+name
		supervise(ctx, &g, h.log, "labels consumer", func(ctx context.Context) error {
			return h.trainer.ConsumeLabels(ctx, h.kafka.Opts, topic, group)
		})
	}
	if h.cfg.Broker.Cluster.Enabled() {
		supervise(ctx, &g, h.log, "tuf signing", func(ctx context.Context) error { return h.updates.Lead(ctx, h.publishRegistry) })
	}
	supervise(ctx, &g, h.log, "acker", h.healer.untilHeal(func(ctx context.Context) error { return h.acker.Run(ctx, h.ackStream) }))
	supervise(ctx, &g, h.log, "stream retention", h.retention.Run)
	g.Go(func() error {
		// The bridge retries Kafka itself; it returns only for a crash the
		// tests inject, and then stays down like a crashed process.
		if err := h.bridge.Run(ctx); err != nil {
			h.log.Error("bridge stopped", "err", err)
		}
		return nil
	})
	_ = g.Wait() // the parts log their errors; none ends the lease
}

// untilReady retries setup while JetStream is not yet available (no
// cluster quorum), logging every 10 s, until it succeeds or ctx ends. A
// request sent before the cluster has a meta leader gets no answer at all,
// so each attempt is short, and a clustered hub first waits for the meta
// leader.
func (h *Hub) untilReady(ctx context.Context, setup func(context.Context) error) error {
	logEvery := rate.Sometimes{Interval: 10 * time.Second}
	clustered := h.cfg.Broker.Cluster.Enabled()
	for clustered && !h.broker.Server().JetStreamIsCurrent() {
		logEvery.Do(func() {
			h.log.Warn("waiting for the JetStream cluster to elect a meta leader (needs a majority of hubs)")
		})
		select {
		case <-ctx.Done():
			return fmt.Errorf("hub: jetstream cluster: %w", ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
	for {
		tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := setup(tctx)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil || !clustered {
			return err
		}
		logEvery.Do(func() { h.log.Warn("waiting for the JetStream cluster", "err", err) })
		select {
		case <-ctx.Done():
			return err
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// Leader reports whether this hub runs the cluster's bridge and acker.
func (h *Hub) Leader() bool { return h.leader.Load() }

// Stats is a snapshot of the pipeline counters.
type Stats struct {
	AckerEnvelopes int64 `json:"acker_envelopes"`
	// AckerCompressed: of AckerEnvelopes, those that came zstd-compressed
	// (the agent's uplink.compress).
	AckerCompressed   int64 `json:"acker_compressed"`
	AckerGaps         int64 `json:"acker_gaps"`
	Malformed         int64 `json:"malformed"`
	BridgeRecords     int64 `json:"bridge_records"`
	BridgeDuplicates  int64 `json:"bridge_duplicates"`
	BridgeGaps        int64 `json:"bridge_gaps"`
	BridgeDeadLetters int64 `json:"bridge_dead_letters"`
	BridgeTxns        int64 `json:"bridge_transactions"`
	BridgeAborts      int64 `json:"bridge_aborts"`
	// BridgeDeliveryGaps counts deliveries from JetStream that skipped
	// messages; the bridge read again from its checkpoint each time.
	BridgeDeliveryGaps int64 `json:"bridge_delivery_gaps"`
	// BridgeFromFeed and BridgeFromStream count the messages the bridge
	// took as the acker had received them and those it read through a
	// consumer of its own; BridgeFallbacks the times it left the first
	// for the second (behind by more than bridge.feed_bytes, the acker
	// restarted, or it stalled).
	BridgeFromFeed    int64   `json:"bridge_from_feed"`
	BridgeFromStream  int64   `json:"bridge_from_stream"`
	BridgeFallbacks   int64   `json:"bridge_fallbacks"`
	BridgeBacklog     uint64  `json:"bridge_backlog"`
	BridgeBacklogAgeS float64 `json:"bridge_backlog_age_seconds"`
	// BridgeTopicRecords are the records committed to each Kafka topic
	// (without the prefix), dead letters included.
	BridgeTopicRecords map[string]int64 `json:"bridge_topic_records"`
	AuthAccepted       int64            `json:"auth_accepted"`
	AuthRefused        int64            `json:"auth_refused"`
	Enrolled           int64            `json:"enrolled"`
	EnrolRefused       int64            `json:"enrol_refused"`
	CertRenewed        int64            `json:"cert_renewed"`
	CertRenewRefused   int64            `json:"cert_renew_refused"`
	TrainerLabelled    int64            `json:"trainer_labelled"`
	TrainerDrifts      int64            `json:"trainer_drifts"`
	TrainerReleases    int64            `json:"trainer_releases"`
	UnmatchedLabels    int64            `json:"unmatched_labels"`
	BadLabels          int64            `json:"bad_labels"`
	// IngestFull: OUTPOST_UP is at ingest.FullShare of max_bytes, and
	// IngestFullReason says what holds its messages.
	IngestFull       bool   `json:"ingest_full"`
	IngestFullReason string `json:"ingest_full_reason,omitempty"`
	IngestBytes      uint64 `json:"ingest_bytes"`
	IngestMessages   uint64 `json:"ingest_messages"`
	IngestTrimmed    int64  `json:"ingest_trimmed"`
	IngestOvertook   int64  `json:"ingest_trainer_skipped"`
	AckerReplayed    int64  `json:"acker_replayed"`
	// DecodeShared counts payloads the bridge took decoded from the acker;
	// DecodeEvicted those dropped before it came (it decoded them again);
	// DecodeUnshared those read while bridge.shared_decode_bytes of
	// decodings already waited (the acker parsed the header alone, the
	// bridge decodes them itself).
	DecodeShared   int64 `json:"decode_shared"`
	DecodeEvicted  int64 `json:"decode_evicted"`
	DecodeUnshared int64 `json:"decode_unshared"`
	// StoreHeals: JetStream stores reloaded in process after a full disk
	// latched their write error (broker.Healer).
	StoreHeals int64 `json:"store_heals"`
	// IngestOverflows: seconds in which JetStream dropped device batches
	// because a stream's ingest queue (broker.stream_buffer) was full; the
	// acker asks those devices to resend.
	IngestOverflows int64 `json:"ingest_overflows"`
	// Leader: this hub holds the pipeline lease and runs the bridge.
	Leader bool `json:"leader"`
	// KafkaBrokers is where the hub writes: the configured brokers, or the
	// embedded development broker's address (KafkaEmbedded).
	KafkaBrokers  []string `json:"kafka_brokers"`
	KafkaEmbedded bool     `json:"kafka_embedded"`
	// StreamReplicas counts the copies of OUTPOST_UP that are current
	// (the stream leader included); 0 when unknown. Only /v1/stats fills
	// it in: it asks JetStream.
	StreamReplicas int `json:"stream_replicas"`
}

// Stats reads the counters.
func (h *Hub) Stats() Stats {
	a, b := &h.acker.Stats, &h.bridge.Stats
	var tl, td, tr, tu int64
	if h.trainer != nil {
		for _, st := range h.trainer.Status() {
			tl, td, tr, tu = tl+st.Labelled, td+int64(st.Drifts), tr+int64(st.Releases), tu+st.Join.UnmatchedLabels
		}
	}
	var bad int64
	if h.trainer != nil {
		bad = h.trainer.BadLabels()
	}
	st := &h.streamStats
	reason, _ := st.Reason.Load().(string)
	return Stats{
		IngestFull: st.Full.Load(), IngestFullReason: reason, IngestBytes: st.Bytes.Load(), IngestMessages: st.Messages.Load(),
		IngestTrimmed: st.Trimmed.Load(), IngestOvertook: st.Overtook.Load(), AckerReplayed: a.Replayed.Load(),
		DecodeShared: h.decodings.Hits.Load(), DecodeEvicted: h.decodings.Evicted.Load(),
		DecodeUnshared:  h.decodings.Full.Load(),
		TrainerLabelled: tl, TrainerDrifts: td, TrainerReleases: tr, UnmatchedLabels: tu, BadLabels: bad,
		AckerEnvelopes: a.Envelopes.Load(), AckerCompressed: a.Compressed.Load(), AckerGaps: a.Gaps.Load(), Malformed: a.Malformed.Load(),
		BridgeRecords: b.Records.Load(), BridgeDuplicates: b.Duplicates.Load(), BridgeGaps: b.Gaps.Load(),
		BridgeDeadLetters: b.DeadLetters.Load(), BridgeTxns: b.Transactions.Load(), BridgeAborts: b.Aborts.Load(),
		BridgeDeliveryGaps: b.DeliveryGaps.Load(),
		BridgeFromFeed:     b.FromFeed.Load(), BridgeFromStream: b.FromStream.Load(), BridgeFallbacks: b.Fallbacks.Load(),
		BridgeBacklog: b.Backlog.Load(), BridgeBacklogAgeS: time.Duration(b.BacklogAge.Load()).Seconds(), BridgeTopicRecords: b.TopicRecords(),
		AuthAccepted: h.registry.Stats.Accepted.Load(), AuthRefused: h.registry.Stats.Refused.Load(),
		Enrolled: h.registry.Stats.Enrolled.Load(), EnrolRefused: h.registry.Stats.EnrolRefused.Load(),
		CertRenewed: h.registry.Stats.Renewed.Load(), CertRenewRefused: h.registry.Stats.RenewRefused.Load(),
		Leader: h.leader.Load(), KafkaBrokers: h.kafka.Brokers, KafkaEmbedded: h.kafka.Embedded(), StoreHeals: h.storeHeals(),
		IngestOverflows: h.broker.IngestOverflows(),
	}
}

func (h *Hub) streamReplicas() int {
	if h.stream == nil {
		return 0
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	info, err := h.stream.Info(ctx)
	if err != nil {
		return 0
	}
	if info.Cluster == nil {
		return 1
	}
	n := 0
	if info.Cluster.Leader != "" {
		n++
	}
	for _, r := range info.Cluster.Replicas {
		if r.Current && !r.Offline {
			n++
		}
	}
	return n
}

// Run starts the hub and serves until ctx is cancelled.
func Run(ctx context.Context, cfg *Config, log *slog.Logger) error {
	h, err := Start(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer h.Close()
	log.Info("hub ready", "mqtt", h.broker.MQTTAddr(), "http", h.HTTPAddr(), "kafka", h.kafka.Brokers)
	<-ctx.Done()
	return nil
}

func (h *Hub) onReported(m *nats.Msg) {
	r, err := state.DecodeReported(m.Data)
	if err != nil {
		h.log.Warn("dropping malformed reported state", "subject", m.Subject, "err", err)
		return
	}
	// A device may only speak for itself; enforced by the broker once
	// per-device credentials land, and checked here as well.
	if want := topics.Subject(topics.Reported(r.Device)); want != m.Subject {
		h.log.Warn("reported state names another device", "subject", m.Subject, "device", r.Device)
		return
	}
	h.devices.put(r)
	h.timelineW.Load().reported(r)
	h.log.Debug("device reported", "device", r.Device, "status", r.Status, "boot", r.Boot, "agent_version", r.AgentVersion)
	// Level-triggered control: a device that has not seen its newest
	// desired state (it was offline, or the QoS 0 delivery was lost) gets
	// it again. The controller's hub answers, so a cluster sends it once.
	if h.leader.Load() && h.rollouts != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		d, behind, err := h.rollouts.Behind(ctx, r.Device, r.DesiredVersion)
		if err != nil {
			h.log.Warn("read desired state", "device", r.Device, "err", err)
			return
		}
		if behind {
			if err := (fleet{h}).PublishDesired(d); err != nil {
				h.log.Warn("publish desired state", "device", r.Device, "err", err)
			}
		}
	}
}

// fleet is the hub as the rollout controller sees it.
type fleet struct{ h *Hub }

// Devices are the enrolments with their last reports.
func (f fleet) Devices() []state.Device { return f.h.deviceViews() }

// PublishDesired sends a desired document to its device. It reaches MQTT
// as QoS 0; the device's next report tells whether it arrived.
func (f fleet) PublishDesired(d state.Desired) error {
	data, err := json.Marshal(d)
	if err != nil {
		return fmt.Errorf("hub: desired state: %w", err)
	}
	return f.h.nc.Publish(topics.Subject(topics.Desired(d.Device)), data)
}

func (h *Hub) startHTTP() error {
	if _, err := openAPIDocument(); err != nil {
		return fmt.Errorf("hub: the API's OpenAPI document: %w", err)
	}
	mux := newRouteTable()
	h.routes = mux
	mux.HandleFunc("GET /v1/openapi.json", serveOpenAPI)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, api.HubHealth{Status: "ok", EmbeddedKafka: h.kafka.Embedded(), KafkaBrokers: h.kafka.Brokers})
	})
	mux.HandleFunc("GET /v1/devices", h.admin(func(w http.ResponseWriter, r *http.Request) {
		page, total, err := pageDevices(h.deviceViews(), r.URL.Query())
		if err != nil {
			writeError(w, http.StatusBadRequest, err)
			return
		}
		w.Header().Set("X-Total-Count", strconv.Itoa(total))
		writeJSON(w, http.StatusOK, page)
	}))
	mux.HandleFunc("POST /v1/devices", h.admin(func(w http.ResponseWriter, r *http.Request) {
		var req api.AddDeviceRequest
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&req); err != nil {
			writeError(w, http.StatusBadRequest, fmt.Errorf("body: %w", err))
			return
		}
		creds, err := h.registry.Add(r.Context(), req.ID, req.Labels)
		if err != nil {
			writeError(w, http.StatusBadRequest, err)
			return
		}
		h.log.Info("device enrolled", "device", req.ID)
		h.timelineW.Load().event(req.ID, console.KindEnrolled, fmt.Sprintf("enrolled by %s with labels %s", whoOf(r), labelList(req.Labels)))
		writeJSON(w, http.StatusCreated, creds)
	}))
	mux.HandleFunc("GET /v1/devices/{id}", h.admin(func(w http.ResponseWriter, r *http.Request) {
		d, err := h.deviceDetail(r.Context(), r.PathValue("id"), r.URL.Query())
		switch {
		case errors.Is(err, registry.ErrUnknownDevice):
			writeError(w, http.StatusNotFound, err)
		case errors.Is(err, errBadQuery):
			writeError(w, http.StatusBadRequest, err)
		case err != nil:
			writeError(w, http.StatusInternalServerError, err)
		default:
			writeJSON(w, http.StatusOK, d)
		}
	}))
	mux.HandleFunc("POST /v1/devices/{id}/revoke", h.admin(func(w http.ResponseWriter, r *http.Request) {
		if err := h.registry.Revoke(r.Context(), r.PathValue("id"), h.broker.Server()); err != nil {
			status := http.StatusInternalServerError
			if errors.Is(err, registry.ErrUnknownDevice) {
				status = http.StatusNotFound
			}
			writeError(w, status, err)
			return
		}
		h.timelineW.Load().event(r.PathValue("id"), console.KindRevoked, "revoked by "+whoOf(r))
		w.WriteHeader(http.StatusNoContent)
	}))
	h.enrolRoutes(mux)
	h.agentRoutes(mux)
	h.trainRoutes(mux)
	h.modelRoutes(mux)
	h.rolloutRoutes(mux)
	mux.Handle("GET /metrics", h.metricsHandler())
	var err error
	h.console, err = console.New(h.cfg.Console, consoleBackend{h}, console.Options{
		AdminToken: h.cfg.HTTP.AdminToken, TLS: h.cfg.HTTP.TLS.CertFile != "", Audit: h.audit, Log: h.log, Sampler: h.sampler,
		Sessions: h.sessions,
	})
	if err != nil {
		return err
	}
	h.console.Routes(mux)
	mux.HandleFunc("GET /v1/stats", h.admin(func(w http.ResponseWriter, _ *http.Request) {
		s := h.Stats()
		s.StreamReplicas = h.streamReplicas()
		writeJSON(w, http.StatusOK, s)
	}))
	ln := h.httpLn
	h.http = &http.Server{Handler: mux.mux, ReadHeaderTimeout: 10 * time.Second}
	serve := func() error { return h.http.Serve(ln) }
	if t := h.cfg.HTTP.TLS; t.CertFile != "" {
		// Load now, so a bad certificate stops the start with its reason.
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return fmt.Errorf("hub: http.tls: %w", err)
		}
		h.http.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
		serve = func() error { return h.http.ServeTLS(ln, "", "") }
	}
	h.group.Go(func() error {
		if err := serve(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			h.log.Error("http server", "err", err)
		}
		return nil
	})
	return nil
}

// admin guards the API: the bearer admin token acts as an operator; a
// console session cookie acts with its user's role, and sends its CSRF
// token in X-CSRF-Token on anything but GET. Without an admin token
// (config validation allows that on a loopback listener only) a request
// without either is an operator. Reads need a viewer, the rest an
// operator, and every call that is not a read goes into the audit log. A
// path id that no store could hold is a 400, before a store answers it
// with a 500.
func (h *Hub) admin(next http.HandlerFunc) http.HandlerFunc {
	want := []byte("Bearer " + h.cfg.HTTP.AdminToken)
	return func(w http.ResponseWriter, r *http.Request) {
		read := r.Method == http.MethodGet || r.Method == http.MethodHead
		who, role := console.AdminUser, console.Operator
		switch s := h.console.SessionOf(r); {
		case r.Header.Get("Authorization") != "" || (s == nil && h.cfg.HTTP.AdminToken != ""):
			if h.cfg.HTTP.AdminToken != "" && subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
				writeError(w, http.StatusUnauthorized, errors.New("missing or wrong bearer token"))
				return
			}
		case s != nil:
			who, role = s.User, s.Role
			if !read && s.CanOperate() && !console.CheckCSRF(s, r) {
				writeError(w, http.StatusForbidden, errors.New("a console session needs its CSRF token in "+console.CSRFHeader))
				return
			}
		}
		if !read && role != console.Operator {
			writeError(w, http.StatusForbidden, fmt.Errorf("%s is a %s: only operators may %s %s", who, role, r.Method, r.URL.Path))
			return
		}
		for _, name := range pathIDs {
			if v := r.PathValue(name); v != "" {
				if err := validPathID(v); err != nil {
					writeError(w, http.StatusBadRequest, fmt.Errorf("path %s: %w", name, err))
					return
				}
			}
		}
		r = r.WithContext(context.WithValue(r.Context(), whoKey{}, who))
		if read {
			next(w, r)
			return
		}
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		next(rec, r)
		result := "ok"
		if rec.status >= 300 {
			result = strconv.Itoa(rec.status) + " " + http.StatusText(rec.status)
		}
		target := ""
		for _, name := range pathIDs {
			if v := r.PathValue(name); v != "" {
				target = v
			}
		}
		e := console.Entry{Who: who, Role: role, Via: "api", Action: r.Method + " " + r.URL.Path, Target: target, Result: result}
		if err := h.audit.Record(context.WithoutCancel(r.Context()), e); err != nil {
			h.log.Error("audit entry not stored", "action", e.Action, "err", err)
		}
	}
}

type whoKey struct{}

// whoOf is who is calling an API endpoint behind admin.
func whoOf(r *http.Request) string {
	if s, ok := r.Context().Value(whoKey{}).(string); ok {
		return s
	}
	return console.AdminUser
}

// statusRecorder remembers the status an API handler answered.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

// pathIDs are the path wildcards that name stored things.
var pathIDs = []string{"id", "name", "model"}

// validPathID accepts what device ids, model names and rollout ids are
// made of: 1 to 128 of [A-Za-z0-9_.-], not starting with a dot.
func validPathID(s string) error {
	if len(s) == 0 || len(s) > 128 {
		return fmt.Errorf("%.40q: want 1 to 128 characters", s)
	}
	for i, c := range s {
		ok := c == '_' || c == '-' || (c == '.' && i > 0) || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
		if !ok {
			return fmt.Errorf("%.40q: character %q at %d is not a letter, digit, '_', '-' or '.'", s, c, i)
		}
	}
	return nil
}

// deviceViews joins each enrolment with its last reported state.
func (h *Hub) deviceViews() []state.Device {
	reported := map[string]state.Reported{}
	for _, r := range h.devices.list() {
		reported[r.Device] = r
	}
	out := h.registry.List()
	for i := range out {
		if r, ok := reported[out[i].ID]; ok {
			out[i].Reported = &r
		}
	}
	return out
}

var errBadQuery = errors.New("bad query")

// pageDevices is GET /v1/devices' page: the devices (sorted by id) whose
// labels match ?labels= (site=north,line=2), ?limit= of them (1 to 1000;
// without it, all) from ?offset=, and how many match in all.
func pageDevices(devs []state.Device, q url.Values) ([]state.Device, int, error) {
	limit, offset := len(devs), 0
	for name, p := range map[string]*int{"limit": &limit, "offset": &offset} {
		if v := q.Get(name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 || (name == "limit" && (n < 1 || n > 1000)) {
				return nil, 0, fmt.Errorf("%w: %s=%q: want a number (limit 1 to 1000, offset 0 or more)", errBadQuery, name, v)
			}
			*p = n
		}
	}
	if sel := q.Get("labels"); sel != "" {
		want, err := console.ParseSelector(sel)
		if err != nil {
			return nil, 0, fmt.Errorf("%w: labels: %w", errBadQuery, err)
		}
		kept := devs[:0]
		for _, d := range devs {
			match := true
			for k, v := range want {
				match = match && d.Labels[k] == v
			}
			if match {
				kept = append(kept, d)
			}
		}
		devs = kept
	}
	total := len(devs)
	if offset >= total {
		return []state.Device{}, total, nil
	}
	return devs[offset:min(total, offset+limit)], total, nil
}

// deviceDetail is GET /v1/devices/{id}: ?limit= (1 to 1000, default 50)
// timeline entries from ?offset=, newest first.
func (h *Hub) deviceDetail(ctx context.Context, id string, q url.Values) (*state.DeviceDetail, error) {
	limit, offset := 50, 0
	for name, p := range map[string]*int{"limit": &limit, "offset": &offset} {
		if v := q.Get(name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 || (name == "limit" && (n < 1 || n > 1000)) {
				return nil, fmt.Errorf("%w: %s=%q: want a number (limit 1 to 1000, offset 0 or more)", errBadQuery, name, v)
			}
			*p = n
		}
	}
	var dev *state.Device
	for _, d := range h.deviceViews() {
		if d.ID == id {
			dev = &d
			break
		}
	}
	if dev == nil {
		return nil, fmt.Errorf("%w: %s", registry.ErrUnknownDevice, id)
	}
	out := &state.DeviceDetail{Device: *dev, Timeline: []state.TimelineEntry{}}
	if h.timeline != nil {
		entries, total, err := h.timeline.Page(ctx, id, offset, limit)
		if err != nil {
			return nil, fmt.Errorf("timeline of %s: %w", id, err)
		}
		out.TimelineTotal = total
		for _, e := range entries {
			out.Timeline = append(out.Timeline, state.TimelineEntry{At: e.At, Kind: e.Kind, Detail: e.Detail,
				Model: e.Model, Phase: e.Phase, Reason: e.Reason, Rollout: e.Rollout})
		}
	}
	return out, nil
}

// Rollouts is the rollout controller.
func (h *Hub) Rollouts() *rollout.Controller { return h.rollouts }

// Devices are the enrolments joined with their last reports.
func (h *Hub) Devices() []state.Device { return h.deviceViews() }

// PushModel registers a package version and publishes it as a signed
// target, as POST /v1/models does.
func (h *Hub) PushModel(ctx context.Context, req modelstore.PushRequest) (*modelstore.Version, error) {
	v, err := h.models.Push(ctx, req.Manifest, req.Model)
	if err != nil {
		return nil, err
	}
	h.log.Info("model pushed", "model", v.Name, "version", v.Version, "parent", v.Parent)
	if _, err := h.updates.PublishModel(req.Manifest, req.Model); err != nil {
		return nil, err
	}
	return v, nil
}

// Registry is the device registry (enrolment, revocation).
func (h *Hub) Registry() *registry.Registry { return h.registry }

func writeError(w http.ResponseWriter, status int, err error) {
	writeJSON(w, status, api.Error{Error: err.Error()})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	// A list answer is [] when empty, never null, as the OpenAPI document
	// says: a client iterates it without a null check.
	if rv := reflect.ValueOf(v); rv.Kind() == reflect.Slice && rv.IsNil() {
		v = []struct{}{}
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// MQTTAddr is where devices connect.
func (h *Hub) MQTTAddr() string { return h.broker.MQTTAddr() }

// HTTPAddr is the resolved address of the REST API.
func (h *Hub) HTTPAddr() string { return h.httpLn.Addr().String() }

// Close stops every part in reverse order of start.
func (h *Hub) Close() {
	if h.http != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = h.http.Shutdown(ctx)
		cancel()
	}
	if h.httpLn != nil {
		_ = h.httpLn.Close() // a start that failed before serving left it open
	}
	if h.stop != nil {
		h.stop()
	}
	_ = h.group.Wait()
	if h.events != nil {
		h.events.close()
	}
	if h.registry != nil {
		h.registry.Close()
	}
	if h.nc != nil {
		h.nc.Close()
	}
	if h.ackNC != nil {
		h.ackNC.Close()
	}
	if h.kafka != nil {
		h.kafka.Close()
	}
	if h.broker != nil {
		h.broker.Close()
	}
}

// NATSURL is the embedded broker's NATS address (internal credentials
// from Registry().Internal()).
func (h *Hub) NATSURL() string { return h.broker.NATSURL() }
