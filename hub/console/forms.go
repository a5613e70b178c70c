package console

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/outpost-edge/outpost/hub/modelstore"
	"github.com/outpost-edge/outpost/hub/rollout"
	"github.com/outpost-edge/outpost/sync/state"
	"github.com/outpost-edge/outpost/sync/tuf"
)

// TimelinePage is how many timeline entries a device page shows.
const TimelinePage = 25

// PreviewDevices is how many selected devices a rollout preview lists.
const PreviewDevices = 20

// RolloutForm is the start form's fields, as typed.
type RolloutForm struct {
	Model, Version, Selector, Waves, Bake, WaveTimeout, Shadow, Split       string
	MinHealthy, MaxErrorRate, MaxLatencyFactor, MinInferences, MinAgreement string
}

// DefaultRolloutForm is what a new form shows: the controller's defaults.
func DefaultRolloutForm() RolloutForm {
	return RolloutForm{Waves: "1,10%,50%,100%", Bake: "1m", WaveTimeout: "30m", MinHealthy: "1", MaxErrorRate: "0.01", MaxLatencyFactor: "3"}
}

func rolloutFormOf(v url.Values) RolloutForm {
	g := func(k string) string { return strings.TrimSpace(v.Get(k)) }
	return RolloutForm{Model: g("model"), Version: g("version"), Selector: g("selector"), Waves: g("waves"), Bake: g("bake"),
		WaveTimeout: g("wave_timeout"), Shadow: g("shadow"), Split: g("split"), MinHealthy: g("min_healthy"),
		MaxErrorRate: g("max_error_rate"), MaxLatencyFactor: g("max_latency_factor"), MinInferences: g("min_inferences"), MinAgreement: g("min_agreement")}
}

// ParseSelector reads "site=north,line=2" (commas or spaces between).
func ParseSelector(s string) (map[string]string, error) {
	out := map[string]string{}
	for _, part := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' }) {
		k, v, ok := strings.Cut(part, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%w: selector %q: want key=value", rollout.ErrInvalid, part)
		}
		out[k] = v
	}
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}

// Spec is the rollout the form describes; blank fields take the
// controller's defaults.
func (f RolloutForm) Spec() (rollout.Spec, error) {
	var s rollout.Spec
	var err error
	bad := func(field string, e error) (rollout.Spec, error) {
		return rollout.Spec{}, fmt.Errorf("%w: %s: %v", rollout.ErrInvalid, field, e)
	}
	if s.Model = f.Model; s.Model == "" {
		return bad("model", errors.New("required"))
	}
	if s.Version, err = strconv.ParseInt(f.Version, 10, 64); err != nil || s.Version < 1 {
		return bad("version", fmt.Errorf("a number ≥ 1, got %q", f.Version))
	}
	if s.Selector, err = ParseSelector(f.Selector); err != nil {
		return rollout.Spec{}, err
	}
	if f.Waves != "" {
		if s.Waves, err = rollout.ParseWaves(f.Waves); err != nil {
			return rollout.Spec{}, err
		}
	}
	for _, d := range []struct {
		name, v string
		to      *rollout.Duration
	}{{"bake", f.Bake, &s.Bake}, {"wave_timeout", f.WaveTimeout, &s.WaveTimeout}, {"shadow", f.Shadow, &s.Shadow}} {
		if d.v == "" {
			continue
		}
		v, err := time.ParseDuration(d.v)
		if err != nil || v < 0 {
			return bad(d.name, fmt.Errorf("a duration like 30s or 10m, got %q", d.v))
		}
		*d.to = rollout.Duration(v)
	}
	for _, n := range []struct {
		name, v string
		to      *float64
	}{{"split", f.Split, &s.Split}, {"min_healthy", f.MinHealthy, &s.Gates.MinHealthy}, {"max_error_rate", f.MaxErrorRate, &s.Gates.MaxErrorRate},
		{"max_latency_factor", f.MaxLatencyFactor, &s.Gates.MaxLatencyFactor}, {"min_agreement", f.MinAgreement, &s.Gates.MinAgreement}} {
		if n.v == "" {
			continue
		}
		v, err := strconv.ParseFloat(n.v, 64)
		if err != nil || v < 0 || math.IsNaN(v) || math.IsInf(v, 0) {
			return bad(n.name, fmt.Errorf("a number ≥ 0, got %q", n.v))
		}
		*n.to = v
	}
	if f.MinInferences != "" {
		if s.Gates.MinInferences, err = strconv.ParseInt(f.MinInferences, 10, 64); err != nil || s.Gates.MinInferences < 0 {
			return bad("min_inferences", fmt.Errorf("a whole number ≥ 0, got %q", f.MinInferences))
		}
	}
	return s, nil
}

