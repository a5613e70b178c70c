package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"github.com/outpost-edge/outpost/agent/outbox"
	"github.com/outpost-edge/outpost/agent/pipeline"
	"github.com/outpost-edge/outpost/agent/uplink"
)

// MetricsConfig is the agent's metrics and health endpoint.
type MetricsConfig struct {
	Listen string `yaml:"listen" usage:"host:port of /metrics and /healthz (empty: off)"`
}

// observed is what the endpoint reports on.
type observed struct {
	ob        *outbox.Outbox
	up        *uplink.Client
	pipelines []*pipeline.Pipeline
	names     []string
	latency   *prometheus.HistogramVec
}

func newObserved(ob *outbox.Outbox, up *uplink.Client) *observed {
	return &observed{ob: ob, up: up, latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "outpost_agent_inference_seconds", Help: "Duration of one model call (a micro-batch of windows).",
		Buckets: prometheus.ExponentialBuckets(25e-6, 2, 16),
	}, []string{"pipeline"})}
}

// add registers a pipeline and hooks its inference timing.
func (a *observed) add(name string, p *pipeline.Pipeline) {
	a.pipelines, a.names = append(a.pipelines, p), append(a.names, name)
	h := a.latency.WithLabelValues(name)
	p.Stats.InferLatency = func(d time.Duration) { h.Observe(d.Seconds()) }
}

func (a *observed) registry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	perPipeline := func(name, help string, counter bool, read func(*pipeline.Pipeline) float64) {
		desc := prometheus.NewDesc("outpost_agent_"+name, help, []string{"pipeline"}, nil)
		typ := prometheus.GaugeValue
		if counter {
			typ = prometheus.CounterValue
		}
		reg.MustRegister(collectorFunc{[]*prometheus.Desc{desc}, func(ch chan<- prometheus.Metric) {
			for i, p := range a.pipelines {
				ch <- prometheus.MustNewConstMetric(desc, typ, read(p), a.names[i])
			}
		}})
	}
	perPipeline("events_total", "Readings accepted into windows.", true, func(p *pipeline.Pipeline) float64 { return float64(p.Stats.Events.Load()) })
	perPipeline("rejected_total", "Input lines rejected to the dead stream.", true, func(p *pipeline.Pipeline) float64 { return float64(p.Stats.Rejected.Load()) })
	perPipeline("late_total", "Events past allowed lateness, sent to the late stream.", true, func(p *pipeline.Pipeline) float64 { return float64(p.Stats.Late.Load()) })
	perPipeline("windows_emitted_total", "Window results written to the outbox.", true, func(p *pipeline.Pipeline) float64 { return float64(p.Stats.Windows.Load()) })
	perPipeline("outbox_write_errors_total", "Outbox commits that failed (retried; input paused meanwhile).", true, func(p *pipeline.Pipeline) float64 { return float64(p.Stats.WriteErrors.Load()) })
	perPipeline("inferences_total", "Window results scored by the pipeline's model.", true, func(p *pipeline.Pipeline) float64 { return float64(p.Stats.Inferences.Load()) })
	perPipeline("inference_errors_total", "Windows the model could not score.", true, func(p *pipeline.Pipeline) float64 { return float64(p.Stats.InferErrors.Load()) })
	perPipeline("alerts_total", "Windows the model flagged (actions fired).", true, func(p *pipeline.Pipeline) float64 { return float64(p.Stats.Alerts.Load()) })
	perPipeline("drift_checks_total", "Comparisons of feature distributions with the reference.", true, func(p *pipeline.Pipeline) float64 { return float64(p.Stats.DriftChecks.Load()) })
	perPipeline("drift_detected_total", "Comparisons that found a feature drifted.", true, func(p *pipeline.Pipeline) float64 { return float64(p.Stats.DriftDetected.Load()) })
	perPipeline("short_windows_total", "Windows not scored: fewer raw samples than the model's input needs (its short policy is skip).", true, func(p *pipeline.Pipeline) float64 { return float64(p.Stats.Short.Load()) })
	perPipeline("raw_samples_dropped_total", "Raw samples past a window's window.max_samples, not kept for sequence and spectrum inputs.", true, func(p *pipeline.Pipeline) float64 { return float64(p.Stats.RawDropped.Load()) })
	reg.MustRegister(a.latency)
	perPipeline("watermark_lag_seconds", "How far the event-time watermark trails processing time.", false,
		func(p *pipeline.Pipeline) float64 { return time.Duration(p.Stats.WatermarkLag.Load()).Seconds() })
	depth := prometheus.NewDesc("outpost_agent_outbox_records", "Records in the outbox not yet acknowledged by the hub.", nil, nil)
	dbytes := prometheus.NewDesc("outpost_agent_outbox_bytes", "Bytes of record data in the outbox.", nil, nil)
	reg.MustRegister(collectorFunc{[]*prometheus.Desc{depth, dbytes}, func(ch chan<- prometheus.Metric) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if n, b, err := a.ob.Depth(ctx); err == nil {
			ch <- prometheus.MustNewConstMetric(depth, prometheus.GaugeValue, float64(n))
			ch <- prometheus.MustNewConstMetric(dbytes, prometheus.GaugeValue, float64(b))
		}
	}})
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "outpost_agent_outbox_evicted_records_total",
		Help: "Records evicted by the outbox byte budget."}, func() float64 { return float64(a.ob.Stats.EvictedRecords.Load()) }))
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "outpost_agent_outbox_evicted_bytes_total",
		Help: "Bytes evicted by the outbox byte budget."}, func() float64 { return float64(a.ob.Stats.EvictedBytes.Load()) }))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "outpost_agent_uplink_connected",
		Help: "1 while the MQTT connection to the hub is up."}, func() float64 {
		if a.up.Connected() {
			return 1
		}
		return 0
	}))
	return reg
}

