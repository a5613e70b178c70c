// Package agent is the outpost-agent runtime on the device.
package agent

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/outpost-edge/outpost/agent/devcert"
	"github.com/outpost-edge/outpost/agent/outbox"
	"github.com/outpost-edge/outpost/agent/pipeline"
	"github.com/outpost-edge/outpost/agent/store"
	"github.com/outpost-edge/outpost/agent/update"
	"github.com/outpost-edge/outpost/agent/uplink"
	"github.com/outpost-edge/outpost/deploy/version"
	"github.com/outpost-edge/outpost/firmware/enrol"
	"github.com/outpost-edge/outpost/firmware/selfupdate"
	"github.com/outpost-edge/outpost/models/ort"
	"github.com/outpost-edge/outpost/sync/state"
	"github.com/outpost-edge/outpost/sync/topics"
	"github.com/outpost-edge/outpost/sync/tuf"
)

// Run opens the agent database, connects to the hub and keeps the device's
// reported state fresh until ctx is cancelled. With self-update on, it
// first hands the process to the agent build that should run, and after a
// switch or rollback of builds it starts again through the launcher.
func Run(ctx context.Context, cfg *Config, log *slog.Logger) error {
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return fmt.Errorf("agent: data dir: %w", err)
	}
	var slots *selfupdate.Slots
	build := version.BuildNumber()
	if cfg.Updates.Enabled() && cfg.Updates.SelfUpdate {
		slots = &selfupdate.Slots{Dir: filepath.Join(cfg.DataDir, "agent"), Factory: build, Log: log}
		if err := slots.Start(); err != nil {
			return fmt.Errorf("agent: %w", err)
		}
		if os.Getenv(selfupdate.EnvLaunched) != "" {
			var err error
			if build, _, err = slots.Running(); err != nil {
				return fmt.Errorf("agent: %w", err)
			}
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var relaunch atomic.Bool
	err := run(ctx, cfg, log, slots, build, func() { relaunch.Store(true); cancel() })
	if relaunch.Load() && (err == nil || errors.Is(err, context.Canceled)) {
		log.Info("starting again through the launcher for another agent build")
		return selfupdate.Relaunch()
	}
	return err
}

func run(ctx context.Context, cfg *Config, log *slog.Logger, slots *selfupdate.Slots, build int64, restart func()) error {
	var certs *devcert.Renewer
	if cfg.Enrolment.URL != "" {
		var err error
		if certs, err = enrolDevice(ctx, cfg, log); err != nil {
			return err
		}
	}
	db, err := store.Open(ctx, filepath.Join(cfg.DataDir, "agent.db"), cfg.Storage.Synchronous)
	if err != nil {
		return err
	}
	// Closed last: a.run returns only after everything using it stopped.
	defer db.Close()
	boot, err := db.NextBoot(ctx)
	if err != nil {
		return err
	}
	ob, err := outbox.New(ctx, db.DB(), cfg.Storage.OutboxMaxBytes)
	if err != nil {
		return err
	}
	if slots != nil {
		again, err := update.RecoverAgent(ctx, ob, *slots, build, log)
		if err != nil {
			return err
		}
		if again {
			restart()
			return nil
		}
	}
	a, err := newAgent(cfg, ob, boot, certs, log.With("device", cfg.Device.ID))
	if err != nil {
		return err
	}
	if err := a.setup(ctx, slots, build, restart); err != nil {
		return err
	}
	return a.run(ctx)
}

// agent is one run of the agent, built before anything starts. Sinks (the
// outbox, the uplink and its sender) start before the sources (the
// pipelines) and stop only after every pipeline's last commit.
type agent struct {
	cfg       *Config
	log       *slog.Logger
	ob        *outbox.Outbox
	boot      int64
	rep       state.Reported
	up        *uplink.Client
	sender    *uplink.Sender
	pipes     []*pipeline.Pipeline
	obs       *observed
	mgr       *update.Manager  // nil with updates off
	certs     *devcert.Renewer // nil without an enrolled certificate
	reportNow chan struct{}    // report soon: a (re)connect, update progress
	rates     healthRates      // the counters of an earlier report, for rates
}

// newAgent builds the uplink and its sender; nothing runs yet.
func newAgent(cfg *Config, ob *outbox.Outbox, boot int64, certs *devcert.Renewer, log *slog.Logger) (*agent, error) {
	a := &agent{cfg: cfg, log: log, ob: ob, boot: boot, certs: certs, reportNow: make(chan struct{}, 1), rep: state.Reported{
		Device:       cfg.Device.ID,
		AgentVersion: version.Version,
		Arch:         runtime.GOARCH,
		Boot:         boot,
		Status:       state.StatusRunning,
		StartedAt:    time.Now().UTC(),
	}}
	// Half an interval at least: the rates of a report that follows
	// another closely are still taken over a span worth a rate.
	a.rates = healthRates{at: time.Now(), minSpan: cfg.Report.Interval / 2}
	var getCert func(*tls.CertificateRequestInfo) (*tls.Certificate, error)
	if certs != nil {
		getCert = certs.GetClientCertificate
	}
	up, err := uplink.New(cfg.Hub, uplink.Options{
		ClientID:             cfg.Device.ID,
		GetClientCertificate: getCert,
		OnConnect: func(*uplink.Client) {
			a.sender.OnConnect()
			a.askReport()
		},
		Subscriptions: map[string]uplink.Subscription{
			// QoS 0: the hub sends desired state again to a device whose
			// report shows it behind, and NATS delivers at QoS 0 anyway.
			topics.Desired(cfg.Device.ID): {QoS: 0, Handle: func(_ string, payload []byte) { a.desired(payload) }},
			topics.Ack(cfg.Device.ID):     {QoS: 0, Handle: func(t string, p []byte) { a.sender.OnAck(t, p) }},
		},
	}, log)
	if err != nil {
		return nil, err
	}
	a.up = up
	a.sender = uplink.NewSender(cfg.Uplink, cfg.Device.ID, ob, up, log)
	a.obs = newObserved(ob, up)
	return a, nil
}

// setup loads ONNX Runtime, recovers interrupted model updates and builds
// the pipelines and the update manager.
func (a *agent) setup(ctx context.Context, slots *selfupdate.Slots, build int64, restart func()) error {
	cfg := a.cfg
	a.rep.Build = build
	for _, pc := range cfg.Pipelines {
		if pc.Model != nil && pc.Model.UsesORT() {
			lib, err := cfg.Runtime.ORTLibrary()
			if err != nil {
				return err
			}
			if err := ort.Init(lib); err != nil {
				return err
			}
			a.log.Info("onnx runtime loaded", "library", lib, "version", ort.Version())
			break
		}
	}
	if cfg.Updates.Enabled() {
		// Before any pipeline loads a model: finish an interrupted switch,
		// roll back a crash loop.
		var dirs []string
		for _, pc := range cfg.Pipelines {
			if pc.Model != nil && !slices.Contains(dirs, pc.Model.Dir) {
				dirs = append(dirs, pc.Model.Dir)
			}
		}
		if err := update.Recover(ctx, cfg.Updates, a.ob, dirs, a.boot, a.log); err != nil {
			return err
		}
	}
	for _, pc := range cfg.Pipelines {
		p, err := pipeline.New(ctx, pc, a.ob, a.log)
		if err != nil {
			return err
		}
		a.pipes = append(a.pipes, p)
		a.obs.add(pc.Name, p)
	}
	if cfg.Updates.Enabled() {
		self := update.Options{Self: slots, SelfBuild: build, Args: os.Args[1:], Connected: a.up.Connected, Restart: restart}
		mgr, err := newUpdates(ctx, cfg, a.ob, a.boot, a.pipes, a.askReport, self, a.log)
		if err != nil {
			return err
		}
		a.mgr = mgr
	}
	return nil
}

// run starts the sinks, then the sources. When ctx ends, or any part
// fails, it stops the sources, waits for every pipeline's final commit,
// reports the stop, and only then stops the sinks.
func (a *agent) run(ctx context.Context) error {
	sinkBase, stopSinks := context.WithCancel(context.WithoutCancel(ctx))
	defer stopSinks()
	sinks, sinkCtx := errgroup.WithContext(sinkBase)
	sinks.Go(func() error { return a.sender.Run(sinkCtx) })
	if a.certs != nil {
		sinks.Go(func() error { return a.certs.Run(sinkCtx) })
	}
	sinks.Go(func() error {
		// Connect keeps retrying in the background; the agent works offline.
		if err := a.up.Connect(sinkCtx); err != nil && sinkCtx.Err() == nil {
			a.log.Warn("uplink", "err", err)
		}
		return nil
	})

	srcBase, stopSources := context.WithCancel(ctx)
	defer stopSources()
	unhook := context.AfterFunc(sinkCtx, stopSources) // a failed sink stops the sources
	defer unhook()
	sources, srcCtx := errgroup.WithContext(srcBase)
	for i, p := range a.pipes {
		pc := a.cfg.Pipelines[i]
		a.log.Info("pipeline starting", "pipeline", pc.Name, "source", pc.Source.Type, "window", pc.Window.Kind)
		sources.Go(func() error { return p.Run(srcCtx) })
	}
	if a.mgr != nil {
		sources.Go(func() error {
			if err := a.mgr.Run(srcCtx); err != nil {
				a.log.Error("updates stopped", "err", err)
			}
			return nil
		})
		if bad := os.Getenv(crashModelEnv); bad != "" {
			sources.Go(func() error { crashOnModel(srcCtx, a.mgr, bad, a.log); return nil })
		}
	}
	if a.cfg.Metrics.Listen != "" {
		sources.Go(func() error {
			if err := a.obs.serve(srcCtx, a.cfg.Metrics.Listen, a.log); err != nil {
				a.log.Error("metrics endpoint", "err", err)
			}
			return nil
		})
	}
	a.log.Info("agent starting", "boot", a.boot, "hub", a.cfg.Hub.URL)
	sources.Go(func() error { return a.reportLoop(srcCtx) })
	err := sources.Wait()

	// Every pipeline's final flush is in the outbox: the sinks may go.
	if a.up.Connected() {
		stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		a.report(stopCtx, state.StatusStopping)
		cancel()
	}
	stopSinks()
	if serr := sinks.Wait(); err == nil {
		err = serr
	}
	a.up.Close()
	return err
}

// askReport asks the report loop for a report soon; it never blocks.
func (a *agent) askReport() {
	select {
	case a.reportNow <- struct{}{}:
	default:
	}
}

// desired hands a desired-state document to the update manager.
func (a *agent) desired(payload []byte) {
	d, err := state.DecodeDesired(payload)
	if err == nil && d.Device != a.cfg.Device.ID {
		err = fmt.Errorf("desired state names device %q", d.Device)
	}
	switch {
	case err != nil:
		a.log.Warn("ignoring desired state", "err", err)
	case a.mgr == nil:
		a.log.Warn("desired state received, but updates are off (set updates.url and updates.trusted_root)", "version", d.Version)
	default:
		a.mgr.Desire(d)
	}
}

// report publishes the reported state, retained.
func (a *agent) report(ctx context.Context, status string) {
	r := a.rep
	r.Status = status
	now := time.Now() // with its monotonic reading, for the rates
	r.ReportedAt = now.UTC()
	if a.mgr != nil {
		r.Models, r.Updates, r.DesiredVersion = a.mgr.Report()
	} else {
		r.Models = runningModels(a.pipes)
	}
	if n, b, err := a.ob.Depth(ctx); err == nil {
		r.Outbox = &state.Outbox{Records: n, Bytes: b, EvictedRecords: a.ob.Stats.EvictedRecords.Load(), EvictedBytes: a.ob.Stats.EvictedBytes.Load()}
	}
	srcs := make([]healthSource, len(a.pipes))
	for i, p := range a.pipes {
		srcs[i] = p
	}
	r.Pipelines = a.rates.pipelineHealth(now, srcs, r.Models)
	r.Uplink = &state.Uplink{Connected: a.up.Connected(), Broker: a.up.Broker(), Reconnects: a.up.Reconnects(), AckErrors: a.sender.AckErrors()}
	if at := a.sender.LastAck(); !at.IsZero() {
		at = at.UTC()
		r.Uplink.LastAckAt = &at
	}
	payload, _ := json.Marshal(r) // plain struct, cannot fail
	if err := a.up.Publish(ctx, topics.Reported(a.cfg.Device.ID), 1, true, payload); err != nil {
		a.log.Warn("report state", "err", err)
	}
}

// reportLoop keeps the reported state fresh and records telemetry until
// ctx ends.
func (a *agent) reportLoop(ctx context.Context) error {
	var lastReport time.Time
	var later <-chan time.Time
	reportIfUp := func() {
		if a.up.Connected() {
			a.report(ctx, state.StatusRunning)
			lastReport = time.Now()
		}
	}
	tick := time.NewTicker(a.cfg.Report.Interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-a.reportNow:
			// Update steps come in bursts: report at most every
			// reportGap, and always the last state.
			if wait := reportGap - time.Since(lastReport); wait > 0 {
				if later == nil {
					later = time.After(wait)
				}
				continue
			}
			reportIfUp()
		case <-later:
			later = nil
			reportIfUp()
		case <-tick.C:
			reportIfUp()
			if err := appendTelemetry(ctx, a.ob, a.rep.StartedAt); err != nil && ctx.Err() == nil {
				a.log.Warn("telemetry", "err", err)
			}
		}
	}
}

