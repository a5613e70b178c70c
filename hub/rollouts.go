package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/outpost-edge/outpost/hub/modelstore"
	"github.com/outpost-edge/outpost/hub/rollout"
	"github.com/outpost-edge/outpost/sync/tuf"
)

// rolloutRoutes are the fleet manager's rollout API.
func (h *Hub) rolloutRoutes(mux *routeTable) {
	mux.HandleFunc("POST /v1/rollouts", h.admin(func(w http.ResponseWriter, r *http.Request) {
		var spec rollout.Spec
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&spec); err != nil {
			writeError(w, http.StatusBadRequest, fmt.Errorf("body: %w", err))
			return
		}
		ro, err := h.startRollout(r.Context(), spec)
		rolloutRespond(w, http.StatusCreated, ro, err)
	}))
	mux.HandleFunc("GET /v1/rollouts", h.admin(func(w http.ResponseWriter, r *http.Request) {
		list, err := h.rollouts.List(r.Context())
		rolloutRespond(w, http.StatusOK, list, err)
	}))
	mux.HandleFunc("GET /v1/rollouts/{id}", h.admin(func(w http.ResponseWriter, r *http.Request) {
		ro, err := h.rollouts.Get(r.Context(), r.PathValue("id"))
		by := r.URL.Query().Get("by")
		if err != nil || by == "" {
			rolloutRespond(w, http.StatusOK, ro, err)
			return
		}
		// ?by=LABEL adds the devices' self-test figures per label value.
		rolloutRespond(w, http.StatusOK, rolloutWithCosts{Rollout: ro, Costs: rollout.RolloutCosts(ro, h.Devices(), by)}, nil)
	}))
	// What a model version costs on each class of device (?by=LABEL),
	// from every device's self-test of it, in or out of a rollout.
	mux.HandleFunc("GET /v1/models/{name}/versions/{version}/costs", h.admin(func(w http.ResponseWriter, r *http.Request) {
		v, err := strconv.ParseInt(r.PathValue("version"), 10, 64)
		by := r.URL.Query().Get("by")
		if err != nil || v < 1 || by == "" {
			writeError(w, http.StatusBadRequest, fmt.Errorf("want /v1/models/NAME/versions/N/costs?by=LABEL"))
			return
		}
		writeJSON(w, http.StatusOK, modelCosts{Model: r.PathValue("name"), Version: v, By: by,
			Classes: rollout.Costs(h.Devices(), r.PathValue("name"), v, by)})
	}))
	mux.HandleFunc("POST /v1/rollouts/{id}/{action}", h.admin(func(w http.ResponseWriter, r *http.Request) {
		ro, err := h.rolloutAction(r.Context(), r.PathValue("id"), r.PathValue("action"), whoOf(r))
		if errors.Is(err, errNoAction) {
			writeError(w, http.StatusNotFound, err)
			return
		}
		rolloutRespond(w, http.StatusOK, ro, err)
	}))
	mux.HandleFunc("GET /v1/devices/{id}/desired", h.admin(func(w http.ResponseWriter, r *http.Request) {
		d, ok, err := h.rollouts.Desired(r.Context(), r.PathValue("id"))
		if err == nil && !ok {
			err = fmt.Errorf("%w: device %s has no desired state", rollout.ErrNotFound, r.PathValue("id"))
		}
		rolloutRespond(w, http.StatusOK, d, err)
	}))
}

// startRollout starts a rollout of a published model version or agent
// build: what the API and the console's form both call.
func (h *Hub) startRollout(ctx context.Context, spec rollout.Spec) (*rollout.Rollout, error) {
	// In a cluster the leading hub signs a pushed version within a
	// second or two; give it that long.
	target := tuf.ModelTargetName(spec.Model, spec.Version)
	published := func() bool { return h.updates.Has(target) }
	if spec.Model == tuf.AgentModel {
		published = func() bool { return h.anyAgentTarget(spec.Version) }
	}
	for wait := 0; !published() && wait < 50 && ctx.Err() == nil; wait++ {
		time.Sleep(100 * time.Millisecond)
	}
	if !published() {
		return nil, fmt.Errorf("%w: %s version %d is not in the model registry (outpostctl model push) nor a published agent build (outpostctl agent publish)", rollout.ErrInvalid, spec.Model, spec.Version)
	}
	return h.rollouts.Start(ctx, spec)
}

// rolloutWithCosts is GET /v1/rollouts/{id}?by=LABEL.
type rolloutWithCosts struct {
	*rollout.Rollout
	Costs []rollout.Cost `json:"costs"`
}

