package console

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/outpost-edge/outpost/hub/api"
	"github.com/outpost-edge/outpost/hub/modelstore"
	"github.com/outpost-edge/outpost/hub/rollout"
	"github.com/outpost-edge/outpost/sync/state"
)

var now = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

type fakeBackend struct {
	devs    []state.Device
	ro      *rollout.Rollout
	actions []string
	history []api.TrainingEvent
	histErr error
	// The streams page: the counters, the dead letters or the error
	// reading them, and the lease's holder.
	counters StreamCounters
	dead     []DeadLetter
	deadErr  error
	holder   string
}

func (f *fakeBackend) Training(context.Context) []api.TrainingStatus {
	return []api.TrainingStatus{{Model: "bearing", Pipeline: "vibration", Production: 1, Champion: 2, Labelled: 4200, Drifts: 1, Releases: 1}}
}
func (f *fakeBackend) TrainingHistory(_ context.Context, model string) ([]api.TrainingEvent, bool, error) {
	if model != "bearing" {
		return nil, false, nil
	}
	return f.history, true, f.histErr
}

func (f *fakeBackend) Devices() []state.Device { return f.devs }
func (f *fakeBackend) Rollouts(context.Context) ([]*rollout.Rollout, error) {
	return []*rollout.Rollout{f.ro}, nil
}
func (f *fakeBackend) Rollout(_ context.Context, id string) (*rollout.Rollout, error) {
	if id != f.ro.ID {
		return nil, rollout.ErrNotFound
	}
	return f.ro, nil
}
func (f *fakeBackend) RolloutAction(_ context.Context, id, action, who string) (*rollout.Rollout, error) {
	f.actions = append(f.actions, who+" "+action+" "+id)
	return f.ro, nil
}
func (f *fakeBackend) Models(context.Context) ([]modelstore.Summary, error) {
	return []modelstore.Summary{{Name: "bearing", Latest: 2, Production: 1, Versions: 2}}, nil
}
func (f *fakeBackend) ModelVersions(context.Context, string) ([]modelstore.Version, error) {
	return []modelstore.Version{{Name: "bearing", Version: 1, Stage: "production", Size: 2048, Metrics: map[string]float64{"accuracy": 0.93}},
		{Name: "bearing", Version: 2, Parent: 1, Stage: "candidate", Size: 4096}}, nil
}
func (f *fakeBackend) Pipeline() (uint64, time.Duration) { return 7, time.Second }
func (f *fakeBackend) StreamCounters() StreamCounters    { return f.counters }
func (f *fakeBackend) DeadLetters(_ context.Context, n int) ([]DeadLetter, error) {
	return f.dead[:min(n, len(f.dead))], f.deadErr
}
func (f *fakeBackend) PipelineLease(context.Context) (string, string, error) {
	return f.holder, "hub-a", nil
}
func (f *fakeBackend) StartRollout(_ context.Context, spec rollout.Spec, who string) (*rollout.Rollout, error) {
	f.actions = append(f.actions, who+" start "+spec.Model)
	return f.ro, nil
}
func (f *fakeBackend) Timeline(_ context.Context, device string, offset, n int) ([]TimelineEntry, int, error) {
	return []TimelineEntry{{At: now, Device: device, Kind: KindEnrolled, Detail: "enrolled by admin"}}, 1, nil
}

// fleet is n devices: every 10th never reported, every 7th is updating.
func fleet(n int) []state.Device {
	devs := make([]state.Device, n)
	for i := range devs {
		id := fmt.Sprintf("dev-%05d", i)
		devs[i] = state.Device{ID: id, Labels: map[string]string{"site": fmt.Sprintf("s%d", i%4), "arch": "arm64"}, CreatedAt: now.Add(-time.Hour)}
		if i%10 == 0 {
			continue
		}
		r := &state.Reported{Device: id, AgentVersion: "0.9.0", Build: 3, Status: state.StatusRunning, ReportedAt: now.Add(-10 * time.Second),
			Models: []state.ModelStatus{{Pipeline: "vibration", Model: "bearing", Version: 1 + int64(i%2), Slot: "a"}}, Outbox: &state.Outbox{Records: 1}}
		if i%7 == 0 {
			r.Updates = map[string]state.Update{"bearing": {Model: "bearing", From: 1, To: 2, Phase: state.PhaseDownloading}}
		}
		devs[i].Reported = r
	}
	return devs
}