// newUpdates builds the TUF client and the update manager; run runs it.
func newUpdates(ctx context.Context, cfg *Config, ob *outbox.Outbox, boot int64, pipes []*pipeline.Pipeline, onChange func(), self update.Options, log *slog.Logger) (*update.Manager, error) {
	root, err := os.ReadFile(cfg.Updates.TrustedRoot)
	if err != nil {
		return nil, fmt.Errorf("agent: updates.trusted_root: %w", err)
	}
	hc := &http.Client{}
	tc, err := cfg.Updates.TLS.Build()
	if err != nil {
		return nil, fmt.Errorf("agent: updates.tls: %w", err)
	}
	if tc != nil {
		hc.Transport = &http.Transport{TLSClientConfig: tc, Proxy: http.ProxyFromEnvironment}
	}
	client, err := tuf.NewClientWith(root, cfg.Updates.URL, filepath.Join(cfg.DataDir, "tuf"), hc)
	if err != nil {
		return nil, err
	}
	var runners []update.Runner
	for _, p := range pipes {
		runners = append(runners, p)
	}
	o := self
	o.Store, o.Fetcher, o.Staging, o.Boot, o.Log = ob, client, filepath.Join(cfg.DataDir, "staging"), boot, log
	o.OnChange = onChange
	if point := os.Getenv(crashPointEnv); point != "" {
		o.Crash = func(p string) {
			if p == point {
				log.Warn("test crash point reached: killing the agent", "point", p)
				syscall.Kill(os.Getpid(), syscall.SIGKILL)
			}
		}
	}
	return update.New(ctx, cfg.Updates, o, runners)
}

