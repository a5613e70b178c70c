package hub

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outpost-edge/outpost/hub/modelstore"
	"github.com/outpost-edge/outpost/hub/rollout"
	"github.com/outpost-edge/outpost/hub/trainer"
)

// trainerRegistry lets the trainer read champions from the model registry
// and register what it trains, signed like any pushed version.
type trainerRegistry struct{ h *Hub }

var (
	_ trainer.Registry = trainerRegistry{}
	_ trainer.Releaser = trainerRegistry{}
)

func (r trainerRegistry) summary(ctx context.Context, model string) (modelstore.Summary, bool, error) {
	list, err := r.h.models.List(ctx)
	if err != nil {
		return modelstore.Summary{}, false, err
	}
	for _, s := range list {
		if s.Name == model {
			return s, true, nil
		}
	}
	return modelstore.Summary{}, false, nil
}

func (r trainerRegistry) Production(ctx context.Context, model string) ([]byte, []byte, bool, error) {
	s, ok, err := r.summary(ctx, model)
	if err != nil || !ok || s.Production == 0 {
		return nil, nil, false, err
	}
	mj, data, err := r.h.models.Package(ctx, model, s.Production)
	return mj, data, err == nil, err
}

func (r trainerRegistry) Latest(ctx context.Context, model string) (int64, error) {
	s, _, err := r.summary(ctx, model)
	return s.Latest, err
}

func (r trainerRegistry) Register(ctx context.Context, manifestJSON, model []byte) (int64, error) {
	v, err := r.h.PushModel(ctx, modelstore.PushRequest{Manifest: manifestJSON, Model: model})
	if err != nil {
		return 0, err
	}
	return v.Version, nil
}

// Canary rolls a release out to one device; a fleet manager takes it
// further with outpostctl rollout (or lets the next release supersede it).
func (r trainerRegistry) Canary(ctx context.Context, model string, version int64, selector map[string]string) (string, error) {
	ro, err := r.h.rollouts.Start(ctx, rollout.Spec{Model: model, Version: version, Selector: selector,
		Waves: []rollout.Wave{{Devices: 1}}, Bake: rollout.Duration(time.Minute)})
	if err != nil {
		return "", err
	}
	return ro.ID, nil
}

// runTrainer keeps the trainer running while this hub holds the lease,
// with cloud teams' labels from Kafka when a model joins labels.
func (h *Hub) runTrainer(ctx context.Context, stream string) {
	if h.trainer.JoinsLabels() {
		go func() {
			topic := h.cfg.Kafka.TopicPrefix + "labels"
			// One group per cluster (or standalone hub): its lease holder reads.
			name := h.cfg.Broker.Cluster.Name
			if name == "" {
				name = h.cfg.Broker.ServerName
			}
			group := "outpost-trainer-" + name
			for ctx.Err() == nil {
				if err := h.trainer.ConsumeLabels(ctx, h.kafka.Opts, topic, group); err != nil && ctx.Err() == nil {
					h.log.Warn("labels consumer failed; retrying", "err", err)
					select {
					case <-ctx.Done():
					case <-time.After(time.Second):
					}
				}
			}
		}()
	}
	for ctx.Err() == nil {
		if err := h.trainer.Run(ctx, h.js, stream); err != nil && ctx.Err() == nil {
			h.log.Warn("trainer failed; retrying", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
}

func (h *Hub) trainRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/train", h.admin(func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, h.trainer.Status())
	}))
	mux.HandleFunc("GET /v1/train/{model}/history", h.admin(func(w http.ResponseWriter, r *http.Request) {
		ev, ok := h.trainer.History(r.PathValue("model"))
		if !ok {
			writeError(w, http.StatusNotFound, trainer.ErrUnknownModel)
			return
		}
		writeJSON(w, http.StatusOK, ev)
	}))
	mux.HandleFunc("POST /v1/train/{model}/run", h.admin(func(w http.ResponseWriter, r *http.Request) {
		err := h.trainer.RunNow(r.PathValue("model"))
		switch {
		case errors.Is(err, trainer.ErrUnknownModel):
			writeError(w, http.StatusNotFound, err)
		case err != nil:
			writeError(w, http.StatusConflict, err)
		default:
			w.WriteHeader(http.StatusAccepted)
		}
	}))
}

// HubDevice is the device id of records the hub itself writes to the
// device topics (the trainer's events): outside any device's namespace,
// since enrolment refuses ids starting with "_".
const HubDevice = "_hub"

// kafkaSink writes the trainer's events to the events topic in the device
// record format, so consumers of outpost.events read them like any other:
// device "_hub", seq the event's time in nanoseconds (unique and rising),
// data {"kind": "trainer_drift"|"trainer_release"|..., "model", ...}.
type kafkaSink struct {
	h  *Hub
	mu sync.Mutex
	cl *kgo.Client
}

func (k *kafkaSink) client() (*kgo.Client, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.cl == nil {
		cl, err := kgo.NewClient(append(append([]kgo.Opt(nil), k.h.kafka.Opts...), kgo.ProducerLinger(50*time.Millisecond))...)
		if err != nil {
			return nil, err
		}
		k.cl = cl
	}
	return k.cl, nil
}

func (k *kafkaSink) Emit(ctx context.Context, model string, e trainer.Event) {
	cl, err := k.client()
	if err != nil {
		k.h.log.Warn("trainer event not written to Kafka", "err", err)
		return
	}
	seq := e.At.UnixNano()
	data := map[string]any{"kind": "trainer_" + e.Kind, "model": model, "event": e}
	value, _ := json.Marshal(map[string]any{"device": HubDevice, "stream": "events", "seq": seq, "event_time": e.At.UTC().Format(time.RFC3339Nano), "data": data})
	rec := &kgo.Record{
		Topic: k.h.cfg.Kafka.TopicPrefix + "events", Key: []byte(HubDevice), Value: value,
		Headers: []kgo.RecordHeader{
			{Key: "ce_specversion", Value: []byte("1.0")},
			{Key: "ce_id", Value: []byte(HubDevice + ":" + strconv.FormatInt(seq, 10))},
			{Key: "ce_source", Value: []byte("/outpost/hub/trainer")},
			{Key: "ce_type", Value: []byte("dev.outpost.trainer." + e.Kind + ".v1")},
			{Key: "ce_time", Value: []byte(e.At.UTC().Format(time.RFC3339Nano))},
			{Key: "content-type", Value: []byte("application/json")},
		},
	}
	cl.Produce(context.WithoutCancel(ctx), rec, func(_ *kgo.Record, err error) {
		if err != nil {
			k.h.log.Warn("trainer event not written to Kafka", "kind", e.Kind, "model", model, "err", err)
		}
	})
}

func (k *kafkaSink) close() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.cl != nil {
		k.cl.Flush(context.Background())
		k.cl.Close()
	}
}