// Preview is what a rollout would select now.
type Preview struct {
	Selected int
	First    []state.Device // the first PreviewDevices, by id
	Waves    []string       // "wave 1: 1 device", cumulative like the controller's
	// Left out, and why.
	Revoked, Silent, NotRunning, Unmatched int
	Claimed                                map[string]int // by the active rollout that holds them
}

// PreviewRollout selects devices the way the rollout controller does: enrolled,
// not revoked, reporting, labels matching the selector, running the model
// (any agent build for the agent), and not held by another active rollout
// of the model.
func PreviewRollout(spec rollout.Spec, devs []state.Device, active []*rollout.Rollout) Preview {
	p := Preview{Claimed: map[string]int{}}
	var sel []state.Device
	for _, d := range devs {
		switch {
		case !selects(spec.Selector, d.Labels):
			p.Unmatched++
			continue
		case d.RevokedAt != nil:
			p.Revoked++
			continue
		case d.Reported == nil:
			p.Silent++
			continue
		case !runsModel(d.Reported, spec.Model):
			p.NotRunning++
			continue
		}
		holder := ""
		for _, r := range active {
			if rollout.Active(r.State) && r.Spec.Model == spec.Model && r.Devices[d.ID] != nil {
				holder = r.ID
			}
		}
		if holder != "" {
			p.Claimed[holder]++
			continue
		}
		sel = append(sel, d)
	}
	sort.Slice(sel, func(i, j int) bool { return sel[i].ID < sel[j].ID })
	p.Selected = len(sel)
	p.First = sel[:min(len(sel), PreviewDevices)]
	waves := spec.Waves
	if len(waves) == 0 {
		waves = []rollout.Wave{{Devices: 1}, {Percent: 10}, {Percent: 50}, {Percent: 100}}
	}
	size := 0
	for i, w := range waves {
		s := w.Devices
		if w.Percent > 0 {
			s = int(math.Ceil(w.Percent / 100 * float64(p.Selected)))
		}
		size = min(p.Selected, max(size, s))
		p.Waves = append(p.Waves, fmt.Sprintf("wave %d (%s): %d devices in all", i+1, w, size))
	}
	return p
}