// reportGap is the least time between two reports of update progress.
const reportGap = 250 * time.Millisecond

// crashPointEnv names an update transition at which the agent kills
// itself (SIGKILL): the power-loss tests use it; nothing else should.
const crashPointEnv = "OUTPOST_TEST_CRASHPOINT"

// crashModelEnv names a model version ("name:version") that the agent
// treats as one that crashes it: while a pipeline runs it, the agent kills
// itself. It stands in for a model that brings ONNX Runtime down, for the
// crash-loop tests; nothing else should set it.
const crashModelEnv = "OUTPOST_TEST_CRASH_MODEL"

func crashOnModel(ctx context.Context, mgr *update.Manager, bad string, log *slog.Logger) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		models, _, _ := mgr.Report()
		for _, m := range models {
			if fmt.Sprintf("%s:%d", m.Model, m.Version) == bad {
				log.Warn("test crash model running: killing the agent", "model", bad)
				syscall.Kill(os.Getpid(), syscall.SIGKILL)
			}
		}
	}
}

// runningModels is what each pipeline runs when updates are off.
func runningModels(pipes []*pipeline.Pipeline) []state.ModelStatus {
	var out []state.ModelStatus
	for _, p := range pipes {
		if m := p.Manifest(); m != nil {
			out = append(out, state.ModelStatus{Pipeline: p.Name(), Model: m.Name, Version: m.Version})
		}
	}
	return out
}

