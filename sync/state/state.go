// Package state holds the level-triggered device state documents that travel
// as retained MQTT messages: what the hub wants (desired) and what the
// device has (reported).
package state

import (
	"encoding/json"
	"fmt"
	"time"
)

// Reported is what an agent publishes, retained, on its reported topic.
type Reported struct {
	Device       string    `json:"device"`
	AgentVersion string    `json:"agent_version"`
	Arch         string    `json:"arch"`
	Boot         int64     `json:"boot"`   // boot counter, persisted by the agent
	Status       string    `json:"status"` // running, stopping
	StartedAt    time.Time `json:"started_at"`
	ReportedAt   time.Time `json:"reported_at"`
	// DesiredVersion is the last desired-state version the agent has seen.
	DesiredVersion int64 `json:"desired_version"`
}

// Agent status values.
const (
	StatusRunning  = "running"
	StatusStopping = "stopping"
)

// DecodeReported parses and checks a reported document.
func DecodeReported(data []byte) (Reported, error) {
	var r Reported
	if err := json.Unmarshal(data, &r); err != nil {
		return Reported{}, fmt.Errorf("%w: %w", ErrDocument, err)
	}
	if r.Device == "" {
		return Reported{}, fmt.Errorf("%w: device is empty", ErrDocument)
	}
	return r, nil
}