// collectorFunc adapts a function to prometheus.Collector.
type collectorFunc struct {
	descs   []*prometheus.Desc
	collect func(chan<- prometheus.Metric)
}

func (c collectorFunc) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

func (c collectorFunc) Collect(ch chan<- prometheus.Metric) { c.collect(ch) }

// health is the /healthz answer: degraded while the hub is unreachable.
func (a *observed) health(ctx context.Context) (int, map[string]any) {
	status, code := "ok", http.StatusOK
	if !a.up.Connected() {
		status, code = "degraded", http.StatusServiceUnavailable
	}
	out := map[string]any{"status": status, "uplink_connected": a.up.Connected()}
	if n, b, err := a.ob.Depth(ctx); err == nil {
		out["outbox_records"], out["outbox_bytes"] = n, b
	}
	pipes := map[string]any{}
	for i, p := range a.pipelines {
		pipes[a.names[i]] = map[string]any{"events": p.Stats.Events.Load(), "rejected": p.Stats.Rejected.Load(),
			"late": p.Stats.Late.Load(), "windows": p.Stats.Windows.Load(),
			"short_windows": p.Stats.Short.Load(), "raw_samples_dropped": p.Stats.RawDropped.Load(),
			"watermark_lag_seconds": time.Duration(p.Stats.WatermarkLag.Load()).Seconds()}
	}
	out["pipelines"] = pipes
	return code, out
}

// serve runs the endpoint until ctx ends.
func (a *observed) serve(ctx context.Context, listen string, log *slog.Logger) error {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.registry(), promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		code, body := a.health(r.Context())
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(body)
	})
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("agent: metrics listen: %w", err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	ctx, cancel := context.WithCancel(ctx)
	var g errgroup.Group
	g.Go(func() error {
		<-ctx.Done()
		// Before the database closes: a scrape reads the outbox.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			srv.Close()
		}
		return nil
	})
	log.Info("metrics and health endpoint", "addr", ln.Addr().String())
	err = srv.Serve(ln)
	cancel()
	g.Wait()
	if !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("agent: metrics: %w", err)
	}
	return nil
}