func selects(sel, labels map[string]string) bool {
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func runsModel(r *state.Reported, model string) bool {
	if model == tuf.AgentModel {
		return true
	}
	for _, m := range r.Models {
		if m.Model == model {
			return true
		}
	}
	return false
}

type rolloutFormView struct {
	Form    RolloutForm
	Models  []modelstore.Summary
	Preview *Preview
	Spec    *rollout.Spec
}

func (c *Console) rolloutNew(w http.ResponseWriter, r *http.Request, s *Session) {
	f := DefaultRolloutForm()
	if m := r.URL.Query().Get("model"); m != "" {
		f.Model = m
	}
	c.renderRolloutForm(w, r, s, http.StatusOK, f, nil, "")
}

func (c *Console) renderRolloutForm(w http.ResponseWriter, r *http.Request, s *Session, status int, f RolloutForm, p *Preview, errText string) {
	models, err := c.b.Models(r.Context())
	if err != nil && errText == "" {
		errText = err.Error()
	}
	c.render(w, status, "rollout_new", view{Title: "Start a rollout", Nav: "rollouts", Session: s, Error: errText,
		Data: rolloutFormView{Form: f, Models: models, Preview: p}})
}

// rolloutStart previews (preview=1) or starts the rollout the form
// describes, through the code POST /v1/rollouts runs.
func (c *Console) rolloutStart(w http.ResponseWriter, r *http.Request, s *Session) {
	f := rolloutFormOf(r.PostForm)
	spec, err := f.Spec()
	if err != nil {
		c.renderRolloutForm(w, r, s, http.StatusUnprocessableEntity, f, nil, err.Error())
		return
	}
	if r.PostFormValue("preview") != "" {
		active, err := c.b.Rollouts(r.Context())
		if err != nil {
			c.renderRolloutForm(w, r, s, http.StatusServiceUnavailable, f, nil, err.Error())
			return
		}
		p := PreviewRollout(spec, c.b.Devices(), active)
		c.renderRolloutForm(w, r, s, http.StatusOK, f, &p, "")
		return
	}
	ro, err := c.b.StartRollout(r.Context(), spec, s.User)
	target := spec.Model + " v" + strconv.FormatInt(spec.Version, 10)
	if ro != nil {
		target = ro.ID
	}
	c.record(r.Context(), s, "rollout start", target, err)
	if err != nil {
		status := http.StatusServiceUnavailable
		switch {
		case errors.Is(err, rollout.ErrInvalid):
			status = http.StatusUnprocessableEntity
		case errors.Is(err, rollout.ErrConflict):
			status = http.StatusConflict
		}
		c.renderRolloutForm(w, r, s, status, f, nil, err.Error())
		return
	}
	http.Redirect(w, r, "/rollouts/"+ro.ID+"?done=start", http.StatusSeeOther)
}

// timelineView is a page of a device's timeline.
type timelineView struct {
	Entries         []TimelineEntry
	Total, From, To int
	Prev, Next      string // links, empty at the ends
	Error           string
}

func (c *Console) timelinePage(ctx context.Context, id string, offset int) timelineView {
	if offset < 0 {
		offset = 0
	}
	entries, total, err := c.b.Timeline(ctx, id, offset, TimelinePage)
	v := timelineView{Entries: entries, Total: total, From: offset + 1, To: offset + len(entries)}
	if err != nil {
		v.Error = err.Error()
	}
	if offset > 0 {
		v.Prev = fmt.Sprintf("/devices/%s?tl=%d#timeline", url.PathEscape(id), max(0, offset-TimelinePage))
	}
	if offset+len(entries) < total {
		v.Next = fmt.Sprintf("/devices/%s?tl=%d#timeline", url.PathEscape(id), offset+TimelinePage)
	}
	return v
}

// lineageNode is a version with the versions derived from it.
type lineageNode struct {
	modelstore.Version
	Children []*lineageNode
}

// Lineage arranges versions by parent: roots are versions without a
// parent in the list, children by version.
func Lineage(vs []modelstore.Version) []*lineageNode {
	nodes := map[int64]*lineageNode{}
	for _, v := range vs {
		nodes[v.Version] = &lineageNode{Version: v}
	}
	var roots []*lineageNode
	for _, v := range slices.SortedFunc(slices.Values(vs), func(a, b modelstore.Version) int { return int(a.Version - b.Version) }) {
		n := nodes[v.Version]
		if p, ok := nodes[v.Parent]; ok && v.Parent != v.Version {
			p.Children = append(p.Children, n)
		} else {
			roots = append(roots, n)
		}
	}
	return roots
}

// compareRow is one line of a version comparison.
type compareRow struct {
	Name, A, B, Delta string
	Differs           bool
}

func (c *Console) modelCompare(w http.ResponseWriter, r *http.Request, s *Session) {
	name := r.PathValue("name")
	vs, err := c.b.ModelVersions(r.Context(), name)
	if err != nil {
		status := http.StatusServiceUnavailable
		if errors.Is(err, modelstore.ErrNotFound) {
			status = http.StatusNotFound
		}
		c.fail(w, r, s, status, err)
		return
	}
	find := func(q string) (*modelstore.Version, error) {
		n, err := strconv.ParseInt(strings.TrimPrefix(q, "v"), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("version %q: want a number", q)
		}
		for i := range vs {
			if vs[i].Version == n {
				return &vs[i], nil
			}
		}
		return nil, fmt.Errorf("%s has no version %d", name, n)
	}
	a, err := find(r.URL.Query().Get("a"))
	if err == nil {
		var b *modelstore.Version
		if b, err = find(r.URL.Query().Get("b")); err == nil {
			running := c.running()[name]
			c.render(w, http.StatusOK, "compare", view{Title: fmt.Sprintf("%s v%d and v%d", name, a.Version, b.Version), Nav: "models", Session: s,
				Data: struct {
					Name    string
					A, B    *modelstore.Version
					Rows    []compareRow
					Metrics []compareRow
				}{name, a, b, compareFacts(a, b, running), compareMetrics(a, b)}})
			return
		}
	}
	c.fail(w, r, s, http.StatusBadRequest, err)
}

func compareFacts(a, b *modelstore.Version, running map[int64]int) []compareRow {
	parent := func(v *modelstore.Version) string {
		if v.Parent == 0 {
			return "—"
		}
		return "v" + strconv.FormatInt(v.Parent, 10)
	}
	quant := func(v *modelstore.Version) string {
		if v.Quantization == "" {
			return "none"
		}
		return v.Quantization
	}
	rows := []compareRow{
		{Name: "stage", A: a.Stage, B: b.Stage},
		{Name: "parent", A: parent(a), B: parent(b)},
		{Name: "task", A: a.Task, B: b.Task},
		{Name: "quantization", A: quant(a), B: quant(b)},
		{Name: "size", A: byteString(int64(a.Size)), B: byteString(int64(b.Size)), Delta: signed(float64(b.Size - a.Size))},
		{Name: "parameters", A: strconv.FormatInt(a.Parameters, 10), B: strconv.FormatInt(b.Parameters, 10), Delta: signed(float64(b.Parameters - a.Parameters))},
		{Name: "golden", A: a.Golden, B: b.Golden},
		{Name: "devices running it", A: strconv.Itoa(running[a.Version]), B: strconv.Itoa(running[b.Version])},
		{Name: "created", A: a.Created.Format("2006-01-02 15:04"), B: b.Created.Format("2006-01-02 15:04")},
	}
	for i := range rows {
		rows[i].Differs = rows[i].A != rows[i].B
	}
	return rows
}

func compareMetrics(a, b *modelstore.Version) []compareRow {
	keys := map[string]bool{}
	for k := range a.Metrics {
		keys[k] = true
	}
	for k := range b.Metrics {
		keys[k] = true
	}
	var rows []compareRow
	for _, k := range sortedKeys(keys) {
		va, oka := a.Metrics[k]
		vb, okb := b.Metrics[k]
		row := compareRow{Name: k, A: "—", B: "—"}
		if oka {
			row.A = strconv.FormatFloat(va, 'g', 5, 64)
		}
		if okb {
			row.B = strconv.FormatFloat(vb, 'g', 5, 64)
		}
		if oka && okb {
			row.Delta = signed(vb - va)
		}
		row.Differs = row.A != row.B
		rows = append(rows, row)
	}
	return rows
}

func signed(d float64) string {
	if d == 0 {
		return "0"
	}
	s := strconv.FormatFloat(d, 'g', 5, 64)
	if d > 0 {
		s = "+" + s
	}
	return s
}

// running counts the devices reporting each version of each model.
func (c *Console) running() map[string]map[int64]int {
	running := map[string]map[int64]int{}
	for _, d := range c.b.Devices() {
		if d.Reported == nil {
			continue
		}
		for _, m := range d.Reported.Models {
			if running[m.Model] == nil {
				running[m.Model] = map[int64]int{}
			}
			running[m.Model][m.Version]++
		}
	}
	return running
}
