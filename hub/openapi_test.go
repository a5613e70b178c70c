package hub

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/outpost-edge/outpost/hub/api"
	"github.com/outpost-edge/outpost/hub/console"
	"github.com/outpost-edge/outpost/hub/rollout"
	"github.com/outpost-edge/outpost/hub/trainer"
	"github.com/outpost-edge/outpost/sync/state"
)

// The conformance test validates with kin-openapi rather than a checker
// of our own: its loader checks the document against the OpenAPI 3
// rules, and openapi3filter matches each request to its operation and
// checks parameters, security, bodies, statuses and content types with a
// JSON Schema validator that is not the code that wrote the document.

const conformanceToken = "conformance-token"

// notJSON are the routes the document leaves out, and why. The console's
// pages are left out too: they are HTML for browsers (TestOpenAPIRoutes
// gets them from the console itself).
var notJSON = map[string]string{
	"GET /tuf/": "the TUF repository: signed metadata and targets in TUF's own formats, verified by the agents",
}

// exchange is one API call the test made: the request and the answer.
type exchange struct {
	method, url, media, auth string
	reqBody                  []byte
	cookie                   *http.Cookie
	// bad: the request breaks the document on purpose (a malformed id,
	// no token), to show that the document says what the hub refuses.
	bad    bool
	status int
	header http.Header
	body   []byte
}

// request rebuilds the exchange's request, body included.
func (e exchange) request() *http.Request {
	var body io.Reader
	if e.reqBody != nil {
		body = bytes.NewReader(e.reqBody)
	}
	r, _ := http.NewRequest(e.method, e.url, body)
	if e.reqBody != nil {
		r.Header.Set("Content-Type", e.media)
	}
	switch e.auth {
	case "bearer":
		r.Header.Set("Authorization", "Bearer "+conformanceToken)
	case "wrong":
		r.Header.Set("Authorization", "Bearer not-the-token")
	}
	if e.cookie != nil {
		r.AddCookie(e.cookie)
	}
	return r
}

func authenticate(_ context.Context, in *openapi3filter.AuthenticationInput) error {
	r := in.RequestValidationInput.Request
	switch in.SecuritySchemeName {
	case "bearer":
		if !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ") {
			return errors.New("no bearer token")
		}
	case "session":
		if _, err := r.Cookie(console.CookieName); err != nil {
			return fmt.Errorf("no session: %w", err)
		}
	default:
		return fmt.Errorf("unknown security scheme %s", in.SecuritySchemeName)
	}
	return nil
}

func init() {
	// The CA answers PEM; it is text.
	openapi3filter.RegisterBodyDecoder("application/x-pem-file", openapi3filter.PlainBodyDecoder)
}

// validate checks one exchange against the document router was made
// from: the operation it reached, whether the request conforms, and
// whether the answer does.
func validate(router routers.Router, e exchange) (op string, reqErr, respErr error) {
	r := e.request()
	route, params, err := router.FindRoute(r)
	if err != nil {
		return "", nil, fmt.Errorf("no operation: %w", err)
	}
	op = route.Method + " " + route.Path
	opts := &openapi3filter.Options{
		IncludeResponseStatus:             true,
		RejectWhenRequestBodyNotSpecified: true,
		AuthenticationFunc:                authenticate,
		MultiError:                        true,
	}
	in := &openapi3filter.RequestValidationInput{Request: r, PathParams: params, Route: route, Options: opts}
	reqErr = openapi3filter.ValidateRequest(context.Background(), in)
	in.Request = e.request() // the body again
	respErr = openapi3filter.ValidateResponse(context.Background(), &openapi3filter.ResponseValidationInput{
		RequestValidationInput: in, Status: e.status, Header: e.header,
		Body: io.NopCloser(bytes.NewReader(e.body)), Options: opts,
	})
	if respErr == nil && (e.status == http.StatusNoContent || e.status == http.StatusAccepted) {
		if len(e.body) > 0 {
			respErr = fmt.Errorf("%d with a body: %q", e.status, e.body)
		}
	}
	return op, reqErr, respErr
}

