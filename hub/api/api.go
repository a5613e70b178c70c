// Package api holds the types of the hub's HTTP API that its clients
// share: outpostctl, the console and the hub itself. It imports nothing of
// the server (no JetStream, Kafka or learner), so a client links only this
// and sync/state.
package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/outpost-edge/outpost/sync/state"
)

// Rollout states.
const (
	Running   = "running"
	Baking    = "baking"
	Paused    = "paused"
	Halted    = "halted" // a gate failed: updated devices were sent back
	Aborted   = "aborted"
	Completed = "completed"
	// RolledBack: a rollout an operator undid, running or completed;
	// its devices were sent back to the versions they had, all at once.
	RolledBack = "rolled_back"
)

// Active reports whether a rollout in this state still moves devices.
func Active(s string) bool { return s == Running || s == Baking || s == Paused }

// ErrRolloutInvalid means a rollout request is wrong; the message says
// how.
var ErrRolloutInvalid = errors.New("rollout: invalid")

// Wave is one stage: a number of devices, or a percentage of the targeted
// fleet (cumulative: 10 then 50 means 10% of devices, then 50% in all).
type Wave struct {
	Devices int     `json:"devices,omitempty"`
	Percent float64 `json:"percent,omitempty"`
}

func (w Wave) String() string {
	if w.Devices > 0 {
		return strconv.Itoa(w.Devices)
	}
	return strconv.FormatFloat(w.Percent, 'f', -1, 64) + "%"
}

// ParseWaves reads "1,10%,50%,100%".
func ParseWaves(s string) ([]Wave, error) {
	var out []Wave
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if p, ok := strings.CutSuffix(part, "%"); ok {
			f, err := strconv.ParseFloat(p, 64)
			if err != nil || f <= 0 || f > 100 {
				return nil, fmt.Errorf("%w: wave %q: a percentage is 0 to 100", ErrRolloutInvalid, part)
			}
			out = append(out, Wave{Percent: f})
			continue
		}
		n, err := strconv.Atoi(part)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%w: wave %q: a device count or a percentage like 10%%", ErrRolloutInvalid, part)
		}
		out = append(out, Wave{Devices: n})
	}
	return out, nil
}

// Gates decide whether a wave may be followed by the next.
type Gates struct {
	// MinHealthy is the fraction of a wave's devices that must commit.
	MinHealthy float64 `json:"min_healthy"`
	// MaxErrorRate and MaxLatencyFactor apply to each device's probation
	// report: errors per row, and latency as a multiple of the old model's.
	MaxErrorRate     float64 `json:"max_error_rate"`
	MaxLatencyFactor float64 `json:"max_latency_factor"`
	// MinInferences a device must have served in probation to count as
	// healthy (0: committing is enough).
	MinInferences int64 `json:"min_inferences"`
	// MinAgreement is the share of windows on which a candidate in shadow
	// must agree with the running model (with Spec.Shadow).
	MinAgreement float64 `json:"min_agreement"`
	// MaxLatencyMS and MaxRSSMB are the device's budget for the candidate
	// (0: none): its p99 per call and the growth of the agent's resident
	// memory from loading it, both measured on the device at self-test.
	// The device checks them, and MaxLatencyFactor against the running
	// model's p50, before it switches, and refuses a candidate that does
	// not fit; the refusal halts the rollout.
	MaxLatencyMS float64 `json:"max_latency_ms,omitempty"`
	MaxRSSMB     float64 `json:"max_rss_mb,omitempty"`
}

// Perf is the part of the gates the devices check at self-test.
func (g Gates) Perf() state.PerfGates {
	return state.PerfGates{MaxLatencyMS: g.MaxLatencyMS, MaxLatencyFactor: g.MaxLatencyFactor, MaxRSSMB: g.MaxRSSMB}
}

// Spec is what an operator starts.
type Spec struct {
	Model    string            `json:"model"`
	Version  int64             `json:"version"`
	Selector map[string]string `json:"selector,omitempty"`
	Waves    []Wave            `json:"waves"`
	Gates    Gates             `json:"gates"`
	// Bake is the wait after a wave passes before the next starts.
	Bake Duration `json:"bake"`
	// WaveTimeout halts a wave whose devices have not all finished.
	WaveTimeout Duration `json:"wave_timeout"`
	// Shadow, when set, has each device run the new version beside the
	// running one this long before switching (see state.DesiredModel);
	// Split > 0 lets it serve that share of windows meanwhile.
	Shadow Duration `json:"shadow,omitempty"`
	Split  float64  `json:"split,omitempty"`
	// AllowEmpty starts a rollout whose selector matches no device that
	// runs the model yet: it waits for one (up to the wave timeout)
	// instead of being refused.
	AllowEmpty bool `json:"allow_empty,omitempty"`
}

