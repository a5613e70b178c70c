package hub

import (
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/outpost-edge/outpost/firmware/bundle"
	"github.com/outpost-edge/outpost/hub/api"
	"github.com/outpost-edge/outpost/hub/updates"
	"github.com/outpost-edge/outpost/sync/tuf"
)

// maxAgent bounds an uploaded agent binary.
const maxAgent = 256 << 20

// agentRoutes publish agent builds for self-update; a rollout of model
// tuf.AgentModel then moves devices between builds.
func (h *Hub) agentRoutes(mux *routeTable) {
	mux.HandleFunc("POST /v1/agents", h.admin(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		build, err := strconv.ParseInt(q.Get("build"), 10, 64)
		if err != nil || build < 1 {
			writeError(w, http.StatusBadRequest, fmt.Errorf("build must be a number ≥ 1, got %q", q.Get("build")))
			return
		}
		bin, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxAgent))
		if err != nil {
			writeError(w, http.StatusBadRequest, fmt.Errorf("body: %w", err))
			return
		}
		// The architecture comes from the binary itself, so a build is
		// never published under the wrong one.
		arch := q.Get("arch")
		if f, err := elf.NewFile(bytes.NewReader(bin)); err == nil {
			if _, a, ok := bundle.ArchOf(f.Machine); ok {
				if arch != "" && arch != a.GOARCH {
					writeError(w, http.StatusBadRequest, fmt.Errorf("the binary is %s, not %s", a.GOARCH, arch))
					return
				}
				arch = a.GOARCH
			}
		}
		if arch == "" {
			writeError(w, http.StatusBadRequest, errors.New("not an ELF binary for amd64, arm64 or arm; name its arch to publish it anyway"))
			return
		}
		a := tuf.AgentTarget{Build: build, Version: q.Get("version"), Arch: arch}
		name, err := h.updates.PublishAgent(a, bin)
		switch {
		case errors.Is(err, updates.ErrNotSigner) || errors.Is(err, updates.ErrPublished):
			writeError(w, http.StatusConflict, err)
		case err != nil:
			writeError(w, http.StatusInternalServerError, err)
		default:
			writeJSON(w, http.StatusCreated, api.AgentPublished{Target: name, Build: build, Arch: arch, AgentVersion: a.Version})
		}
	}))
}

// anyAgentTarget reports whether build is published for some architecture.
func (h *Hub) anyAgentTarget(build int64) bool {
	for _, a := range bundle.Architectures {
		if h.updates.Has(tuf.AgentTargetName(a.GOARCH, build)) {
			return true
		}
	}
	return false
}