// loadDocument reads an OpenAPI document and checks it against the
// OpenAPI 3 rules.
func loadDocument(t *testing.T, data []byte) (*openapi3.T, routers.Router) {
	t.Helper()
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(data)
	if err != nil {
		t.Fatalf("load the document: %v", err)
	}
	if err := doc.Validate(loader.Context); err != nil {
		t.Fatalf("the document breaks OpenAPI 3: %v", err)
	}
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	return doc, router
}

// conformance drives a hub and records what it answered.
type conformance struct {
	t         *testing.T
	h         *Hub
	base      string
	exchanges []exchange
}

// call is one step: the request (body JSON unless a []byte) and the
// status the hub must answer.
type call struct {
	method, path string
	body         any
	media        string
	auth         string // bearer (the default), none, wrong or session
	cookie       *http.Cookie
	bad          bool
	want         int
}

func (c *conformance) do(k call) []byte {
	c.t.Helper()
	e := exchange{method: k.method, url: c.base + k.path, media: k.media, auth: k.auth, cookie: k.cookie, bad: k.bad}
	if e.auth == "" {
		e.auth = "bearer"
	}
	switch b := k.body.(type) {
	case nil:
	case []byte:
		e.reqBody = b
	default:
		data, err := json.Marshal(b)
		if err != nil {
			c.t.Fatal(err)
		}
		e.reqBody = data
	}
	if e.media == "" {
		e.media = "application/json"
	}
	resp, err := http.DefaultClient.Do(e.request())
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	e.status, e.header = resp.StatusCode, resp.Header
	if e.body, err = io.ReadAll(resp.Body); err != nil {
		c.t.Fatal(err)
	}
	c.exchanges = append(c.exchanges, e)
	if e.status != k.want {
		c.t.Fatalf("%s %s: %d %s, want %d", k.method, k.path, e.status, e.body, k.want)
	}
	return e.body
}

func decode[T any](t *testing.T, data []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatalf("decode %T from %s: %v", v, data, err)
	}
	return v
}

