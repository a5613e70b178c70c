// Package agent is the outpost-agent runtime on the device.
package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/outpost-edge/outpost/agent/outbox"
	"github.com/outpost-edge/outpost/agent/pipeline"
	"github.com/outpost-edge/outpost/agent/store"
	"github.com/outpost-edge/outpost/agent/uplink"
	"github.com/outpost-edge/outpost/deploy/version"
	"github.com/outpost-edge/outpost/models/ort"
	"github.com/outpost-edge/outpost/sync/state"
	"github.com/outpost-edge/outpost/sync/topics"
)

// Run opens the agent database, connects to the hub and keeps the device's
// reported state fresh until ctx is cancelled.
func Run(ctx context.Context, cfg *Config, log *slog.Logger) error {
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return fmt.Errorf("agent: data dir: %w", err)
	}
	db, err := store.Open(ctx, filepath.Join(cfg.DataDir, "agent.db"), cfg.Storage.Synchronous)
	if err != nil {
		return err
	}
	defer db.Close()
	boot, err := db.NextBoot(ctx)
	if err != nil {
		return err
	}
	ob, err := outbox.New(ctx, db.DB(), cfg.Storage.OutboxMaxBytes)
	if err != nil {
		return err
	}
	log = log.With("device", cfg.Device.ID)
	rep := state.Reported{
		Device:       cfg.Device.ID,
		AgentVersion: version.Version,
		Arch:         runtime.GOARCH,
		Boot:         boot,
		Status:       state.StatusRunning,
		StartedAt:    time.Now().UTC(),
	}
	report := func(ctx context.Context, c *uplink.Client, status string) {
		r := rep
		r.Status = status
		r.ReportedAt = time.Now().UTC()
		payload, _ := json.Marshal(r) // plain struct, cannot fail
		if err := c.Publish(ctx, topics.Reported(cfg.Device.ID), 1, true, payload); err != nil {
			log.Warn("report state", "err", err)
		}
	}
	var sender *uplink.Sender
	up, err := uplink.New(cfg.Hub, uplink.Options{
		ClientID: cfg.Device.ID,
		OnConnect: func(c *uplink.Client) {
			sender.OnConnect()
			report(ctx, c, state.StatusRunning)
		},
		Subscriptions: map[string]uplink.Subscription{
			topics.Desired(cfg.Device.ID): {QoS: 1, Handle: func(_ string, payload []byte) {
				log.Info("desired state received", "bytes", len(payload))
			}},
			topics.Ack(cfg.Device.ID): {QoS: 0, Handle: func(t string, p []byte) { sender.OnAck(t, p) }},
		},
	}, log)
	if err != nil {
		return err
	}
	sender = uplink.NewSender(cfg.Uplink, cfg.Device.ID, ob, up, log)
	sendDone := make(chan error, 1)
	go func() { sendDone <- sender.Run(ctx) }()
	for _, pc := range cfg.Pipelines {
		if pc.Model != nil && pc.Model.UsesORT() {
			lib, err := cfg.Runtime.ORTLibrary()
			if err != nil {
				return err
			}
			if err := ort.Init(lib); err != nil {
				return err
			}
			log.Info("onnx runtime loaded", "library", lib, "version", ort.Version())
			break
		}
	}
	pipeDone := make(chan error, len(cfg.Pipelines))
	obs := newObserved(ob, up)
	for _, pc := range cfg.Pipelines {
		p, err := pipeline.New(ctx, pc, ob, log)
		if err != nil {
			return err
		}
		obs.add(pc.Name, p)
		log.Info("pipeline starting", "pipeline", pc.Name, "source", pc.Source.Type, "window", pc.Window.Kind)
		go func() { pipeDone <- p.Run(ctx) }()
	}
	log.Info("agent starting", "boot", boot, "hub", cfg.Hub.URL)
	if cfg.Metrics.Listen != "" {
		go func() {
			if err := obs.serve(ctx, cfg.Metrics.Listen, log); err != nil {
				log.Error("metrics endpoint", "err", err)
			}
		}()
	}
	// Connect keeps retrying in the background; the agent works offline.
	go func() {
		if err := up.Connect(ctx); err != nil && ctx.Err() == nil {
			log.Warn("uplink", "err", err)
		}
	}()
	defer up.Close()

	tick := time.NewTicker(cfg.Report.Interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			if up.Connected() {
				stopCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				report(stopCtx, up, state.StatusStopping)
				cancel()
			}
			return nil
		case err := <-sendDone:
			return err
		case err := <-pipeDone:
			if err != nil {
				return err
			}
		case <-tick.C:
			if up.Connected() {
				report(ctx, up, state.StatusRunning)
			}
			if err := appendTelemetry(ctx, ob, rep.StartedAt); err != nil {
				log.Warn("telemetry", "err", err)
			}
		}
	}
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
