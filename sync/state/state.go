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
	// Pipelines is each pipeline's live health, and Uplink the
	// connection to the hub, when the agent reported; older agents send
	// neither.
	Pipelines []PipelineHealth `json:"pipelines,omitempty"`
	Uplink    *Uplink          `json:"uplink,omitempty"`
}

// PipelineHealth is one pipeline's work as the agent reported it: counters
// since the agent started, rates since the previous report, and the
// latency of its recent model calls.
type PipelineHealth struct {
	Pipeline string `json:"pipeline"`
	Model    string `json:"model,omitempty"`   // the model it runs, if any
	Version  int64  `json:"version,omitempty"` // of that model
	// Counters since the agent started.
	Events      int64 `json:"events"`       // input events accepted
	Rejected    int64 `json:"rejected"`     // input refused (malformed, out of range)
	Late        int64 `json:"late"`         // events behind the watermark
	Windows     int64 `json:"windows"`      // window results emitted
	Inferences  int64 `json:"inferences"`   // rows scored
	InferErrors int64 `json:"infer_errors"` // rows not scored: no feature vector, a failed call, a non-finite score
	NaN         int64 `json:"nan"`          // rows whose scores held a NaN or an infinity (also in infer_errors)
	Calls       int64 `json:"calls"`        // model calls (micro-batches)
	// Rates over the RateSeconds before the report (the previous report,
	// or the agent's start).
	RateSeconds      float64 `json:"rate_seconds"`
	InferencesPerSec float64 `json:"inferences_per_sec"`
	EventsPerSec     float64 `json:"events_per_sec"`
	// LatencyCalls recent model calls (at most 256) give the latency
	// percentiles and the mean rows per call; 0: no call yet.
	LatencyCalls int     `json:"latency_calls"`
	LatencyP50US float64 `json:"latency_p50_us"`
	LatencyP99US float64 `json:"latency_p99_us"`
	RowsPerCall  float64 `json:"rows_per_call"`
}

// Rows are the rows the pipeline tried to score: the denominator of its
// error and NaN rates, as for an update's health.
func (h PipelineHealth) Rows() int64 { return h.Inferences + h.InferErrors }