// conformanceHub is a standalone hub with an admin token, training model
// "m" from pipeline "p", its rollout controller ticked by the test only.
func conformanceHub(t *testing.T) (*Hub, string) {
	t.Helper()
	cfg := Defaults()
	cfg.DataDir = t.TempDir()
	cfg.Broker.ServerName = "openapi-test"
	cfg.Broker.NATSPort, cfg.Broker.MQTTPort = -1, -1
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.HTTP.AdminToken = conformanceToken
	cfg.Log.Level = "warn"
	cfg.Updates.RolloutInterval = time.Hour
	cfg.Trainer.Models = []trainer.ModelConfig{{Model: "m", Pipeline: "p", LabelField: "anomaly.max"}}
	h, err := Start(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h, "http://" + h.HTTPAddr()
}

// consoleLogin logs in to the console with the admin token: the session
// cookie the API accepts too.
func consoleLogin(t *testing.T, base string) *http.Cookie {
	t.Helper()
	cl := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := cl.PostForm(base+"/login", url.Values{"token": {conformanceToken}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	for _, ck := range resp.Cookies() {
		if ck.Name == console.CookieName {
			return ck
		}
	}
	t.Fatalf("console login: %s, no session cookie", resp.Status)
	return nil
}

// drive makes the calls an operator, a device and the console make, to
// every documented operation, with the hub's usual refusals among them.
func (c *conformance) drive() {
	t, h := c.t, c.h
	ctx := context.Background()
	c.do(call{method: "GET", path: "/healthz", auth: "none", want: 200})
	c.do(call{method: "GET", path: "/v1/openapi.json", auth: "none", want: 200})
	c.do(call{method: "GET", path: "/metrics", auth: "none", want: 200})
	c.do(call{method: "GET", path: "/v1/stats", auth: "none", bad: true, want: 401})
	c.do(call{method: "GET", path: "/v1/stats", auth: "wrong", want: 401})
	c.do(call{method: "GET", path: "/v1/stats", want: 200})

	// Devices, added by an operator and enrolled by themselves.
	c.do(call{method: "GET", path: "/v1/devices", want: 200}) // none yet
	for _, d := range []struct{ id, site string }{{"d1", "a"}, {"d2", "b"}, {"d3", "b"}} {
		c.do(call{method: "POST", path: "/v1/devices", body: api.AddDeviceRequest{ID: d.id, Labels: map[string]string{"site": d.site}}, want: 201})
	}
	c.do(call{method: "POST", path: "/v1/devices", body: []byte("{"), bad: true, want: 400})
	c.do(call{method: "POST", path: "/v1/devices", body: api.AddDeviceRequest{ID: "_hub"}, want: 400}) // the hub's own id
	tok := decode[state.EnrolToken](t, c.do(call{method: "POST", path: "/v1/enrolment-tokens",
		body: api.TokenRequest{Device: "e1", Labels: map[string]string{"site": "a"}, TTL: "1h"}, want: 201}))
	c.do(call{method: "POST", path: "/v1/enrolment-tokens", body: api.TokenRequest{TTL: "soon"}, want: 400})
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	enrol := state.EnrolRequest{Token: tok.Token, Device: "e1", PublicKey: pub, Signature: ed25519.Sign(key, state.EnrolMessage(tok.Token, pub)), Arch: "amd64", AgentVersion: "1.0.0"}
	c.do(call{method: "POST", path: "/v1/enrol", auth: "none", body: enrol, want: 201})
	c.do(call{method: "POST", path: "/v1/enrol", auth: "none", body: enrol, want: 403}) // the token is spent
	c.do(call{method: "POST", path: "/v1/enrol", auth: "none", body: state.EnrolRequest{Token: "x"}, want: 400})
	c.do(call{method: "GET", path: "/v1/certificates/ca", auth: "none", want: 200})
	ch := decode[state.Challenge](t, c.do(call{method: "POST", path: "/v1/certificates/challenge", auth: "none", want: 200}))
	c.do(call{method: "POST", path: "/v1/certificates/renew", auth: "none", want: 200,
		body: state.RenewRequest{Device: "e1", Challenge: ch.Challenge, Signature: ed25519.Sign(key, state.RenewMessage("e1", ch.Challenge))}})
	c.do(call{method: "POST", path: "/v1/certificates/renew", auth: "none", want: 403,
		body: state.RenewRequest{Device: "e1", Challenge: ch.Challenge, Signature: make([]byte, ed25519.SignatureSize)}})
	c.do(call{method: "POST", path: "/v1/certificates/renew", auth: "none", body: state.RenewRequest{Device: "bad id"}, want: 400})

	// Models: two versions of m, v1 in production on the fleet.
	c.do(call{method: "GET", path: "/v1/models", want: 200})   // none yet
	c.do(call{method: "GET", path: "/v1/rollouts", want: 200}) // none yet
	for v := int64(1); v <= 2; v++ {
		c.do(call{method: "POST", path: "/v1/models", body: modelPackage(t, v), want: 201})
	}
	c.do(call{method: "POST", path: "/v1/models", body: modelPackage(t, 1), want: 409})
	c.do(call{method: "POST", path: "/v1/models", body: api.PushRequest{Manifest: json.RawMessage(`{"name":"m"}`)}, want: 422})
	c.do(call{method: "GET", path: "/v1/models", want: 200})
	c.do(call{method: "GET", path: "/v1/models/m", want: 200})
	c.do(call{method: "GET", path: "/v1/models/nope", want: 404})
	c.do(call{method: "GET", path: "/v1/models/bad%20name", bad: true, want: 400})
	c.do(call{method: "POST", path: "/v1/models/m/versions/1/stage", body: api.StageRequest{Stage: "production", Why: "conformance"}, want: 200})
	c.do(call{method: "POST", path: "/v1/models/m/versions/1/stage", body: api.StageRequest{Stage: "nowhere"}, want: 409})
	c.do(call{method: "POST", path: "/v1/models/m/versions/9/stage", body: api.StageRequest{Stage: "archived"}, want: 404})
	c.do(call{method: "POST", path: "/v1/models/m/versions/one/stage", body: api.StageRequest{Stage: "archived"}, bad: true, want: 400})
	report(h, []string{"d1", "d2", "d3", "e1"}, 1, "")
	c.do(call{method: "GET", path: "/v1/devices", want: 200})
	c.do(call{method: "GET", path: "/v1/devices?labels=site%3Dnorth&limit=1&offset=0", want: 200})
	c.do(call{method: "GET", path: "/v1/devices?limit=5000", bad: true, want: 400})
	c.do(call{method: "GET", path: "/v1/devices/d1?limit=10&offset=0", want: 200})
	c.do(call{method: "GET", path: "/v1/devices/nope", want: 404})
	c.do(call{method: "GET", path: "/v1/devices/d1?limit=0", bad: true, want: 400})
	c.do(call{method: "GET", path: "/v1/devices/.d1", bad: true, want: 400})

	// A rollout of v2, its devices measured at self-test.
	ro := decode[rollout.Rollout](t, c.do(call{method: "POST", path: "/v1/rollouts", want: 201,
		body: rollout.Spec{Model: "m", Version: 2, Waves: []rollout.Wave{{Devices: 1}, {Percent: 100}}, Bake: rollout.Duration(time.Hour), Gates: rollout.Gates{MaxLatencyMS: 50}}}))
	c.do(call{method: "POST", path: "/v1/rollouts", body: rollout.Spec{Model: "m", Version: 2, Gates: rollout.Gates{MinHealthy: 2}}, want: 422})
	c.do(call{method: "POST", path: "/v1/rollouts", body: map[string]any{"model": "m", "version": 2, "colour": "red"}, bad: true, want: 400})
	c.do(call{method: "POST", path: "/v1/rollouts", body: rollout.Spec{Model: "m", Version: 2}, want: 409}) // one at a time
	if err := h.rollouts.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	at := time.Now().UTC()
	for _, d := range []string{"d1", "d2", "d3", "e1"} {
		h.devices.put(state.Reported{Device: d, Status: state.StatusRunning, Arch: "amd64", ReportedAt: time.Now().UTC(),
			Models: []state.ModelStatus{{Pipeline: "p", Model: "m", Version: 1}},
			Updates: map[string]state.Update{"m": {Model: "m", From: 1, To: 2, Rollout: ro.ID, Phase: state.PhaseSelfTest, At: time.Now().UTC(),
				SelfTest: &state.SelfTest{Calls: 20, LatencyP50US: 120, LatencyP99US: 300, BatchRows: 8, BatchP50US: 400, BatchP99US: 700, RSSGrowthMB: 1.5}}},
			// The live health an agent reports beside its models.
			Pipelines: []state.PipelineHealth{{Pipeline: "p", Model: "m", Version: 1, Events: 100, Windows: 10, Inferences: 10, Calls: 3,
				RateSeconds: 30, InferencesPerSec: 0.3, EventsPerSec: 3.3, LatencyCalls: 3, LatencyP50US: 80, LatencyP99US: 95, RowsPerCall: 3.3}},
			Uplink: &state.Uplink{Connected: true, Broker: "tcp://127.0.0.1:1883", LastAckAt: &at}})
	}
	c.do(call{method: "GET", path: "/v1/rollouts", want: 200})
	ro = decode[rollout.Rollout](t, c.do(call{method: "GET", path: "/v1/rollouts/" + ro.ID, want: 200}))
	var canary string
	for id := range ro.Devices {
		canary = id
	}
	c.do(call{method: "GET", path: "/v1/rollouts/" + ro.ID + "?by=site", want: 200})
	c.do(call{method: "GET", path: "/v1/rollouts/nope", want: 404})
	c.do(call{method: "GET", path: "/v1/models/m/versions/2/costs?by=site", want: 200})
	c.do(call{method: "GET", path: "/v1/models/m/versions/2/costs", bad: true, want: 400})
	c.do(call{method: "GET", path: "/v1/devices/" + canary + "/desired", want: 200})
	c.do(call{method: "GET", path: "/v1/devices/nope/desired", want: 404})
	c.do(call{method: "POST", path: "/v1/rollouts/" + ro.ID + "/pause", body: struct{}{}, want: 200})
	c.do(call{method: "POST", path: "/v1/rollouts/" + ro.ID + "/pause", body: struct{}{}, want: 422})
	c.do(call{method: "POST", path: "/v1/rollouts/" + ro.ID + "/resume", body: struct{}{}, want: 200})
	c.do(call{method: "POST", path: "/v1/rollouts/" + ro.ID + "/explode", body: struct{}{}, bad: true, want: 404})
	c.do(call{method: "POST", path: "/v1/rollouts/nope/abort", want: 404})
	c.do(call{method: "POST", path: "/v1/rollouts/" + ro.ID + "/abort", body: struct{}{}, want: 200})

	// An agent build.
	c.do(call{method: "POST", path: "/v1/agents?build=7&version=1.1.0&arch=amd64", body: []byte("\x7fnot really ELF"), media: "application/octet-stream", want: 201})
	c.do(call{method: "POST", path: "/v1/agents?build=7&arch=amd64", body: []byte("again"), media: "application/octet-stream", want: 409})
	c.do(call{method: "POST", path: "/v1/agents?build=8", body: []byte("no arch"), media: "application/octet-stream", want: 400})
	c.do(call{method: "POST", path: "/v1/agents?build=0&arch=amd64", body: []byte("x"), media: "application/octet-stream", bad: true, want: 400})

	// Training.
	c.do(call{method: "GET", path: "/v1/train", want: 200})
	c.do(call{method: "GET", path: "/v1/train/m/history", want: 200}) // nothing happened yet
	c.do(call{method: "POST", path: "/v1/train/m/run", want: 409})    // no production when the trainer started
	c.do(call{method: "POST", path: "/v1/train/nope/run", want: 404})
	c.do(call{method: "GET", path: "/v1/train/nope/history", want: 404})

	// The console's session: reads, and a POST without its CSRF token.
	s := consoleLogin(t, c.base)
	c.do(call{method: "GET", path: "/v1/devices", auth: "none", cookie: s, want: 200})
	c.do(call{method: "POST", path: "/v1/devices", auth: "none", cookie: s, body: api.AddDeviceRequest{ID: "d9"}, want: 403})

	// Revocation last: the devices above stay enrolled meanwhile.
	c.do(call{method: "POST", path: "/v1/devices/d3/revoke", want: 204})
	c.do(call{method: "POST", path: "/v1/devices/nope/revoke", want: 404})
	c.do(call{method: "GET", path: "/v1/devices/d3", want: 200})
	c.do(call{method: "GET", path: "/v1/stats", want: 200})
}

// Every route the hub registers is described (or named as not JSON), every
// described route is registered, and every call to each of them, answers
// and refusals alike, conforms to the document the hub serves.
func TestOpenAPIConformance(t *testing.T) {
	h, base := conformanceHub(t)
	c := &conformance{t: t, h: h, base: base}
	c.drive()
	data := c.exchanges[1].body // GET /v1/openapi.json
	doc, router := loadDocument(t, data)

	if bad := routeDrift(h, doc); len(bad) > 0 {
		t.Errorf("the document and the mux disagree:\n%s", strings.Join(bad, "\n"))
	}
	if bad := conformanceErrors(router, c.exchanges); len(bad) > 0 {
		t.Errorf("the hub and its document disagree:\n%s", strings.Join(bad, "\n"))
	}
	covered := map[string]bool{}
	for _, e := range c.exchanges {
		if op, _, _ := validate(router, e); op != "" {
			covered[op] = true
		}
	}
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			if !covered[method+" "+path] {
				t.Errorf("%s %s is documented but the test never calls it", method, path)
			}
		}
	}
	t.Run("keys are snake_case", func(t *testing.T) {
		if bad := nonSnakeKeys(doc); len(bad) > 0 {
			t.Errorf("keys not snake_case: %v", bad)
		}
	})
	t.Run("a wrong document fails", func(t *testing.T) { wrongDocumentsFail(t, h, data, c.exchanges) })
}

// routeDrift lists the routes registered but not described, and those
// described but not registered.
func routeDrift(h *Hub, doc *openapi3.T) []string {
	pages := newRouteTable()
	h.console.Routes(pages)
	isPage := map[string]bool{}
	var bad []string
	for _, p := range pages.patterns {
		isPage[p] = true
		if strings.Contains(p, " /v1/") {
			bad = append(bad, "console route in the API's namespace: "+p)
		}
	}
	described := map[string]bool{}
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			described[method+" "+path] = true
		}
	}
	registered := map[string]bool{}
	for _, p := range h.routes.patterns {
		registered[p] = true
		if !described[p] && !isPage[p] && notJSON[p] == "" {
			bad = append(bad, "registered, not described: "+p)
		}
	}
	for op := range described {
		if !registered[op] {
			bad = append(bad, "described, not registered: "+op)
		}
	}
	slices.Sort(bad)
	return bad
}

