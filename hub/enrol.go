package hub

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/outpost-edge/outpost/hub/registry"
	"github.com/outpost-edge/outpost/sync/state"
)

// enrolRoutes: operators issue one-time tokens (admin); devices spend one
// to get their credentials. /v1/enrol needs no admin token: the enrolment
// token is the authorisation, so serve it over HTTPS in production.
func (h *Hub) enrolRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/enrolment-tokens", h.admin(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Device string            `json:"device"`
			Labels map[string]string `json:"labels"`
			TTL    string            `json:"ttl"`
		}
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&req); err != nil {
			writeError(w, http.StatusBadRequest, fmt.Errorf("body: %w", err))
			return
		}
		var ttl time.Duration
		if req.TTL != "" {
			var err error
			if ttl, err = time.ParseDuration(req.TTL); err != nil {
				writeError(w, http.StatusBadRequest, fmt.Errorf("ttl: %w", err))
				return
			}
		}
		tok, err := h.registry.NewToken(r.Context(), req.Device, req.Labels, ttl)
		switch {
		case errors.Is(err, registry.ErrNotReady) || transient(err):
			unavailable(w, err)
		case err != nil:
			writeError(w, http.StatusBadRequest, err)
		default:
			writeJSON(w, http.StatusCreated, tok)
		}
	}))
	mux.HandleFunc("POST /v1/enrol", func(w http.ResponseWriter, r *http.Request) {
		var req state.EnrolRequest
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&req); err != nil {
			writeError(w, http.StatusBadRequest, fmt.Errorf("body: %w", err))
			return
		}
		e, err := h.registry.Enrol(r.Context(), req)
		switch {
		case errors.Is(err, registry.ErrTokenInvalid):
			writeError(w, http.StatusForbidden, err)
		case errors.Is(err, registry.ErrDeviceExists):
			writeError(w, http.StatusConflict, err)
		case errors.Is(err, state.ErrDocument):
			writeError(w, http.StatusBadRequest, err)
		case errors.Is(err, registry.ErrNotReady) || transient(err):
			unavailable(w, err)
		case err != nil:
			writeError(w, http.StatusInternalServerError, err)
		default:
			writeJSON(w, http.StatusCreated, e)
		}
	})
}
