package hub

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outpost-edge/outpost/hub/bridge"
	"github.com/outpost-edge/outpost/hub/journal"
	"github.com/outpost-edge/outpost/hub/modelstore"
	"github.com/outpost-edge/outpost/hub/rollout"
	"github.com/outpost-edge/outpost/hub/trainer"
	"github.com/outpost-edge/outpost/sync/envelope"
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

// Training history journal: every trainer event, a subject per model,
// replicated like the hub's other stores, so that the history outlives a
// restart and a lease moving to another hub.
const (
	TrainingStream        = "OUTPOST_TRAINING"
	TrainingSubjectPrefix = "outpost_hub.training."
	// trainingPerModel bounds one model's history (the oldest go first).
	trainingPerModel = 10000
	trainingMaxAge   = 365 * 24 * time.Hour
)

// trainingStore keeps the trainer's history in the journal.
type trainingStore struct{ j *journal.Journal }

func openTrainingStore(ctx context.Context, js jetstream.JetStream, replicas int) (trainingStore, error) {
	j, err := journal.Open(ctx, js, journal.Config{Stream: TrainingStream, Prefix: TrainingSubjectPrefix,
		Replicas: replicas, MaxAge: trainingMaxAge, PerKey: trainingPerModel})
	return trainingStore{j}, err
}

func (s trainingStore) AppendHistory(ctx context.Context, model string, e trainer.Event) error {
	return s.j.Append(ctx, model, e)
}

func (s trainingStore) ReadHistory(ctx context.Context, model string) ([]trainer.Event, error) {
	evs, _, err := journal.Read[trainer.Event](ctx, s.j, model)
	return evs, err
}

func (h *Hub) trainRoutes(mux *routeTable) {
	mux.HandleFunc("GET /v1/train", h.admin(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, h.trainStatus(r.Context()))
	}))
	mux.HandleFunc("GET /v1/train/{model}/history", h.admin(func(w http.ResponseWriter, r *http.Request) {
		ev, ok, err := h.trainer.History(r.Context(), r.PathValue("model"))
		switch {
		case !ok:
			writeError(w, http.StatusNotFound, trainer.ErrUnknownModel)
		case err != nil:
			unavailable(w, err)
		default:
			if ev == nil {
				ev = []trainer.Event{}
			}
			writeJSON(w, http.StatusOK, ev)
		}
	}))
	mux.HandleFunc("POST /v1/train/{model}/run", h.admin(func(w http.ResponseWriter, r *http.Request) {
		err := h.trainer.RunNow(r.Context(), r.PathValue("model"))
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
// device topics (the trainer's and the stream's events): outside any
// device's namespace, since enrolment refuses ids starting with "_".
const HubDevice = "_hub"

// kafkaSink writes the hub's own events to the events topic with the
// bridge's encoder, in bridge.format, so consumers of outpost.events read
// them like any other record: device "_hub", seq the event's time in
// nanoseconds (unique and rising), data {"kind": ..., ...}.
type kafkaSink struct {
	h   *Hub
	mu  sync.Mutex
	cl  *kgo.Client
	enc *bridge.Encoder
}

func (k *kafkaSink) client(ctx context.Context) (*kgo.Client, *bridge.Encoder, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.enc == nil {
		enc, err := bridge.NewEncoder(ctx, k.h.cfg.Bridge, k.h.cfg.Kafka.TopicPrefix)
		if err != nil {
			return nil, nil, err
		}
		k.enc = enc
	}
	if k.cl == nil {
		cl, err := kgo.NewClient(append(append([]kgo.Opt(nil), k.h.kafka.Opts...), kgo.ProducerLinger(50*time.Millisecond))...)
		if err != nil {
			return nil, nil, err
		}
		k.cl = cl
	}
	return k.cl, k.enc, nil
}

// Emit writes one trainer event.
func (k *kafkaSink) Emit(ctx context.Context, model string, e trainer.Event) {
	k.emit(ctx, "/outpost/hub/trainer", "dev.outpost.trainer."+e.Kind+".v1", e.At,
		map[string]any{"kind": "trainer_" + e.Kind, "model": model, "event": e})
}

// emit writes one event of the hub's to outpost.events. Failures are
// logged: the event is also in the hub's log and metrics.
func (k *kafkaSink) emit(ctx context.Context, ceSource, ceType string, at time.Time, data any) {
	cl, enc, err := k.client(ctx)
	if err != nil {
		k.h.log.Warn("hub event not written to Kafka", "type", ceType, "err", err)
		return
	}
	raw, err := json.Marshal(data)
	if err != nil {
		k.h.log.Warn("hub event not written to Kafka", "type", ceType, "err", err)
		return
	}
	src := bridge.NewSource(HubDevice, "", "events").WithCloudEvent(ceSource, ceType)
	rec, err := enc.Record(k.h.cfg.Kafka.TopicPrefix+"events", src, envelope.Record{Seq: uint64(at.UnixNano()), EventTime: at, Data: raw})
	if err != nil {
		k.h.log.Warn("hub event not written to Kafka", "type", ceType, "err", err)
		return
	}
	cl.Produce(context.WithoutCancel(ctx), rec, func(_ *kgo.Record, err error) {
		if err != nil {
			k.h.log.Warn("hub event not written to Kafka", "type", ceType, "err", err)
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

// trainStatus is the trainer's status with the registry's word on the
// stages: production and canary are what the model registry says now
// (which follows the rollouts), so `train status` and `model list` agree.
func (h *Hub) trainStatus(ctx context.Context) []trainer.Status {
	st := h.trainer.Status()
	if len(st) == 0 {
		return st
	}
	list, err := h.models.List(ctx)
	if err != nil {
		h.log.Warn("train status without the registry's stages", "err", err)
		return st
	}
	for i := range st {
		for _, m := range list {
			if m.Name == st[i].Model {
				st[i].Production, st[i].Canary = m.Production, m.Canary
			}
		}
	}
	return st
}