// conformanceErrors lists every exchange the document does not describe:
// a request meant to conform that does not, one meant to break it that
// does not, and any answer that does not.
func conformanceErrors(router routers.Router, exchanges []exchange) []string {
	var bad []string
	for _, e := range exchanges {
		_, reqErr, respErr := validate(router, e)
		name := fmt.Sprintf("%s %s (%d)", e.method, strings.TrimPrefix(e.url, "http://"), e.status)
		switch {
		case !e.bad && reqErr != nil:
			bad = append(bad, fmt.Sprintf("%s: request: %v", name, reqErr))
		case e.bad && reqErr == nil:
			bad = append(bad, name+": the document allows a request the hub refuses")
		}
		if respErr != nil {
			bad = append(bad, fmt.Sprintf("%s: answer: %v\n\t%s", name, respErr, e.body))
		}
	}
	return bad
}

var snakeCase = regexp.MustCompile(`^[a-z][a-z0-9]*(_[a-z0-9]+)*$`)

// nonSnakeKeys are the document's property and parameter names that are
// not snake_case.
func nonSnakeKeys(doc *openapi3.T) []string {
	var bad []string
	for name, ref := range doc.Components.Schemas {
		for key := range ref.Value.Properties {
			if !snakeCase.MatchString(key) {
				bad = append(bad, name+"."+key)
			}
		}
	}
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			for _, p := range op.Parameters {
				if !snakeCase.MatchString(p.Value.Name) {
					bad = append(bad, method+" "+path+" ?"+p.Value.Name)
				}
			}
		}
	}
	slices.Sort(bad)
	return bad
}

