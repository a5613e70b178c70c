// Package console is the fleet console: server-rendered HTML pages the hub
// serves at / on its HTTP listener, for fleet managers. It logs users in
// (the admin token, or accounts from console.users with a viewer or
// operator role), protects every form with a per-session CSRF token, and
// records every operator action in an audit log. Its assets are embedded:
// it needs nothing from the network.
package console

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/outpost-edge/outpost/hub/modelstore"
	"github.com/outpost-edge/outpost/hub/rollout"
	"github.com/outpost-edge/outpost/sync/state"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed assets
var assetFS embed.FS

// Backend is what the console reads and does through the hub: the same
// code the HTTP API calls.
type Backend interface {
	Devices() []state.Device
	Rollouts(ctx context.Context) ([]*rollout.Rollout, error)
	Rollout(ctx context.Context, id string) (*rollout.Rollout, error)
	// RolloutAction is pause, resume, abort or rollback.
	RolloutAction(ctx context.Context, id, action, who string) (*rollout.Rollout, error)
	// StartRollout starts a rollout as POST /v1/rollouts does.
	StartRollout(ctx context.Context, spec rollout.Spec, who string) (*rollout.Rollout, error)
	// Timeline is a page of a device's timeline, newest first, and the
	// number of entries in all.
	Timeline(ctx context.Context, device string, offset, n int) ([]TimelineEntry, int, error)
	Models(ctx context.Context) ([]modelstore.Summary, error)
	ModelVersions(ctx context.Context, name string) ([]modelstore.Version, error)
	// Pipeline is the hub's own backlog: bridge messages not yet in Kafka
	// and the age of the oldest.
	Pipeline() (backlog uint64, age time.Duration)
	TrainingBackend
	// StreamCounters reads this hub's pipeline counters (the streams
	// page's sampler reads it every 5 s).
	StreamCounters() StreamCounters
	// DeadLetters are the latest n dead letters in Kafka, newest first.
	DeadLetters(ctx context.Context, n int) ([]DeadLetter, error)
	// PipelineLease names the hub holding the pipeline lease (""
	// when none does) and this hub.
	PipelineLease(ctx context.Context) (holder, self string, err error)
}

// RolloutActions are the buttons of a rollout page.
var RolloutActions = []string{"pause", "resume", "abort", "rollback"}

// Console serves the pages.
type Console struct {
	cfg        Config
	adminToken string
	tls        bool
	b          Backend
	audit      *Audit
	log        *slog.Logger
	sessions   *sessions
	sampler    *Sampler
	tmpl       map[string]*template.Template
	now        func() time.Time
}

// Options are how the hub runs the console.
type Options struct {
	AdminToken string
	TLS        bool // cookies are Secure
	Audit      *Audit
	Log        *slog.Logger
	// Sampler holds the readings the streams page charts (nil: none).
	Sampler *Sampler
	// Sessions keeps the logins across restarts and hubs (nil: in this
	// hub's memory only).
	Sessions SessionStore
	Now      func() time.Time // tests
}

