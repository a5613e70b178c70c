package console_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/nats-io/nats.go"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/crypto/bcrypt"

	"github.com/outpost-edge/outpost/hub"
	"github.com/outpost-edge/outpost/hub/console"
	"github.com/outpost-edge/outpost/hub/modelstore"
	"github.com/outpost-edge/outpost/models/goengine"
	"github.com/outpost-edge/outpost/models/manifest"
	"github.com/outpost-edge/outpost/models/onnx"
	"github.com/outpost-edge/outpost/sync/state"
	"github.com/outpost-edge/outpost/sync/topics"
	"github.com/outpost-edge/outpost/test/browsertest"
	"github.com/outpost-edge/outpost/test/fleettest"
	"github.com/outpost-edge/outpost/test/kafkatest"
)

func TestMain(m *testing.M) { os.Exit(kafkatest.Main(m)) }

const adminToken = "console-test-admin-token"

// push registers version v of a small logistic "bearing" model.
func push(t *testing.T, h *hub.Hub, v int64) {
	t.Helper()
	model, err := onnx.Logistic([][]float32{{0.5, -0.25}}, []float32{float32(v) / 10})
	if err != nil {
		t.Fatal(err)
	}
	eng, err := goengine.Load(model)
	if err != nil {
		t.Fatal(err)
	}
	out, err := eng.Run([]float32{0, 0}, 2)
	if err != nil {
		t.Fatal(err)
	}
	m := &manifest.Manifest{Name: "bearing", Version: v, Parent: v - 1, Task: "anomaly",
		Features: []manifest.Feature{{Field: "vibration", Agg: "mean", Std: 1}, {Field: "vibration", Agg: "max", Std: 1}},
		Outputs:  manifest.Outputs{Threshold: 0.5}, Golden: []manifest.Golden{{Input: []float32{0, 0}, Output: out, Tolerance: 1e-4}},
		Metrics: map[string]float64{"accuracy": 0.9 + float64(v)/100, "f1": 0.8}}
	if v == 2 {
		m.Quantization = "int8-dynamic"
	}
	dir := t.TempDir()
	if err := manifest.Write(dir, m, model); err != nil {
		t.Fatal(err)
	}
	mj, _ := os.ReadFile(filepath.Join(dir, manifest.ManifestFile))
	if _, err := h.PushModel(context.Background(), modelstore.PushRequest{Manifest: mj, Model: model}); err != nil {
		t.Fatal(err)
	}
}

func api(t *testing.T, method, url string, body any, hdr map[string]string) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, url, rd)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