// wrongDocumentsFail shows the test can fail: the hub's document, with a
// field renamed, a status dropped or a route left out, no longer matches
// what the same calls answered.
func wrongDocumentsFail(t *testing.T, h *Hub, data []byte, exchanges []exchange) {
	for _, c := range []struct {
		name   string
		change func(doc map[string]any)
		want   string // in the failures
	}{
		{"a field renamed", func(doc map[string]any) {
			s := dig(doc, "components", "schemas", "Rollout")
			props := s["properties"].(map[string]any)
			props["status"], props["state"] = props["state"], nil
			delete(props, "state")
			for i, r := range s["required"].([]any) {
				if r == "state" {
					s["required"].([]any)[i] = "status"
				}
			}
		}, `property "state" is unsupported`},
		{"a status dropped", func(doc map[string]any) {
			delete(dig(doc, "paths", "/v1/devices/{id}", "get", "responses"), "404")
		}, "status is not supported"},
		{"a route left out", func(doc map[string]any) {
			delete(dig(doc, "paths"), "/v1/stats")
		}, "registered, not described: GET /v1/stats"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var doc map[string]any
			if err := json.Unmarshal(data, &doc); err != nil {
				t.Fatal(err)
			}
			c.change(doc)
			wrong, err := json.Marshal(doc)
			if err != nil {
				t.Fatal(err)
			}
			d, router := loadDocument(t, wrong)
			failures := strings.Join(append(routeDrift(h, d), conformanceErrors(router, exchanges)...), "\n")
			if !strings.Contains(failures, c.want) {
				t.Fatalf("with %s the failures lack %q:\n%s", c.name, c.want, failures)
			}
		})
	}
}

func dig(doc map[string]any, keys ...string) map[string]any {
	for _, k := range keys {
		doc = doc[k].(map[string]any)
	}
	return doc
}
