package hub

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/outpost-edge/outpost/hub/api"
	"github.com/outpost-edge/outpost/hub/console"
	"github.com/outpost-edge/outpost/hub/registry"
	"github.com/outpost-edge/outpost/sync/state"
)

// enrolRoutes: operators issue one-time tokens (admin); devices spend one
// to get their credentials. /v1/enrol needs no admin token: the enrolment
// token is the authorisation, so serve it over HTTPS in production.
func (h *Hub) enrolRoutes(mux *routeTable) {
	mux.HandleFunc("POST /v1/enrolment-tokens", h.admin(func(w http.ResponseWriter, r *http.Request) {
		var req api.TokenRequest
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
			h.timelineW.Load().event(e.Device, console.KindEnrolled, fmt.Sprintf("enrolled itself with a token (arch %s) and labels %s", req.Arch, labelList(e.Labels)))
			writeJSON(w, http.StatusCreated, e)
		}
	})
	h.certRoutes(mux)
}

// certRoutes: the devices' CA. Renewal needs no admin token and no
// certificate: the device signs a challenge from this hub (or any hub of
// its cluster) with the ed25519 key it enrolled with, so a device whose
// certificate expired while offline, or whose clock is wrong, renews too.
func (h *Hub) certRoutes(mux *routeTable) {
	mux.HandleFunc("GET /v1/certificates/ca", func(w http.ResponseWriter, _ *http.Request) {
		ca := h.ca.Load()
		if ca == nil {
			unavailable(w, fmt.Errorf("hub: devices' CA: %w", registry.ErrNotReady))
			return
		}
		w.Header().Set("Content-Type", "application/x-pem-file")
		_, _ = w.Write(ca.PEM())
	})
	mux.HandleFunc("POST /v1/certificates/challenge", func(w http.ResponseWriter, _ *http.Request) {
		ca := h.ca.Load()
		if ca == nil {
			unavailable(w, fmt.Errorf("hub: devices' CA: %w", registry.ErrNotReady))
			return
		}
		writeJSON(w, http.StatusOK, state.Challenge{Challenge: ca.Challenge()})
	})
	mux.HandleFunc("POST /v1/certificates/renew", func(w http.ResponseWriter, r *http.Request) {
		ca := h.ca.Load()
		if ca == nil {
			unavailable(w, fmt.Errorf("hub: devices' CA: %w", registry.ErrNotReady))
			return
		}
		var req state.RenewRequest
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&req); err != nil {
			writeError(w, http.StatusBadRequest, fmt.Errorf("body: %w", err))
			return
		}
		if err := validPathID(req.Device); err != nil {
			writeError(w, http.StatusBadRequest, fmt.Errorf("device: %w", err))
			return
		}
		rn, err := h.registry.Renew(req, ca.CheckChallenge)
		switch {
		case errors.Is(err, registry.ErrRenewRefused):
			writeError(w, http.StatusForbidden, err)
		case errors.Is(err, registry.ErrNotReady):
			unavailable(w, err)
		case err != nil:
			writeError(w, http.StatusInternalServerError, err)
		default:
			writeJSON(w, http.StatusOK, rn)
		}
	})
}