// appendTelemetry records the agent's own health as a telemetry record, so
// even an agent without pipelines shows data flowing to Kafka.
func appendTelemetry(ctx context.Context, ob *outbox.Outbox, started time.Time) error {
	records, bytes, err := ob.Depth(ctx)
	if err != nil {
		return err
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	now := time.Now().UTC()
	data, _ := json.Marshal(map[string]any{
		"kind":         "agent_health",
		"uptime_s":     now.Sub(started).Seconds(),
		"outbox_depth": records,
		"outbox_bytes": bytes,
		"heap_bytes":   ms.HeapAlloc,
		"goroutines":   runtime.NumGoroutine(),
	})
	_, err = ob.Append(ctx, []outbox.Item{{Stream: "telemetry", EventTime: now, Data: data}})
	return err
}

// enrolDevice makes sure the device is enrolled and connects with the
// credentials the hub gave it. With a certificate among them it returns
// the renewer that keeps it current; a hub whose broker verifies client
// certificates (cert_auth) then gets no password from the agent.
func enrolDevice(ctx context.Context, cfg *Config, log *slog.Logger) (*devcert.Renewer, error) {
	tc, err := cfg.Enrolment.TLS.Build()
	if err != nil {
		return nil, fmt.Errorf("agent: enrolment.tls: %w", err)
	}
	client := &http.Client{Timeout: 30 * time.Second}
	if tc != nil {
		client.Transport = &http.Transport{TLSClientConfig: tc, Proxy: http.ProxyFromEnvironment}
	}
	e, err := enrol.Ensure(ctx, log, client, cfg.DataDir, enrol.Request{
		URL: cfg.Enrolment.URL, TokenFile: cfg.Enrolment.TokenFile, Device: cfg.Device.ID,
		Arch: runtime.GOARCH, Accelerator: cfg.Device.Accelerator, AgentVersion: version.Version,
	})
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	if cfg.Device.ID != "" && cfg.Device.ID != e.Device {
		return nil, fmt.Errorf("agent: device.id is %q but the device enrolled as %q (see %s)", cfg.Device.ID, e.Device, filepath.Join(cfg.DataDir, enrol.CredentialsFile))
	}
	cfg.Device.ID, cfg.Hub.Username, cfg.Hub.Password = e.Device, e.Username, e.Password
	if e.Certificate == "" {
		return nil, nil // a hub from before device certificates
	}
	key, err := enrol.Key(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	dlog := log.With("component", "devcert", "device", e.Device)
	var last state.Renewal // Renew and Save run on the renewer's goroutine
	r := &devcert.Renewer{
		Key: key, Log: dlog,
		Renew: func(ctx context.Context) (string, error) {
			var err error
			last, err = enrol.Renew(ctx, client, cfg.Enrolment.URL, e.Device, key)
			return last.Certificate, err
		},
		Save: func(string) error { return enrol.SaveCertificate(cfg.DataDir, last) },
	}
	if err := r.Set(e.Certificate); err != nil {
		return nil, fmt.Errorf("agent: %s: %w", filepath.Join(cfg.DataDir, enrol.CredentialsFile), err)
	}
	if e.CertAuth {
		cfg.Hub.Password = "" // the certificate authenticates
	}
	dlog.Info("device certificate loaded", "not_after", r.Leaf().NotAfter, "renew_at", r.RenewAt(), "cert_auth", e.CertAuth)
	return r, nil
}