// New builds the console.
func New(cfg Config, b Backend, o Options) (*Console, error) {
	c := &Console{cfg: cfg, adminToken: o.AdminToken, tls: o.TLS, b: b, audit: o.Audit, log: o.Log, sampler: o.Sampler,
		sessions: &sessions{m: map[string]*cached{}, ttl: cfg.SessionTTL, store: o.Sessions}, tmpl: map[string]*template.Template{}, now: o.Now}
	if c.now == nil {
		c.now = time.Now
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.sessions.now, c.sessions.log = c.now, c.log
	if c.sessions.ttl == 0 {
		c.sessions.ttl = Defaults().SessionTTL
	}
	if c.cfg.OfflineAfter == 0 {
		c.cfg.OfflineAfter = Defaults().OfflineAfter
	}
	funcs := template.FuncMap{
		"ago":    func(t time.Time) string { return ago(c.now(), t) },
		"pct":    func(f float64) string { return strconv.FormatFloat(f*100, 'f', -1, 64) + "%" },
		"join":   strings.Join,
		"labels": labelString,
		"bytes":  byteString,
		"rate":   func(n, d int64) string { return rate(n, d) },
		"micros": micros,
		"perSec": perSec,
		"can":    func(s *Session) bool { return s.CanOperate() },
		"int64":  func(i int) int64 { return int64(i) },
		"add1":   func(i int) int { return i + 1 },
		"dur":    func(d rollout.Duration) string { return time.Duration(d).String() },
	}
	pages, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	for _, p := range pages {
		name := strings.TrimSuffix(strings.TrimPrefix(p, "templates/"), ".html")
		if name == "layout" {
			continue
		}
		t, err := template.New(name).Funcs(funcs).ParseFS(templateFS, "templates/layout.html", p)
		if err != nil {
			return nil, fmt.Errorf("console: template %s: %w", name, err)
		}
		c.tmpl[name] = t
	}
	return c, nil
}

// Mux is where Routes mounts the pages: an *http.ServeMux, or the hub's
// table of routes.
type Mux interface {
	Handle(pattern string, h http.Handler)
	HandleFunc(pattern string, f func(http.ResponseWriter, *http.Request))
}

// Routes mounts the console on mux.
func (c *Console) Routes(mux Mux) {
	assets, _ := fs.Sub(assetFS, "assets")
	mux.Handle("GET /assets/", http.StripPrefix("/assets/", http.FileServerFS(assets)))
	mux.HandleFunc("GET /login", c.loginPage)
	mux.HandleFunc("POST /login", c.login)
	mux.HandleFunc("POST /logout", c.page(false, c.logout))
	mux.HandleFunc("GET /{$}", c.page(false, c.fleet))
	mux.HandleFunc("GET /devices/{id}", c.page(false, c.device))
	mux.HandleFunc("GET /rollouts", c.page(false, c.rollouts))
	mux.HandleFunc("GET /rollouts/new", c.page(true, c.rolloutNew))
	mux.HandleFunc("POST /rollouts", c.page(true, c.rolloutStart))
	mux.HandleFunc("GET /rollouts/{id}", c.page(false, c.rolloutPage))
	mux.HandleFunc("POST /rollouts/{id}/{action}", c.page(true, c.rolloutAction))
	mux.HandleFunc("GET /models", c.page(false, c.models))
	mux.HandleFunc("GET /models/{name}/compare", c.page(false, c.modelCompare))
	mux.HandleFunc("GET /training", c.page(false, c.trainingList))
	mux.HandleFunc("GET /training/{model}", c.page(false, c.training))
	mux.HandleFunc("GET /streams", c.page(false, c.streams))
	mux.HandleFunc("GET /streams/charts", c.fragment(c.streamCharts))
	mux.HandleFunc("GET /audit", c.page(false, c.auditPage))
}

type handler func(w http.ResponseWriter, r *http.Request, s *Session)

// page requires a session (else the login page), a CSRF token on every
// POST, and for operate the operator role.
func (c *Console) page(operate bool, h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		secureHeaders(w)
		s := c.SessionOf(r)
		if s == nil {
			if r.Method == http.MethodGet {
				http.Redirect(w, r, "/login?next="+urlQueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
				return
			}
			c.fail(w, r, nil, http.StatusUnauthorized, errors.New("log in first"))
			return
		}
		if r.Method == http.MethodPost {
			r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
			if !CheckCSRF(s, r) {
				c.fail(w, r, s, http.StatusForbidden, errors.New("the form's CSRF token is missing or wrong: reload the page and try again"))
				return
			}
		}
		if operate && !s.CanOperate() {
			c.fail(w, r, s, http.StatusForbidden, fmt.Errorf("%s is a %s: only operators may do this", s.User, s.Role))
			return
		}
		h(w, r, s)
	}
}

// fragment serves a part of a page that a page's script fetches: without
// a session it is a 401, not a redirect to the login page (which the
// script would swap in).
func (c *Console) fragment(h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		secureHeaders(w)
		s := c.SessionOf(r)
		if s == nil {
			http.Error(w, "log in first", http.StatusUnauthorized)
			return
		}
		h(w, r, s)
	}
}

func secureHeaders(w http.ResponseWriter) {
	w.Header().Set("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'; form-action 'self'")
	w.Header().Set("X-Frame-Options", "DENY")
	w.Header().Set("Cache-Control", "no-store")
}

// view is what every template gets.
type view struct {
	Title   string
	Nav     string
	Session *Session
	Flash   string
	Error   string
	Data    any
}