// Duration is a time.Duration written as "30s" in JSON.
type Duration time.Duration

// MarshalJSON writes the Go duration string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads a Go duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// Defaults fill what a request leaves out: canary of one, then 10%, 50%
// and 100%; every device healthy; 1% errors; 3× latency; 1 minute bake.
func (s *Spec) Defaults() {
	if len(s.Waves) == 0 {
		s.Waves = []Wave{{Devices: 1}, {Percent: 10}, {Percent: 50}, {Percent: 100}}
	}
	if s.Gates.MinHealthy == 0 {
		s.Gates.MinHealthy = 1
	}
	if s.Gates.MaxErrorRate == 0 {
		s.Gates.MaxErrorRate = 0.01
	}
	if s.Gates.MaxLatencyFactor == 0 {
		s.Gates.MaxLatencyFactor = 3
	}
	if s.Bake == 0 {
		s.Bake = Duration(time.Minute)
	}
	if s.WaveTimeout == 0 {
		s.WaveTimeout = Duration(30 * time.Minute)
	}
}

// Validate checks a spec after Defaults.
func (s *Spec) Validate() error {
	switch {
	case s.Model == "":
		return fmt.Errorf("%w: model is required", ErrRolloutInvalid)
	case s.Version < 1:
		return fmt.Errorf("%w: version is required", ErrRolloutInvalid)
	case s.Gates.MinHealthy < 0 || s.Gates.MinHealthy > 1:
		return fmt.Errorf("%w: gates.min_healthy is a fraction 0 to 1", ErrRolloutInvalid)
	case s.Gates.MaxErrorRate < 0 || s.Gates.MaxErrorRate > 1:
		return fmt.Errorf("%w: gates.max_error_rate is a fraction 0 to 1, got %g", ErrRolloutInvalid, s.Gates.MaxErrorRate)
	case s.Gates.MaxLatencyFactor < 1:
		return fmt.Errorf("%w: gates.max_latency_factor must be at least 1", ErrRolloutInvalid)
	case s.Gates.MaxLatencyMS < 0 || s.Gates.MaxRSSMB < 0:
		return fmt.Errorf("%w: gates.max_latency_ms and gates.max_rss_mb must not be negative (0: no limit)", ErrRolloutInvalid)
	case s.Bake < 0 || s.WaveTimeout < 0 || s.Shadow < 0:
		return fmt.Errorf("%w: bake, wave_timeout and shadow must not be negative", ErrRolloutInvalid)
	case s.Split < 0 || s.Split > 1 || s.Gates.MinAgreement < 0 || s.Gates.MinAgreement > 1:
		return fmt.Errorf("%w: split and gates.min_agreement are fractions 0 to 1", ErrRolloutInvalid)
	case s.Split > 0 && s.Shadow == 0:
		return fmt.Errorf("%w: split needs a shadow duration", ErrRolloutInvalid)
	}
	return nil
}

// Device is one targeted device's progress.
type Device struct {
	Wave   int           `json:"wave"`
	From   int64         `json:"from"`
	Phase  string        `json:"phase"` // the device's update phase; "pending" until it reports
	Reason string        `json:"reason,omitempty"`
	Health state.Health  `json:"health"`
	Shadow *state.Shadow `json:"shadow,omitempty"`
	// SelfTest is what the device measured of the candidate before the
	// switch.
	SelfTest *state.SelfTest `json:"selftest,omitempty"`
	// Reverted: sent back to From by a halt or abort.
	Reverted bool `json:"reverted,omitempty"`
}

// Rollout is a rollout's whole state, as stored and as the API shows it.
type Rollout struct {
	ID          string             `json:"id"`
	Spec        Spec               `json:"spec"`
	State       string             `json:"state"`
	Wave        int                `json:"wave"` // index into Spec.Waves
	Reason      string             `json:"reason,omitempty"`
	Targeted    int                `json:"targeted"` // devices the selector matches that run the model
	Devices     map[string]*Device `json:"devices"`
	CreatedAt   time.Time          `json:"created_at"`
	UpdatedAt   time.Time          `json:"updated_at"`
	WaveStarted time.Time          `json:"wave_started"`
	BakeUntil   time.Time          `json:"bake_until,omitzero"`
	// PausedFrom is the state to resume into.
	PausedFrom string `json:"paused_from,omitempty"`
}

// Counts tallies device phases.
func (r *Rollout) Counts() map[string]int {
	c := map[string]int{}
	for _, d := range r.Devices {
		c[d.Phase]++
	}
	return c
}

