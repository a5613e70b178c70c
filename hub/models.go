package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-edge/outpost/hub/modelstore"
	"github.com/outpost-edge/outpost/hub/updates"
	"github.com/outpost-edge/outpost/sync/tuf"
)

// maxPackage bounds one pushed package (base64 and JSON included).
const maxPackage = 256 << 20

func (h *Hub) modelRoutes(mux *routeTable) {
	// The TUF repository is public: every file in it is signed, and
	// agents verify what they fetch.
	mux.Handle("GET /tuf/", http.StripPrefix("/tuf", h.updates.Handler()))
	mux.HandleFunc("GET /v1/models", h.admin(func(w http.ResponseWriter, r *http.Request) {
		list, err := h.models.List(r.Context())
		respond(w, http.StatusOK, list, err)
	}))
	mux.HandleFunc("POST /v1/models", h.admin(func(w http.ResponseWriter, r *http.Request) {
		var req modelstore.PushRequest
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxPackage)).Decode(&req); err != nil {
			writeError(w, http.StatusBadRequest, fmt.Errorf("body: %w", err))
			return
		}
		// Signed right away, so a rollout can name it.
		v, err := h.PushModel(r.Context(), req)
		respond(w, http.StatusCreated, v, err)
	}))
	mux.HandleFunc("GET /v1/models/{name}", h.admin(func(w http.ResponseWriter, r *http.Request) {
		vs, err := h.models.Versions(r.Context(), r.PathValue("name"))
		respond(w, http.StatusOK, vs, err)
	}))
	mux.HandleFunc("POST /v1/models/{name}/versions/{version}/stage", h.admin(func(w http.ResponseWriter, r *http.Request) {
		version, err := strconv.ParseInt(r.PathValue("version"), 10, 64)
		if err != nil {
			writeError(w, http.StatusBadRequest, fmt.Errorf("version: %w", err))
			return
		}
		var req modelstore.StageRequest
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&req); err != nil {
			writeError(w, http.StatusBadRequest, fmt.Errorf("body: %w", err))
			return
		}
		v, err := h.models.Move(r.Context(), r.PathValue("name"), version, req.Stage, req.Why)
		if err == nil {
			h.log.Info("model stage changed", "model", v.Name, "version", v.Version, "stage", v.Stage, "why", req.Why)
		}
		respond(w, http.StatusOK, v, err)
	}))
}

// respond writes v, or err with the status its kind calls for.
func respond(w http.ResponseWriter, status int, v any, err error) {
	switch {
	case err == nil:
		writeJSON(w, status, v)
	case transient(err):
		unavailable(w, err)
	case errors.Is(err, modelstore.ErrNotFound):
		writeError(w, http.StatusNotFound, err)
	case errors.Is(err, modelstore.ErrConflict):
		writeError(w, http.StatusConflict, err)
	case errors.Is(err, modelstore.ErrInvalid):
		writeError(w, http.StatusUnprocessableEntity, err)
	default:
		writeError(w, http.StatusInternalServerError, err)
	}
}

// startUpdates opens the TUF repository: a standalone hub's own, signed
// at once with every registry version it lacks and kept fresh; or, in a
// cluster, this hub's copy of the shared one (the lease holder signs, see
// startPipeline).
func (h *Hub) startUpdates(ctx, runCtx context.Context) error {
	var err error
	if h.cfg.Broker.Cluster.Enabled() { // opened with the other buckets
		h.group.Go(func() error {
			h.updates.Follow(runCtx)
			return nil
		})
		return nil
	}
	if h.updates, err = updates.Open(h.cfg.Updates, h.cfg.DataDir, h.log); err != nil {
		return err
	}
	if err := h.publishRegistry(ctx); err != nil {
		return err
	}
	h.group.Go(func() error {
		h.updates.Run(runCtx)
		return nil
	})
	return nil
}

// publishRegistry signs every registry version the repository lacks
// (pushed while it was unavailable, before it existed, or, in a cluster,
// through another hub).
func (h *Hub) publishRegistry(ctx context.Context) error {
	list, err := h.models.List(ctx)
	if err != nil {
		return err
	}
	for _, m := range list {
		vs, err := h.models.Versions(ctx, m.Name)
		if err != nil {
			return err
		}
		for _, v := range vs {
			if h.updates.Has(tuf.ModelTargetName(v.Name, v.Version)) {
				continue
			}
			man, model, err := h.models.Package(ctx, v.Name, v.Version)
			if err != nil {
				return err
			}
			if _, err := h.updates.PublishModel(man, model); err != nil {
				return err
			}
		}
	}
	return nil
}

// transient reports an error JetStream gives while its replicated streams
// elect leaders (a cluster forming, or one that just lost a hub): worth a
// retry in a moment, not an operator's mistake or a hub fault.
func transient(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, nats.ErrTimeout)
}

// unavailable answers 503 with Retry-After, which outpostctl honours.
func unavailable(w http.ResponseWriter, err error) {
	w.Header().Set("Retry-After", "2")
	writeError(w, http.StatusServiceUnavailable, fmt.Errorf("the hub's stores are not ready (a cluster electing leaders?); retry: %w", err))
}