const operatorPass, viewerPass = "op-secret", "view-secret"

func newTestConsole(t *testing.T, b Backend) (*httptest.Server, *Console) {
	t.Helper()
	hash := func(p string) string {
		h, err := bcrypt.GenerateFromPassword([]byte(p), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		return string(h)
	}
	cfg := Defaults()
	cfg.Users = []User{{Name: "olga", PasswordHash: hash(operatorPass), Role: Operator}, {Name: "vic", PasswordHash: hash(viewerPass), Role: Viewer}}
	c, err := New(cfg, b, Options{AdminToken: "tok", Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	c.Routes(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv, c
}

// client logs in and returns a client holding the session cookie.
func client(t *testing.T, base string, form url.Values) *http.Client {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	cl := &http.Client{Jar: jar}
	resp, err := cl.PostForm(base+"/login", form)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Request.URL.Path != "/" {
		t.Fatalf("login %v: %d at %s", form, resp.StatusCode, resp.Request.URL)
	}
	return cl
}

func get(t *testing.T, cl *http.Client, u string) (int, string) {
	t.Helper()
	resp, err := cl.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

var rowRE = regexp.MustCompile(`<tr data-device="([^"]+)"`)

// The overview of 10,000 devices renders 50 rows per page, counts the
// whole fleet and links the pages; filters keep to the links.
func TestFleetOverviewPages10000Devices(t *testing.T) {
	b := &fakeBackend{devs: fleet(10000), ro: &rollout.Rollout{ID: "r1"}}
	srv, _ := newTestConsole(t, b)
	cl := client(t, srv.URL, url.Values{"token": {"tok"}})

	code, body := get(t, cl, srv.URL+"/")
	if code != http.StatusOK {
		t.Fatalf("fleet: %d %s", code, body)
	}
	rows := rowRE.FindAllStringSubmatch(body, -1)
	if len(rows) != PageSize || rows[0][1] != "dev-00000" || rows[49][1] != "dev-00049" {
		t.Fatalf("first page: %d rows, %v", len(rows), rows[:min(len(rows), 2)])
	}
	for _, want := range []string{"page 1 of 200", `href="/?page=2" id="next"`, "bearing v1", "bearing v2", `data-status="offline"><b>1000</b>`, "site=s1 <b>2500</b>"} {
		if !strings.Contains(body, want) {
			t.Errorf("first page lacks %q", want)
		}
	}
	if strings.Contains(body, `id="prev"`) {
		t.Error("first page links a previous page")
	}
	code, body = get(t, cl, srv.URL+"/?page=200")
	rows = rowRE.FindAllStringSubmatch(body, -1)
	if code != http.StatusOK || len(rows) != 50 || rows[49][1] != "dev-09999" || !strings.Contains(body, `href="/?page=199" id="prev"`) || strings.Contains(body, `id="next"`) {
		t.Fatalf("last page: %d, %d rows", code, len(rows))
	}
	// A label filter, a search and a status, kept in the paging links.
	_, body = get(t, cl, srv.URL+"/?label=site%3Ds1&q=dev-0&status=online")
	rows = rowRE.FindAllStringSubmatch(body, -1)
	if len(rows) != 50 {
		t.Fatalf("filtered: %d rows", len(rows))
	}
	for _, r := range rows {
		var i int
		fmt.Sscanf(r[1], "dev-%d", &i)
		if i%4 != 1 || i%10 == 0 || i%7 == 0 {
			t.Fatalf("filter let %s through", r[1])
		}
	}
	if !strings.Contains(body, `href="/?label=site%3Ds1&amp;page=2&amp;q=dev-0&amp;status=online" id="next"`) {
		t.Errorf("filtered next link lost the filter: %s", regexp.MustCompile(`<p class="pager".*?</p>`).FindString(strings.ReplaceAll(body, "\n", " ")))
	}
}

func TestStatusOf(t *testing.T) {
	run := &state.Reported{Status: state.StatusRunning, ReportedAt: now.Add(-time.Second)}
	rev := now
	for want, d := range map[string]state.Device{
		Offline:  {},
		Revoked:  {RevokedAt: &rev, Reported: run},
		Online:   {Reported: run},
		Updating: {Reported: &state.Reported{Status: state.StatusRunning, ReportedAt: now, Updates: map[string]state.Update{"m": {Phase: state.PhaseProbation}}}},
		Degraded: {Reported: &state.Reported{Status: state.StatusRunning, ReportedAt: now, Updates: map[string]state.Update{"m": {Phase: state.PhaseRolledBack}}}},
	} {
		if got := StatusOf(d, now, time.Minute); got != want {
			t.Errorf("%+v: %s, want %s", d, got, want)
		}
	}
	if got := StatusOf(state.Device{Reported: &state.Reported{Status: state.StatusRunning, ReportedAt: now.Add(-2 * time.Minute)}}, now, time.Minute); got != Offline {
		t.Errorf("silent device: %s", got)
	}
}

// Roles and CSRF: a viewer sees no buttons and is refused the POST; an
// operator's POST without the session's token is refused; with it, the
// action runs and the cookie is HttpOnly and SameSite=Strict.
func TestRolesAndCSRF(t *testing.T) {
	b := &fakeBackend{devs: fleet(3), ro: &rollout.Rollout{ID: "r1", State: rollout.Running, Spec: rollout.Spec{Model: "bearing", Version: 2, Waves: []rollout.Wave{{Devices: 1}}}}}
	srv, _ := newTestConsole(t, b)

	resp, err := http.PostForm(srv.URL+"/login", url.Values{"user": {"vic"}, "password": {"wrong"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("wrong password: %d", resp.StatusCode)
	}
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err = noRedirect.PostForm(srv.URL+"/login", url.Values{"user": {"olga"}, "password": {operatorPass}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	ck := resp.Cookies()
	if len(ck) != 1 || !ck[0].HttpOnly || ck[0].SameSite != http.SameSiteStrictMode || ck[0].Secure {
		t.Fatalf("session cookie %+v", ck)
	}

	viewer := client(t, srv.URL, url.Values{"user": {"vic"}, "password": {viewerPass}})
	_, body := get(t, viewer, srv.URL+"/rollouts/r1")
	if strings.Contains(body, `id="btn-pause"`) || !strings.Contains(body, `id="read-only"`) {
		t.Error("a viewer sees the pause button")
	}
	csrf := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(body)[1]
	resp, err = viewer.PostForm(srv.URL+"/rollouts/r1/pause", url.Values{"csrf": {csrf}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("viewer pause: %d", resp.StatusCode)
	}

	op := client(t, srv.URL, url.Values{"user": {"olga"}, "password": {operatorPass}})
	_, body = get(t, op, srv.URL+"/rollouts/r1")
	if !strings.Contains(body, `id="btn-pause"`) {
		t.Fatal("an operator sees no pause button")
	}
	csrf = regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(body)[1]
	for _, bad := range []url.Values{{}, {"csrf": {"forged"}}} {
		resp, err = op.PostForm(srv.URL+"/rollouts/r1/pause", bad)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Fatalf("pause with csrf %v: %d", bad, resp.StatusCode)
		}
	}
	if len(b.actions) != 0 {
		t.Fatalf("refused posts acted: %v", b.actions)
	}
	resp, err = op.PostForm(srv.URL+"/rollouts/r1/pause", url.Values{"csrf": {csrf}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || len(b.actions) != 1 || b.actions[0] != "olga pause r1" {
		t.Fatalf("operator pause: %d, actions %v", resp.StatusCode, b.actions)
	}
	// Unauthenticated: the login page; the models page renders.
	resp, err = noRedirect.Get(srv.URL + "/models")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/login?next=") {
		t.Fatalf("anonymous: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	if code, body := get(t, op, srv.URL+"/models"); code != http.StatusOK || !strings.Contains(body, "accuracy 0.93") || !strings.Contains(body, "4.0 KiB") {
		t.Fatalf("models: %d", code)
	}
	if code, body := get(t, op, srv.URL+"/devices/dev-00001"); code != http.StatusOK || !strings.Contains(body, "vibration") {
		t.Fatalf("device: %d %s", code, body)
	}
}

func TestSafeNext(t *testing.T) {
	for in, want := range map[string]string{"/rollouts": "/rollouts", "//evil.example": "/", "https://evil.example": "/", "": "/", "/\\evil": "/"} {
		if got := safeNext(in); got != want {
			t.Errorf("safeNext(%q) = %q", in, got)
		}
	}
}

// The device page's Health card shows each pipeline's live figures and
// the uplink, and says so when the agent reports neither.
func TestDevicePageHealth(t *testing.T) {
	devs := fleet(3)
	ack := now.Add(-4 * time.Second)
	r := devs[1].Reported
	r.Outbox = &state.Outbox{Records: 12, Bytes: 3072}
	r.Pipelines = []state.PipelineHealth{
		{Pipeline: "vibration", Model: "bearing", Version: 2, Events: 90000, Windows: 3000, Inferences: 2990, InferErrors: 10, NaN: 3, Late: 4, Rejected: 5, Calls: 750,
			RateSeconds: 30, InferencesPerSec: 12.5, EventsPerSec: 300, LatencyCalls: 256, LatencyP50US: 4.25, LatencyP99US: 15300, RowsPerCall: 4},
		{Pipeline: "raw", Events: 7},
	}
	r.Uplink = &state.Uplink{Connected: true, Broker: "ssl://hub.example:8883", Reconnects: 2, LastAckAt: &ack, AckErrors: 1}
	srv, _ := newTestConsole(t, &fakeBackend{devs: devs, ro: &rollout.Rollout{ID: "r1"}})
	viewer := client(t, srv.URL, url.Values{"user": {"vic"}, "password": {viewerPass}})

	code, body := get(t, viewer, srv.URL+"/devices/dev-00001")
	if code != http.StatusOK {
		t.Fatalf("device page: %d", code)
	}
	row := regexp.MustCompile(`(?s)<tr id="health-vibration">.*?</tr>`).FindString(body)
	for _, want := range []string{"bearing v2", "12.5/s", "300/s", "0.33%", "0.10%", "4.2 µs / 15.3 ms", "(256 calls)", "4.0", "90000 events", "2990 inferences", "4 late", "5 rejected"} {
		if !strings.Contains(row, want) {
			t.Errorf("vibration row lacks %q:\n%s", want, row)
		}
	}
	// A pipeline without a model, and with no call yet: dashes.
	if row := regexp.MustCompile(`(?s)<tr id="health-raw">.*?</tr>`).FindString(body); !strings.Contains(row, "<td>—</td>") || strings.Contains(row, "µs") {
		t.Errorf("raw row:\n%s", row)
	}
	uplink := regexp.MustCompile(`(?s)<p id="uplink">.*?</p>`).FindString(body)
	for _, want := range []string{"connected to <code>ssl://hub.example:8883</code>", "last ack 4s ago", "1 ack errors", "2 reconnects", "outbox 12 records, 3.0 KiB"} {
		if !strings.Contains(uplink, want) {
			t.Errorf("uplink line lacks %q:\n%s", want, uplink)
		}
	}

	// An older agent: no live health, and the card says why.
	_, body = get(t, viewer, srv.URL+"/devices/dev-00002")
	card := regexp.MustCompile(`(?s)<section class="card" id="health">.*?</section>`).FindString(body)
	if !strings.Contains(card, "not reported by this agent version (0.9.0)") || strings.Contains(card, `id="health-`) || strings.Contains(card, `id="uplink"`) {
		t.Errorf("health card of an agent that reports none:\n%s", card)
	}
	// A device that never reported.
	_, body = get(t, viewer, srv.URL+"/devices/dev-00000")
	if card := regexp.MustCompile(`(?s)<section class="card" id="health">.*?</section>`).FindString(body); !strings.Contains(card, "has not reported yet") {
		t.Errorf("health card of a device that never reported:\n%s", card)
	}
}