// ModelVersion is one registered model version: what `model list|show` print.
type ModelVersion struct {
	Name    string             `json:"name"`
	Version int64              `json:"version"`
	Parent  int64              `json:"parent,omitempty"`
	Task    string             `json:"task"`
	Stage   string             `json:"stage"`
	Metrics map[string]float64 `json:"metrics,omitempty"`
	SHA256  string             `json:"sha256"`
	Size    int                `json:"size"`
	// Quantization is the manifest's: none, int8-static, int8-dynamic, fp16.
	Quantization string `json:"quantization,omitempty"`
	// Golden says which engine reproduced the golden vectors at push, or
	// why none could.
	Golden     string     `json:"golden"`
	Parameters int64      `json:"parameters"`
	Ops        []string   `json:"ops"`
	Created    time.Time  `json:"created"`
	History    []Movement `json:"history"`
}

// Movement is one stage change.
type Movement struct {
	Stage string    `json:"stage"`
	At    time.Time `json:"at"`
	Why   string    `json:"why,omitempty"`
}

// PushRequest is the body of POST /v1/models: a model package.
type PushRequest struct {
	Manifest json.RawMessage `json:"manifest"`
	Model    []byte          `json:"model"` // model.onnx, base64 in JSON
}

// StageRequest is the body of POST /v1/models/{name}/versions/{version}/stage.
type StageRequest struct {
	Stage string `json:"stage"`
	Why   string `json:"why,omitempty"`
}

// ModelSummary is one model in `model list`.
type ModelSummary struct {
	Name       string `json:"name"`
	Latest     int64  `json:"latest"`
	Production int64  `json:"production,omitempty"`
	Canary     int64  `json:"canary,omitempty"`
	Versions   int    `json:"versions"`
}

// TrainingEvent is one entry of a model's training history.
type TrainingEvent struct {
	At                 time.Time `json:"at"`
	Kind               string    `json:"kind"` // drift, check, release, kept, failed
	Detail             string    `json:"detail,omitempty"`
	Version            int64     `json:"version,omitempty"`
	Rollout            string    `json:"rollout,omitempty"`
	ProductionAccuracy float64   `json:"production_accuracy,omitempty"`
	CandidateAccuracy  float64   `json:"candidate_accuracy,omitempty"`
}

// TrainingStatus is one model's training state.
type TrainingStatus struct {
	Model    string `json:"model"`
	Pipeline string `json:"pipeline"`
	// Production is the registry's production version (0: none yet): the
	// trainer reads it at start, and the hub's /v1/train answers the
	// registry's current word, with Canary the version rolling out.
	Production int64 `json:"production"`
	Canary     int64 `json:"canary,omitempty"`
	// Champion is the version the learner is judged against: production
	// when the trainer started, then its latest release (which is only a
	// candidate or canary in the registry until a rollout completes).
	Champion           int64                   `json:"champion"`
	Labelled           int64                   `json:"labelled"`
	Skipped            int64                   `json:"skipped"` // windows without the features or label the model needs
	Drifts             int                     `json:"drifts"`
	Checks             int                     `json:"checks"`
	Releases           int                     `json:"releases"`
	ProductionAccuracy float64                 `json:"production_accuracy"` // prequential, since the trainer started
	LearnerAccuracy    float64                 `json:"learner_accuracy"`
	RecentProduction   float64                 `json:"recent_production_accuracy"` // last 1,000 rows
	RecentLearner      float64                 `json:"recent_learner_accuracy"`
	Join               JoinStats               `json:"join"`
	Fleet              FleetDrift              `json:"fleet_data_drift"`
	Cohorts            map[string]CohortStatus `json:"cohorts,omitempty"`
	LastError          string                  `json:"last_error,omitempty"`
}

// FleetDrift aggregates the agents' own data-drift records (PSI and KS
// per feature against each device's reference) over a pipeline: how many
// devices report, and how many see each feature drift. A fleet-wide drift
// (at least half the reporting devices, and two or more) is an event.
type FleetDrift struct {
	Devices  int            `json:"devices"`          // devices whose latest drift record is recent
	Drifting int            `json:"drifting"`         // of them, with any feature drifted
	Features map[string]int `json:"features"`         // drifted feature → devices
	Since    time.Time      `json:"since,omitzero"`   // when the fleet-wide drift began
	Active   bool           `json:"active"`           // a fleet-wide drift is on
	Last     time.Time      `json:"last_at,omitzero"` // newest drift record
}

// CohortStatus is one cohort's view of production.
type CohortStatus struct {
	Rows     int64   `json:"rows"`
	Accuracy float64 `json:"accuracy"`
	Drifts   int     `json:"drifts"`
}

// JoinStats count what the trainer's join of labels to windows did.
type JoinStats struct {
	Matched           int64 `json:"matched"`
	UnmatchedLabels   int64 `json:"unmatched_labels"`
	UnlabelledWindows int64 `json:"unlabelled_windows"`
	Replaced          int64 `json:"replaced"`
}