func (c *Console) render(w http.ResponseWriter, status int, name string, v view) {
	t, ok := c.tmpl[name]
	if !ok {
		http.Error(w, "no template "+name, http.StatusInternalServerError)
		return
	}
	var b strings.Builder
	if err := t.ExecuteTemplate(&b, "layout", v); err != nil {
		c.log.Error("console: render", "page", name, "err", err)
		http.Error(w, "render: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(b.String()))
}

func (c *Console) fail(w http.ResponseWriter, _ *http.Request, s *Session, status int, err error) {
	c.render(w, status, "error", view{Title: http.StatusText(status), Session: s, Error: err.Error()})
}

func (c *Console) loginPage(w http.ResponseWriter, r *http.Request) {
	c.render(w, http.StatusOK, "login", view{Title: "Log in", Data: safeNext(r.URL.Query().Get("next"))})
}

func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	user, secret := strings.TrimSpace(r.PostFormValue("user")), r.PostFormValue("password")
	if user == "" {
		secret = r.PostFormValue("token")
	}
	name, role, grant, err := c.check(user, secret)
	if err != nil {
		c.log.Warn("console login refused", "user", user, "remote", r.RemoteAddr)
		c.render(w, http.StatusUnauthorized, "login", view{Title: "Log in", Error: err.Error(), Data: safeNext(r.PostFormValue("next"))})
		return
	}
	id, _, err := c.sessions.create(r.Context(), name, role, grant)
	if err != nil {
		c.log.Error("console login: the session could not be stored", "user", name, "err", err)
		c.render(w, http.StatusServiceUnavailable, "login", view{Title: "Log in", Error: "the hub's stores are not ready (a cluster electing leaders?): try again in a moment", Data: safeNext(r.PostFormValue("next"))})
		return
	}
	c.setCookie(w, id, int(c.sessions.ttl.Seconds()))
	c.log.Info("console login", "user", name, "role", role)
	http.Redirect(w, r, safeNext(r.PostFormValue("next")), http.StatusSeeOther)
}

func (c *Console) logout(w http.ResponseWriter, r *http.Request, _ *Session) {
	if ck, err := r.Cookie(CookieName); err == nil {
		if err := c.sessions.drop(r.Context(), ck.Value); err != nil {
			c.fail(w, r, nil, http.StatusServiceUnavailable, fmt.Errorf("%w: try again in a moment", err))
			return
		}
	}
	c.setCookie(w, "", -1)
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

// safeNext keeps a redirect on this site.
func safeNext(next string) string {
	if !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\r\n") {
		return "/"
	}
	return next
}

func (c *Console) fleet(w http.ResponseWriter, r *http.Request, s *Session) {
	page, _ := strconv.Atoi(r.URL.Query().Get("page"))
	o := BuildOverview(c.b.Devices(), ParseFilter(r.URL.Query()), page, c.now(), c.cfg.OfflineAfter)
	backlog, age := c.b.Pipeline()
	c.render(w, http.StatusOK, "fleet", view{Title: "Fleet", Nav: "fleet", Session: s, Data: struct {
		Overview
		Backlog uint64
		Age     time.Duration
	}{o, backlog, age.Round(time.Millisecond)}})
}

func (c *Console) device(w http.ResponseWriter, r *http.Request, s *Session) {
	id := r.PathValue("id")
	for _, d := range c.b.Devices() {
		if d.ID == id {
			ups := []state.Update{}
			if d.Reported != nil {
				for _, u := range d.Reported.Updates {
					ups = append(ups, u)
				}
			}
			sort.Slice(ups, func(i, j int) bool { return ups[i].Model < ups[j].Model })
			offset, _ := strconv.Atoi(r.URL.Query().Get("tl"))
			c.render(w, http.StatusOK, "device", view{Title: "Device " + id, Nav: "fleet", Session: s, Data: struct {
				state.Device
				Status   string
				Updates  []state.Update
				Timeline timelineView
			}{d, StatusOf(d, c.now(), c.cfg.OfflineAfter), ups, c.timelinePage(r.Context(), id, offset)}})
			return
		}
	}
	c.fail(w, r, s, http.StatusNotFound, fmt.Errorf("no device %q", id))
}

func (c *Console) rollouts(w http.ResponseWriter, r *http.Request, s *Session) {
	list, err := c.b.Rollouts(r.Context())
	if err != nil {
		c.fail(w, r, s, http.StatusServiceUnavailable, err)
		return
	}
	c.render(w, http.StatusOK, "rollouts", view{Title: "Rollouts", Nav: "rollouts", Session: s, Data: list})
}

// waveView is one wave of a rollout page.
type waveView struct {
	N       int
	Size    string
	Current bool
	Devices []deviceProgress
	Phases  []Count
}

type deviceProgress struct {
	ID string
	*rollout.Device
}

// gateView is a gate's limit beside the value measured in the current wave.
type gateView struct {
	Name, Limit, Measured string
	OK                    bool
	Verdict               string // within, outside, or waiting (devices still updating)
}

func (c *Console) rolloutPage(w http.ResponseWriter, r *http.Request, s *Session) {
	ro, err := c.b.Rollout(r.Context(), r.PathValue("id"))
	if errors.Is(err, rollout.ErrNotFound) {
		c.fail(w, r, s, http.StatusNotFound, err)
		return
	}
	if err != nil {
		c.fail(w, r, s, http.StatusServiceUnavailable, err)
		return
	}
	c.render(w, http.StatusOK, "rollout", view{Title: "Rollout " + ro.ID, Nav: "rollouts", Session: s, Flash: r.URL.Query().Get("done"), Data: struct {
		*rollout.Rollout
		Waves   []waveView
		Gates   []gateView
		Actions []string
	}{ro, waves(ro), gates(ro), actionsFor(ro.State)}})
}

// actionsFor are the buttons that make sense in a state.
func actionsFor(st string) []string {
	switch st {
	case rollout.Running, rollout.Baking:
		return []string{"pause", "abort", "rollback"}
	case rollout.Paused:
		return []string{"resume", "abort", "rollback"}
	case rollout.Completed:
		return []string{"rollback"}
	}
	return nil
}

func waves(ro *rollout.Rollout) []waveView {
	out := make([]waveView, len(ro.Spec.Waves))
	for i, wv := range ro.Spec.Waves {
		out[i] = waveView{N: i + 1, Size: wv.String(), Current: i == ro.Wave && rollout.Active(ro.State)}
	}
	phases := make([]map[string]int, len(out))
	for _, id := range sortedKeys(ro.Devices) {
		d := ro.Devices[id]
		if d.Wave < 0 || d.Wave >= len(out) {
			continue
		}
		out[d.Wave].Devices = append(out[d.Wave].Devices, deviceProgress{id, d})
		if phases[d.Wave] == nil {
			phases[d.Wave] = map[string]int{}
		}
		phases[d.Wave][d.Phase]++
	}
	for i := range out {
		out[i].Phases = sortedCounts(phases[i], nil)
	}
	return out
}

// gates measures the current wave (the last one for an ended rollout) the
// way the controller does: the share of its devices committed, the worst
// error rate, the worst latency factor, the fewest inferences, the lowest
// shadow agreement.
func gates(ro *rollout.Rollout) []gateView {
	g := ro.Spec.Gates
	wave := ro.Wave
	var n, committed, open int
	var worstErr, worstLat float64
	minInf, minAgree := int64(-1), -1.0
	for _, d := range ro.Devices {
		if d.Wave != wave {
			continue
		}
		n++
		if !state.Terminal(d.Phase) {
			open++
		}
		if d.Phase == state.PhaseCommitted {
			committed++
			if minInf < 0 || d.Health.Inferences < minInf {
				minInf = d.Health.Inferences
			}
		}
		if rows := d.Health.Inferences + d.Health.Errors; rows > 0 {
			worstErr = max(worstErr, float64(d.Health.Errors)/float64(rows))
		}
		if d.Health.BaselineLatencyUS > 0 && d.Health.MeanLatencyUS > 0 {
			worstLat = max(worstLat, d.Health.MeanLatencyUS/d.Health.BaselineLatencyUS)
		}
		if d.Shadow != nil && d.Shadow.Rows > 0 && (minAgree < 0 || d.Shadow.Agreement < minAgree) {
			minAgree = d.Shadow.Agreement
		}
	}
	share := 0.0
	if n > 0 {
		share = float64(committed) / float64(n)
	}
	f := func(v float64) string { return strconv.FormatFloat(v, 'g', 4, 64) }
	out := []gateView{
		{Name: "min_healthy (share of the wave committed)", Limit: f(g.MinHealthy), Measured: fmt.Sprintf("%s (%d of %d)", f(share), committed, n), OK: n > 0 && share >= g.MinHealthy},
		{Name: "max_error_rate (worst device)", Limit: f(g.MaxErrorRate), Measured: f(worstErr), OK: worstErr <= g.MaxErrorRate},
		{Name: "max_latency_factor (worst device)", Limit: f(g.MaxLatencyFactor), Measured: f(worstLat), OK: worstLat <= g.MaxLatencyFactor},
	}
	if g.MinInferences > 0 {
		m := "—"
		if minInf >= 0 {
			m = strconv.FormatInt(minInf, 10)
		}
		out = append(out, gateView{Name: "min_inferences (fewest of the committed)", Limit: strconv.FormatInt(g.MinInferences, 10), Measured: m, OK: minInf < 0 || minInf >= g.MinInferences})
	}
	if g.MinAgreement > 0 {
		m := "—"
		if minAgree >= 0 {
			m = f(minAgree)
		}
		out = append(out, gateView{Name: "min_agreement (lowest shadow agreement)", Limit: f(g.MinAgreement), Measured: m, OK: minAgree < 0 || minAgree >= g.MinAgreement})
	}
	for i := range out {
		switch {
		case out[i].OK:
			out[i].Verdict = "within"
		case i == 0 && open > 0 && rollout.Active(ro.State):
			out[i].Verdict, out[i].OK = "waiting", true // devices still updating
		default:
			out[i].Verdict = "outside"
		}
	}
	return out
}

func (c *Console) rolloutAction(w http.ResponseWriter, r *http.Request, s *Session) {
	id, action := r.PathValue("id"), r.PathValue("action")
	known := false
	for _, a := range RolloutActions {
		known = known || a == action
	}
	if !known {
		c.fail(w, r, s, http.StatusNotFound, fmt.Errorf("no action %q", action))
		return
	}
	_, err := c.b.RolloutAction(r.Context(), id, action, s.User)
	c.record(r.Context(), s, "rollout "+action, id, err)
	switch {
	case errors.Is(err, rollout.ErrNotFound):
		c.fail(w, r, s, http.StatusNotFound, err)
	case errors.Is(err, rollout.ErrInvalid) || errors.Is(err, rollout.ErrConflict):
		c.fail(w, r, s, http.StatusConflict, err)
	case err != nil:
		c.fail(w, r, s, http.StatusServiceUnavailable, err)
	default:
		http.Redirect(w, r, "/rollouts/"+id+"?done="+urlQueryEscape(action), http.StatusSeeOther)
	}
}

// record writes an audit entry for an operator action; a failure to write
// it is logged (the action is already done).
func (c *Console) record(ctx context.Context, s *Session, action, target string, err error) {
	result := "ok"
	if err != nil {
		result = err.Error()
	}
	c.log.Info("console action", "user", s.User, "role", s.Role, "action", action, "target", target, "result", result)
	if c.audit == nil {
		return
	}
	if aerr := c.audit.Record(context.WithoutCancel(ctx), Entry{Who: s.User, Role: s.Role, Via: "console", Action: action, Target: target, Result: result}); aerr != nil {
		c.log.Error("console: audit entry not stored", "err", aerr)
	}
}

// modelView is a model with its versions.
type modelView struct {
	modelstore.Summary
	Versions []modelstore.Version
	Running  map[int64]int // devices reporting each version
	Lineage  []*lineageNode
}

func (c *Console) models(w http.ResponseWriter, r *http.Request, s *Session) {
	list, err := c.b.Models(r.Context())
	if err != nil {
		c.fail(w, r, s, http.StatusServiceUnavailable, err)
		return
	}
	running := c.running()
	var out []modelView
	for _, m := range list {
		vs, err := c.b.ModelVersions(r.Context(), m.Name)
		if err != nil {
			c.fail(w, r, s, http.StatusServiceUnavailable, err)
			return
		}
		sort.Slice(vs, func(i, j int) bool { return vs[i].Version > vs[j].Version })
		out = append(out, modelView{m, vs, running[m.Name], Lineage(vs)})
	}
	c.render(w, http.StatusOK, "models", view{Title: "Models", Nav: "models", Session: s, Data: out})
}

func (c *Console) auditPage(w http.ResponseWriter, r *http.Request, s *Session) {
	var entries []Entry
	var err error
	if c.audit != nil {
		entries, err = c.audit.Recent(r.Context(), 200)
	}
	v := view{Title: "Audit log", Nav: "audit", Session: s, Data: entries}
	if err != nil {
		v.Error = err.Error()
	}
	c.render(w, http.StatusOK, "audit", v)
}