// Uplink is the agent's connection to the hub when it reported.
type Uplink struct {
	Connected bool   `json:"connected"`        // the MQTT connection was open
	Broker    string `json:"broker,omitempty"` // the URL of the hub it connects to (password redacted)
	// Reconnects counts connections made after the first since the agent
	// started.
	Reconnects int64 `json:"reconnects"`
	// LastAckAt is when an ack of the hub last moved any stream forward;
	// absent: none since the agent started.
	LastAckAt *time.Time `json:"last_ack_at,omitempty"`
	// AckErrors counts hub acks the outbox could not record.
	AckErrors int64 `json:"ack_errors"`
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
	// EvictedRecords and EvictedBytes are what the outbox's byte budget
	// dropped since the agent started (the oldest records of the
	// lowest-priority streams first).
	EvictedRecords int64 `json:"evicted_records,omitempty"`
	EvictedBytes   int64 `json:"evicted_bytes,omitempty"`
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

// DeviceDetail is GET /v1/devices/{id}: the device as the list shows it,
// and a page of its timeline, newest first.
type DeviceDetail struct {
	Device        Device          `json:"device"`
	Timeline      []TimelineEntry `json:"timeline"`
	TimelineTotal int             `json:"timeline_total"`
}

// TimelineEntry is one step of a device's history the hub keeps: a
// reported-state change, an update phase, drift, an eviction, enrolment
// or revocation.
type TimelineEntry struct {
	At      time.Time `json:"at"`
	Kind    string    `json:"kind"`
	Detail  string    `json:"detail"`
	Model   string    `json:"model,omitempty"`
	Phase   string    `json:"phase,omitempty"`
	Reason  string    `json:"reason,omitempty"`
	Rollout string    `json:"rollout,omitempty"`
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
	// PerfGates are the rollout's budget for what the device measures of
	// the candidate at self-test; a candidate over one is refused before
	// the switch.
	PerfGates
}

// PerfGates are a rollout's performance budget, checked on the device at
// self-test (zero: no limit).
type PerfGates struct {
	// MaxLatencyMS bounds the candidate's p99 latency per call, at batch 1
	// and at the pipeline's usual batch.
	MaxLatencyMS float64 `json:"max_latency_ms,omitempty"`
	// MaxLatencyFactor bounds the candidate's p50 as a multiple of the
	// running model's, measured the same way (beyond LatencySlackUS).
	MaxLatencyFactor float64 `json:"max_latency_factor,omitempty"`
	// MaxRSSMB bounds the growth of the agent's resident memory from
	// loading the candidate.
	MaxRSSMB float64 `json:"max_rss_mb,omitempty"`
}

// SelfTest is what the device measured of the candidate at self-test, on
// the device itself: latency over its golden vectors, repeated, at batch
// 1 and at the pipeline's usual batch; the growth of resident memory from
// loading it; and the running model's latency measured the same way.
type SelfTest struct {
	Calls        int     `json:"calls"` // timed calls at each batch size
	LatencyP50US float64 `json:"latency_p50_us"`
	LatencyP99US float64 `json:"latency_p99_us"`
	BatchRows    int     `json:"batch_rows"` // the pipeline's usual rows per call
	BatchP50US   float64 `json:"batch_p50_us"`
	BatchP99US   float64 `json:"batch_p99_us"`
	// RealRows are the device's own recent windows timed beside the
	// golden vectors (0: the pipeline had not run yet).
	RealRows    int     `json:"real_rows"`
	RSSGrowthMB float64 `json:"rss_growth_mb"`
	// The running model, on its own golden vectors (0: not measured).
	ActiveVersion      int64   `json:"active_version,omitempty"`
	ActiveLatencyP50US float64 `json:"active_latency_p50_us,omitempty"`
	ActiveBatchP50US   float64 `json:"active_batch_p50_us,omitempty"`
}

// Check returns why s does not fit g, or "".
func (s SelfTest) Check(g PerfGates) string {
	if g.MaxLatencyMS > 0 {
		if p99 := max(s.LatencyP99US, s.BatchP99US); p99 > g.MaxLatencyMS*1e3 {
			return fmt.Sprintf("latency p99 %.0f µs (batch 1: %.0f µs, batch %d: %.0f µs) over max_latency_ms %.3g",
				p99, s.LatencyP99US, s.BatchRows, s.BatchP99US, g.MaxLatencyMS)
		}
	}
	if g.MaxLatencyFactor > 0 {
		slower := func(cand, active float64) bool {
			return active > 0 && cand > g.MaxLatencyFactor*active && cand-active > LatencySlackUS
		}
		switch {
		case slower(s.LatencyP50US, s.ActiveLatencyP50US):
			return fmt.Sprintf("latency p50 %.0f µs at batch 1 is %.1f× the running model's %.3g µs, over max_latency_factor %g",
				s.LatencyP50US, s.LatencyP50US/s.ActiveLatencyP50US, s.ActiveLatencyP50US, g.MaxLatencyFactor)
		case slower(s.BatchP50US, s.ActiveBatchP50US):
			return fmt.Sprintf("latency p50 %.0f µs at batch %d is %.1f× the running model's %.3g µs, over max_latency_factor %g",
				s.BatchP50US, s.BatchRows, s.BatchP50US/s.ActiveBatchP50US, s.ActiveBatchP50US, g.MaxLatencyFactor)
		}
	}
	if g.MaxRSSMB > 0 && s.RSSGrowthMB > g.MaxRSSMB {
		return fmt.Sprintf("resident memory grew %.1f MB on loading, over max_rss_mb %g", s.RSSGrowthMB, g.MaxRSSMB)
	}
	return ""
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
	Model   string  `json:"model"`
	From    int64   `json:"from"`
	To      int64   `json:"to"`
	Rollout string  `json:"rollout,omitempty"`
	Phase   string  `json:"phase"`
	Reason  string  `json:"reason,omitempty"`
	Health  Health  `json:"health"`
	Shadow  *Shadow `json:"shadow,omitempty"`
	// SelfTest is the candidate's measurement on the device, from the
	// self-test on.
	SelfTest *SelfTest `json:"selftest,omitempty"`
	At       time.Time `json:"at"`
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