// modelCosts is GET /v1/models/{name}/versions/{version}/costs.
type modelCosts struct {
	Model   string         `json:"model"`
	Version int64          `json:"version"`
	By      string         `json:"by"`
	Classes []rollout.Cost `json:"classes"`
}

var errNoAction = errors.New("no such rollout action: pause, resume, abort or rollback")

// rolloutAction pauses, resumes, aborts or rolls back a rollout: what the
// API and the console's buttons both call.
func (h *Hub) rolloutAction(ctx context.Context, id, action, who string) (*rollout.Rollout, error) {
	var ro *rollout.Rollout
	var err error
	switch action {
	case "pause":
		ro, err = h.rollouts.Pause(ctx, id)
	case "resume":
		ro, err = h.rollouts.Resume(ctx, id)
	case "abort":
		ro, err = h.rollouts.Abort(ctx, id, "by "+who)
	case "rollback":
		ro, err = h.rollouts.Rollback(ctx, id, "by "+who)
	default:
		return nil, fmt.Errorf("%w (got %q)", errNoAction, action)
	}
	if err == nil {
		h.log.Info("rollout "+action, "rollout", id, "state", ro.State, "by", who)
	}
	return ro, err
}

func rolloutRespond(w http.ResponseWriter, status int, v any, err error) {
	switch {
	case err == nil:
		writeJSON(w, status, v)
	case transient(err):
		unavailable(w, err)
	case errors.Is(err, rollout.ErrNotFound):
		writeError(w, http.StatusNotFound, err)
	case errors.Is(err, rollout.ErrConflict):
		writeError(w, http.StatusConflict, err)
	case errors.Is(err, rollout.ErrInvalid):
		writeError(w, http.StatusUnprocessableEntity, err)
	default:
		writeError(w, http.StatusInternalServerError, err)
	}
}

// followStage moves a rollout's version through the model registry's
// stages as the rollout moves: canary while it rolls out, production once
// it completes (the previous production version is archived), and back
// when it ends otherwise: a halted or aborted canary is a candidate again;
// a completed rollout rolled back archives its version and restores the
// version its devices went back to. Agent builds are not in the registry.
func (h *Hub) followStage(ctx context.Context, r *rollout.Rollout) {
	if r.Spec.Model == tuf.AgentModel {
		return
	}
	name, v := r.Spec.Model, r.Spec.Version
	vs, err := h.models.Versions(ctx, name)
	if err != nil {
		h.log.Warn("registry stage not moved with the rollout", "rollout", r.ID, "err", err)
		return
	}
	stage := ""
	for _, x := range vs {
		if x.Version == v {
			stage = x.Stage
		}
	}
	move := func(version int64, to, why string) {
		if _, err := h.models.Move(ctx, name, version, to, why); err != nil {
			h.log.Warn("registry stage not moved with the rollout", "rollout", r.ID, "model", name, "version", version, "stage", to, "err", err)
			return
		}
		h.log.Info("registry stage moved with the rollout", "rollout", r.ID, "model", name, "version", version, "stage", to)
	}
	switch {
	case stage == "":
		// Not in the registry: nothing to move.
	case r.State == rollout.Running && (stage == modelstore.Candidate || stage == modelstore.Archived):
		move(v, modelstore.Canary, "rollout "+r.ID+" started")
	case r.State == rollout.Completed && stage != modelstore.Production:
		move(v, modelstore.Production, "rollout "+r.ID+" completed")
	case (r.State == rollout.Halted || r.State == rollout.Aborted || r.State == rollout.RolledBack) && stage == modelstore.Canary:
		move(v, modelstore.Candidate, "rollout "+r.ID+" "+strings.ReplaceAll(r.State, "_", " "))
	case r.State == rollout.RolledBack && stage == modelstore.Production:
		move(v, modelstore.Archived, "rollout "+r.ID+" rolled back")
		if prev := previousVersion(r); prev > 0 && prev != v && hasStage(vs, prev) {
			move(prev, modelstore.Production, fmt.Sprintf("rollout %s rolled back: its devices run v%d again", r.ID, prev))
		}
	}
}

// previousVersion is the version most of a rollout's devices ran before
// it (the newest of equals).
func previousVersion(r *rollout.Rollout) int64 {
	n := map[int64]int{}
	var best int64
	for _, d := range r.Devices {
		if d.From == r.Spec.Version {
			continue
		}
		n[d.From]++
		if n[d.From] > n[best] || (n[d.From] == n[best] && d.From > best) {
			best = d.From
		}
	}
	return best
}

func hasStage(vs []modelstore.Version, v int64) bool {
	for _, x := range vs {
		if x.Version == v {
			return true
		}
	}
	return false
}