// TestConsoleInChromium drives the console in headless Chromium against a
// real hub on the real Kafka broker: log in with the admin token, see the
// devices with their model versions, open a device, open a rollout and
// pause it, refuse a forged cross-origin POST, and as a viewer find no
// buttons and have the console and the API refuse the action. The pause
// is in the audit log page and in outpost.events. A login and the device
// timeline outlive a hub restart.
func TestConsoleInChromium(t *testing.T) {
	brokers := kafkatest.Brokers(t)
	cfg := hub.Defaults()
	cfg.DataDir = t.TempDir()
	cfg.Broker.ServerName = "hub-console-test"
	cfg.Broker.NATSPort, cfg.Broker.MQTTPort = -1, -1
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.HTTP.AdminToken = adminToken
	cfg.Kafka.Brokers = brokers
	cfg.Kafka.TopicPrefix = fmt.Sprintf("t%d.", time.Now().UnixNano())
	cfg.Kafka.Partitions = 1
	cfg.Log.Level = "warn"
	vh, _ := bcrypt.GenerateFromPassword([]byte("viewer-pass"), bcrypt.MinCost)
	cfg.Console.Users = []console.User{{Name: "vic", PasswordHash: string(vh), Role: console.Viewer}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	h, err := hub.Start(context.Background(), cfg, fleettest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { h.Close() }() // restarted below
	base := "http://" + h.HTTPAddr()
	bearer := map[string]string{"Authorization": "Bearer " + adminToken}

	// Three devices, enrolled through the API, report as agents do (on
	// their reported subject), running bearing v1.
	nc, err := nats.Connect(h.NATSURL(), nats.UserInfo(h.Registry().Internal()))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ids := []string{"pump-1", "pump-2", "pump-3"}
	for i, id := range ids {
		if code, out := api(t, "POST", base+"/v1/devices", map[string]any{"id": id, "labels": map[string]string{"site": "lab", "line": fmt.Sprint(i % 2)}}, bearer); code != http.StatusCreated {
			t.Fatalf("enrol %s: %d %s", id, code, out)
		}
		rep := state.Reported{Device: id, AgentVersion: "0.9.0-test", Build: 4, Arch: "arm64", Boot: 1, Status: state.StatusRunning,
			StartedAt: time.Now().UTC(), ReportedAt: time.Now().UTC(), Outbox: &state.Outbox{Records: int64(10 * i), Bytes: 1000},
			Models: []state.ModelStatus{{Pipeline: "vibration", Model: "bearing", Version: 1, Slot: "a"}}}
		data, _ := json.Marshal(rep)
		if err := nc.Publish(topics.Subject(topics.Reported(id)), data); err != nil {
			t.Fatal(err)
		}
	}
	nc.Flush()
	push(t, h, 1)
	push(t, h, 2)
	deadline := time.Now().Add(10 * time.Second)
	for len(h.Devices()) < 3 || h.Devices()[2].Reported == nil {
		if time.Now().After(deadline) {
			t.Fatal("the reports did not arrive")
		}
		time.Sleep(50 * time.Millisecond)
	}
	code, out := api(t, "POST", base+"/v1/rollouts", map[string]any{"model": "bearing", "version": 2, "selector": map[string]string{"site": "lab"},
		"waves": []map[string]any{{"devices": 1}, {"percent": 100}}, "wave_timeout": "10m"}, bearer)
	if code != http.StatusCreated {
		t.Fatalf("start rollout: %d %s", code, out)
	}
	var ro struct{ ID, State string }
	_ = json.Unmarshal(out, &ro)

	// A page on another origin that forges a POST to the hub.
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, `<form id="f" method="post" action="%s/rollouts/%s/resume"><input type="hidden" name="csrf" value="forged"><button id="prize">Claim your prize</button></form>`, base, ro.ID)
	}))
	defer evil.Close()

	b := browsertest.Start(t, 90*time.Second)
	ctx, shot, run, text := b.Ctx, b.Shot, b.Run, b.Text
	eval := func(js string) int { t.Helper(); return browsertest.Eval[int](b, js) }
	// fetchStatus POSTs from the page (its cookies) and returns the status.
	fetchStatus := func(url, body string, hdr map[string]string) int {
		t.Helper()
		h, _ := json.Marshal(hdr)
		return eval(fmt.Sprintf(`fetch(%q, {method: "POST", headers: Object.assign({"Content-Type": "application/x-www-form-urlencoded"}, %s), body: %q}).then(r => r.status)`, url, h, body))
	}

	// 1. Log in with the admin token.
	run("log in",
		chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(chromedp.CSS("#token-login")),
		chromedp.SendKeys(chromedp.CSS("#token"), adminToken),
		chromedp.Submit(chromedp.CSS("#token")),
		chromedp.WaitVisible(chromedp.CSS("#devices")),
		shot("fleet"))
	if who := text("#whoami"); !strings.Contains(who, "admin") || !strings.Contains(who, "operator") {
		t.Fatalf("logged in as %q", who)
	}
	// 2. The device list with model versions.
	list := text("#devices")
	for _, id := range ids {
		if !strings.Contains(list, id) {
			t.Errorf("device list lacks %s: %s", id, list)
		}
	}
	if !strings.Contains(list, "vibration: bearing v1") || !strings.Contains(text("#versions"), "bearing v1") || !strings.Contains(strings.Join(strings.Fields(text("#by-status")), " "), "3 online") {
		t.Errorf("fleet page: %q / %q / %q", list, text("#versions"), text("#by-status"))
	}
	// 3. A device page.
	run("open a device",
		chromedp.Click(chromedp.CSS(`a[href="/devices/pump-2"]`)),
		chromedp.WaitVisible(chromedp.CSS("#device-id")),
		shot("device"))
	if text("#device-id") != "pump-2" || !strings.Contains(text("#pipelines"), "bearing") || text("#agent-version") != "0.9.0-test" || !strings.Contains(text("#device-labels"), "site=lab") {
		t.Errorf("device page: %q %q %q", text("#device-id"), text("#pipelines"), text("#agent-version"))
	}
	// 3b. Its timeline: the enrolment and the first report, then an update
	// phase the device reports (the timeline is written asynchronously).
	waitTimeline := func(want string) string {
		t.Helper()
		var tl string
		for end := time.Now().Add(15 * time.Second); ; {
			run("device timeline", chromedp.Navigate(base+"/devices/pump-2"), chromedp.WaitVisible(chromedp.CSS("#timeline")))
			if tl = text("#timeline"); strings.Contains(tl, want) || time.Now().After(end) {
				return tl
			}
			time.Sleep(300 * time.Millisecond)
		}
	}
	if tl := waitTimeline("first report"); !strings.Contains(tl, "enrolled by admin") || !strings.Contains(tl, "vibration runs bearing v1") {
		t.Errorf("timeline after enrolment and report: %q", tl)
	}
	rep := state.Reported{Device: "pump-2", AgentVersion: "0.9.0-test", Build: 4, Arch: "arm64", Boot: 2, Status: state.StatusRunning,
		StartedAt: time.Now().UTC(), ReportedAt: time.Now().UTC(),
		Models:  []state.ModelStatus{{Pipeline: "vibration", Model: "bearing", Version: 1, Slot: "a"}},
		Updates: map[string]state.Update{"bearing": {Model: "bearing", From: 1, To: 7, Phase: state.PhaseFailed, Reason: "test: disk full", At: time.Now().UTC()}}}
	data, _ := json.Marshal(rep)
	if err := nc.Publish(topics.Subject(topics.Reported("pump-2")), data); err != nil {
		t.Fatal(err)
	}
	if tl := waitTimeline("test: disk full"); !strings.Contains(tl, "bearing v1 → v7: failed") || !strings.Contains(tl, "restarted (boot 1 → 2)") {
		t.Errorf("timeline after a reported update: %q", tl)
	}
	run("timeline shot", shot("timeline"))
	// 4. Open the rollout and pause it.
	run("open the rollout",
		chromedp.Navigate(base+"/rollouts"),
		chromedp.WaitVisible(chromedp.CSS("#rollouts")),
		chromedp.Click(chromedp.CSS(`a[href="/rollouts/`+ro.ID+`"]`)),
		chromedp.WaitVisible(chromedp.CSS("#rollout-state")))
	if st := text("#rollout-state"); st != "running" {
		t.Fatalf("rollout state %q", st)
	}
	if g := text("#gates"); !strings.Contains(g, "min_healthy") || !strings.Contains(g, "max_error_rate") {
		t.Errorf("gates: %q", g)
	}
	run("pause",
		browsertest.Confirm(),
		chromedp.Click(chromedp.CSS("#btn-pause")),
		chromedp.WaitVisible(chromedp.CSS("#flash")),
		shot("rollout"))
	if st := text("#rollout-state"); st != "paused" {
		t.Fatalf("after pause the page shows %q", st)
	}
	if code, out := api(t, "GET", base+"/v1/rollouts/"+ro.ID, nil, bearer); code != 200 || !strings.Contains(string(out), `"state":"paused"`) {
		t.Fatalf("API after pause: %d %s", code, out)
	}
	// 5. CSRF: a forged cross-origin form, and the page's own cookie
	// without the token, on the console and on the API.
	run("forged form page", chromedp.Navigate(evil.URL), chromedp.WaitVisible(chromedp.CSS("#prize")))
	fctx, fcancel := context.WithTimeout(ctx, 15*time.Second)
	if err := chromedp.Do(fctx, chromedp.Click(chromedp.CSS("#prize")), chromedp.WaitVisible(chromedp.CSS("#error"))); err != nil {
		where, _ := chromedp.Run(ctx, chromedp.Location())
		body, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
		t.Fatalf("forged form: %v (page %s: %.500q)", err, where, body)
	}
	fcancel()
	if e := text("#error"); !strings.Contains(e, "CSRF") {
		t.Errorf("forged post: %q", e)
	}
	run("back", chromedp.Navigate(base+"/rollouts/"+ro.ID), chromedp.WaitVisible(chromedp.CSS("#rollout-state")))
	if c := fetchStatus("/rollouts/"+ro.ID+"/resume", "csrf=forged", nil); c != http.StatusForbidden {
		t.Errorf("console POST with a forged token: %d", c)
	}
	if c := fetchStatus("/v1/rollouts/"+ro.ID+"/resume", "", nil); c != http.StatusForbidden {
		t.Errorf("API POST with the cookie and no CSRF header: %d", c)
	}
	if st := text("#rollout-state"); st != "paused" {
		t.Fatalf("a refused POST changed the rollout: %q", st)
	}
	// The audit log shows the pause.
	run("audit", chromedp.Navigate(base+"/audit"), chromedp.WaitVisible(chromedp.CSS("#audit")))
	if a := text("#audit"); !strings.Contains(a, "rollout pause") || !strings.Contains(a, ro.ID) || !strings.Contains(a, "POST /v1/rollouts") {
		t.Errorf("audit page: %q", a)
	}
	// 5b. Start a rollout from the form, after a preview of its devices.
	run("rollout form preview",
		chromedp.Navigate(base+"/rollouts"),
		chromedp.Click(chromedp.CSS("#new-rollout")),
		chromedp.WaitVisible(chromedp.CSS("#rollout-form")),
		chromedp.SendKeys(chromedp.CSS("#f-version"), "2"),
		chromedp.SendKeys(chromedp.CSS("#f-selector"), "line=0"),
		chromedp.Click(chromedp.CSS("#btn-preview")),
		chromedp.WaitVisible(chromedp.CSS("#preview")),
		shot("rollout-form"))
	pv := text("#preview-devices")
	if n := text("#preview-count"); n == "0" || n == "" || strings.Contains(pv, "pump-2") {
		t.Errorf("preview: %q devices: %q", n, pv)
	}
	run("start from the form", browsertest.Confirm(), chromedp.Click(chromedp.CSS("#btn-start")), chromedp.WaitVisible(chromedp.CSS("#flash")))
	formID, err := chromedp.Run(ctx, chromedp.Evaluate[string](`location.pathname.split("/").pop()`))
	if err != nil || formID == ro.ID || !strings.HasPrefix(formID, "bearing-v2-") {
		t.Fatalf("started from the form: %q %v", formID, err)
	}
	if st := text("#rollout-state"); st != "running" || !strings.Contains(text("main"), "line=0") {
		t.Errorf("form rollout: state %q", st)
	}
	run("rollout list", chromedp.Navigate(base+"/rollouts"), chromedp.WaitVisible(chromedp.CSS("#rollouts")))
	if l := text("#rollouts"); !strings.Contains(l, formID) || !strings.Contains(l, ro.ID) {
		t.Errorf("rollout list: %q", l)
	}
	// 5c. Models: the lineage, and v1 beside v2.
	run("models", chromedp.Navigate(base+"/models"), chromedp.WaitVisible(chromedp.CSS("#lineage-bearing")))
	if l := text("#lineage-bearing"); !strings.Contains(l, "v1") || !strings.Contains(l, "v2") || !strings.Contains(l, "int8-dynamic") {
		t.Errorf("lineage: %q", l)
	}
	run("compare", chromedp.Submit(chromedp.CSS("#compare-bearing button")), chromedp.WaitVisible(chromedp.CSS("#compare-metrics")), shot("compare"))
	if m, f := text("#compare-metrics"), text("#compare-facts"); !strings.Contains(m, "accuracy") || !strings.Contains(m, "0.91") || !strings.Contains(m, "0.92") ||
		!strings.Contains(m, "+0.01") || !strings.Contains(f, "int8-dynamic") || !strings.Contains(f, "none") {
		t.Errorf("compare: %q / %q", m, f)
	}
	// 6. A viewer: no buttons, and both the console and the API refuse.
	run("log out and in as a viewer",
		chromedp.Click(chromedp.CSS(".who button")),
		chromedp.WaitVisible(chromedp.CSS("#user-login")),
		chromedp.SendKeys(chromedp.CSS("#user"), "vic"),
		chromedp.SendKeys(chromedp.CSS("#password"), "viewer-pass"),
		chromedp.Submit(chromedp.CSS("#password")),
		chromedp.WaitVisible(chromedp.CSS("#devices")),
		chromedp.Navigate(base+"/rollouts/"+ro.ID),
		chromedp.WaitVisible(chromedp.CSS("#read-only")))
	buttons := eval(`document.querySelectorAll("#actions button").length`)
	if buttons != 0 || !strings.Contains(text("#whoami"), "viewer") {
		t.Errorf("a viewer sees %d action buttons", buttons)
	}
	csrf, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector("input[name=csrf]").value`))
	if err != nil {
		t.Fatal(err)
	}
	if c := fetchStatus("/rollouts/"+ro.ID+"/resume", "csrf="+csrf, nil); c != http.StatusForbidden {
		t.Errorf("viewer console POST: %d", c)
	}
	if c := fetchStatus("/v1/rollouts/"+ro.ID+"/resume", "", map[string]string{console.CSRFHeader: csrf}); c != http.StatusForbidden {
		t.Errorf("viewer API POST: %d", c)
	}
	if listed := eval(`fetch("/v1/devices").then(r => r.json()).then(l => l.length)`); listed != 3 {
		t.Errorf("viewer GET /v1/devices: %d devices", listed)
	}
	if code, out := api(t, "GET", base+"/v1/rollouts/"+ro.ID, nil, bearer); !strings.Contains(string(out), `"state":"paused"`) {
		t.Fatalf("after the viewer: %d %s", code, out)
	}

	// The pause reached outpost.events.
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(cfg.Kafka.TopicPrefix+"events"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	kctx, kcancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer kcancel()
	found := false
	for !found && kctx.Err() == nil {
		cl.PollFetches(kctx).EachRecord(func(r *kgo.Record) {
			found = found || (bytes.Contains(r.Value, []byte(`rollout pause`)) && bytes.Contains(r.Value, []byte(ro.ID)))
		})
	}
	if !found {
		t.Error("no audit event for the pause in outpost.events")
	}

	// 7. The viewer's login outlives a hub restart: sessions are kept in
	// JetStream. (A cookie is the host's, whatever the port.)
	h.Close()
	if h, err = hub.Start(context.Background(), cfg, fleettest.Logger(t)); err != nil {
		t.Fatal(err)
	}
	run("after a restart", chromedp.Navigate("http://"+h.HTTPAddr()+"/rollouts/"+ro.ID), chromedp.WaitVisible(chromedp.CSS("#rollout-state")))
	if who := text("#whoami"); !strings.Contains(who, "vic") || !strings.Contains(who, "viewer") {
		t.Errorf("after a restart the console shows %q", who)
	}
	// So does the device timeline, stored in JetStream.
	run("timeline after a restart", chromedp.Navigate("http://"+h.HTTPAddr()+"/devices/pump-2"), chromedp.WaitVisible(chromedp.CSS("#timeline")))
	if tl := text("#timeline"); !strings.Contains(tl, "test: disk full") || !strings.Contains(tl, "enrolled by admin") {
		t.Errorf("the timeline after a restart: %q", tl)
	}
}
