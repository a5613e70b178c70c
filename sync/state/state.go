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

// Device is a device's enrolment as the hub API shows it.
type Device struct {
	ID        string            `json:"id"`
	Labels    map[string]string `json:"labels,omitempty"`
	CreatedAt time.Time         `json:"created_at"`
	RevokedAt *time.Time        `json:"revoked_at,omitempty"`
	// Reported is the device's last reported state, if it has reported.
	Reported *Reported `json:"reported,omitempty"`
}

// Credentials are what a device connects to the hub's broker with. The
// hub keeps only a hash of the password and shows it once, at enrolment.
type Credentials struct {
	Device   string `json:"device"`
	Username string `json:"username"`
	Password string `json:"password"`
}
