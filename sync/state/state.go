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
	// Build is the agent build number running (self-update moves it).
	Build int64 `json:"build,omitempty"`
	// Outbox is the device's backlog of records not yet acked by the hub.
	Outbox *Outbox `json:"outbox,omitempty"`
	// Models is what each pipeline runs now; Updates the latest update of
	// each model, by model name.
	Models  []ModelStatus     `json:"models,omitempty"`
	Updates map[string]Update `json:"updates,omitempty"`
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

// Outbox is a device's unacked backlog when it reported.
type Outbox struct {
	Records int64 `json:"records"`
	Bytes   int64 `json:"bytes"`
}

// Device is a device's enrolment as the hub API shows it.
type Device struct {
	ID        string            `json:"id"`
	Labels    map[string]string `json:"labels,omitempty"`
	CreatedAt time.Time         `json:"created_at"`
	RevokedAt *time.Time        `json:"revoked_at,omitempty"`
	// KeyFingerprint names the key pair the device made and enrolled with
	// (KeyFingerprint); empty for devices added with `device add`.
	KeyFingerprint string `json:"key_fingerprint,omitempty"`
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

// Desired is what the hub wants a device to run; it travels on the
// device's desired topic and is level-triggered: a device compares it with
// what it has and acts on the difference, and Version only ever rises.
type Desired struct {
	Device  string `json:"device"`
	Version int64  `json:"version"`
	// Models maps a model name to the version every pipeline running that
	// model should run.
	Models   map[string]DesiredModel `json:"models,omitempty"`
	IssuedAt time.Time               `json:"issued_at"`
}

// DesiredModel is one model's wanted version and the rollout asking.
type DesiredModel struct {
	Version int64  `json:"version"`
	Target  string `json:"target"` // the TUF target name
	Rollout string `json:"rollout,omitempty"`
	// ShadowSeconds > 0 runs the new version beside the running one for
	// that long before the switch: on every window (Split 0, outputs only
	// compared) or serving the Split share of windows. The update fails
	// when the two agree on fewer than MinAgreement of the windows.
	ShadowSeconds float64 `json:"shadow_seconds,omitempty"`
	Split         float64 `json:"split,omitempty"`
	MinAgreement  float64 `json:"min_agreement,omitempty"`
}

// DecodeDesired parses and checks a desired document.
func DecodeDesired(data []byte) (Desired, error) {
	var d Desired
	if err := json.Unmarshal(data, &d); err != nil {
		return Desired{}, fmt.Errorf("%w: %w", ErrDocument, err)
	}
	if d.Device == "" || d.Version < 1 {
		return Desired{}, fmt.Errorf("%w: desired needs a device and a version ≥ 1", ErrDocument)
	}
	for name, m := range d.Models {
		if m.Version < 1 || m.Target == "" {
			return Desired{}, fmt.Errorf("%w: desired model %s needs a version and a target", ErrDocument, name)
		}
	}
	return d, nil
}

// Update phases, in the order of the update state machine (DESIGN §3).
const (
	PhaseDownloading = "downloading"
	PhaseVerifying   = "verifying"
	PhaseInstalling  = "installing"
	PhaseSelfTest    = "selftest"
	PhaseShadow      = "shadow" // optional: the candidate beside the running model
	PhaseSwitching   = "switching"
	PhaseProbation   = "probation"
	PhaseCommitted   = "committed"
	PhaseRollingBack = "rolling_back"
	PhaseRolledBack  = "rolled_back" // switched, then found unhealthy: back on From
	PhaseFailed      = "failed"      // refused before the switch: From never stopped
)

// Terminal reports whether a phase ends an update.
func Terminal(phase string) bool {
	return phase == PhaseCommitted || phase == PhaseRolledBack || phase == PhaseFailed
}

// ModelStatus is one pipeline's running model.
type ModelStatus struct {
	Pipeline string `json:"pipeline"`
	Model    string `json:"model"`
	Version  int64  `json:"version"`
	Slot     string `json:"slot,omitempty"`
}

// Update is a device's report of one model update.
type Update struct {
	Model   string    `json:"model"`
	From    int64     `json:"from"`
	To      int64     `json:"to"`
	Rollout string    `json:"rollout,omitempty"`
	Phase   string    `json:"phase"`
	Reason  string    `json:"reason,omitempty"`
	Health  Health    `json:"health"`
	Shadow  *Shadow   `json:"shadow,omitempty"`
	At      time.Time `json:"at"`
}

// Shadow is what the device saw of the candidate beside the running model.
type Shadow struct {
	Rows      int64   `json:"rows"`
	Agreement float64 `json:"agreement"` // share of rows where both gave the same label and decision
	Errors    int64   `json:"errors"`
	NaN       int64   `json:"nan"`
	// Per-row mean latency of the candidate and of the running model.
	RowLatencyUS       float64 `json:"row_latency_us"`
	ActiveRowLatencyUS float64 `json:"active_row_latency_us"`
	Split              float64 `json:"split,omitempty"`
}

// LatencySlackUS is the increase in mean latency per call, in µs, that
// latency gates tolerate whatever the ratio: below it scheduling noise on a
// busy device moves a microsecond model by several times.
const LatencySlackUS = 200

// LatencyMinRows and LatencyMinCalls are how many rows, in how many
// model calls, a latency gate needs before it judges: a mean over a few
// calls is one busy moment.
const (
	LatencyMinRows  = 20
	LatencyMinCalls = 10
)

// SlowerThan reports whether h's mean latency is over factor times the
// previous model's, by more than the slack, with enough rows to tell.
func (h Health) SlowerThan(factor float64) bool {
	return h.BaselineLatencyUS > 0 && h.Inferences >= LatencyMinRows && h.Calls >= LatencyMinCalls &&
		h.MeanLatencyUS > factor*h.BaselineLatencyUS && h.MeanLatencyUS-h.BaselineLatencyUS > LatencySlackUS
}

// Health is what the device saw of the new model during probation, next to
// what it saw of the old one before the switch.
type Health struct {
	Inferences    int64   `json:"inferences"`
	Errors        int64   `json:"errors"`
	NaN           int64   `json:"nan"`
	Calls         int64   `json:"calls"` // model calls (micro-batches)
	MeanLatencyUS float64 `json:"mean_latency_us"`
	// BaselineLatencyUS is the previous model's mean, for the latency gate.
	BaselineLatencyUS float64 `json:"baseline_latency_us,omitempty"`
	// BootsSinceSwitch counts agent restarts during probation.
	BootsSinceSwitch int64 `json:"boots_since_switch,omitempty"`
}
