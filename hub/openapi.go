package hub

import (
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"sync"

	"github.com/outpost-edge/outpost/hub/api"
	"github.com/outpost-edge/outpost/hub/rollout"
	"github.com/outpost-edge/outpost/sync/state"
)

// The hub's HTTP API as OpenAPI 3.0, served at GET /v1/openapi.json. The
// paths below are written by hand, one entry per route the handlers
// register; their bodies are the Go types the handlers encode and decode,
// described by schemaGen. TestOpenAPIConformance holds both to the mux
// and to what a running hub answers.

// apiOp is one operation: a method on a path.
type apiOp struct {
	method, path, summary string
	// public: not behind the admin guard (no token, no session).
	public bool
	query  []apiParam
	// body is the request's type, in JSON; bodyMedia a body of another
	// kind, or a JSON body the operation ignores. Neither: no body.
	body      reflect.Type
	bodyMedia string
	answers   []apiAnswer
}

// apiParam is a query parameter.
type apiParam struct {
	name, description string
	required          bool
	schema            *schema
}

// apiAnswer is one status an operation answers, with its body: a JSON
// value of one of types (more than one: oneOf), a body of media, or none.
type apiAnswer struct {
	status      int
	description string
	types       []reflect.Type
	media       string
	raw         *schema
}

// answer is a JSON answer of type T.
func answer[T any](status int, description string) apiAnswer {
	return apiAnswer{status: status, description: description, types: []reflect.Type{reflect.TypeFor[T]()}}
}

// errorText describes the error statuses; every error answers an
// api.Error.
var errorText = map[int]string{
	http.StatusBadRequest:          "malformed: body, query or path id (the error says which)",
	http.StatusUnauthorized:        "missing or wrong bearer token",
	http.StatusForbidden:           "refused: a viewer's session, a session's POST without its CSRF token, or (device routes) a bad token or signature",
	http.StatusNotFound:            "no such thing",
	http.StatusConflict:            "contradicts the hub's state",
	http.StatusUnprocessableEntity: "well formed but refused (the error says why)",
	http.StatusInternalServerError: "the hub failed",
	http.StatusServiceUnavailable:  "the hub's stores are not ready (a cluster electing leaders): retry after Retry-After seconds",
}

var (
	pathID = &schema{Type: "string", Pattern: `^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}$`,
		Description: "1 to 128 letters, digits, '_', '-' or '.', not starting with a dot"}
	pathVersion = &schema{Type: "integer", Format: "int64"}
	pathAction  = &schema{Type: "string", Enum: []string{"pause", "resume", "abort", "rollback"}}
	byLabel     = apiParam{name: "by", description: "a device label: self-test figures per value of it", schema: &schema{Type: "string"}}
)

// pathParams are the path wildcards and their schemas.
var pathParams = map[string]*schema{"id": pathID, "name": pathID, "model": pathID, "version": pathVersion, "action": pathAction}

// apiOps is the API, route by route, as the handlers in this package
// answer it.
func apiOps() []apiOp {
	return []apiOp{
		{method: "GET", path: "/healthz", summary: "The hub is up, and where it writes Kafka", public: true,
			answers: []apiAnswer{answer[api.HubHealth](200, "up")}},
		{method: "GET", path: "/metrics", summary: "Prometheus metrics", public: true,
			answers: []apiAnswer{{status: 200, description: "Prometheus text exposition", media: "text/plain", raw: &schema{Type: "string"}}}},
		{method: "GET", path: "/v1/openapi.json", summary: "This document", public: true,
			answers: []apiAnswer{{status: 200, description: "OpenAPI 3.0", media: "application/json", raw: &schema{Type: "object"}}}},
		{method: "GET", path: "/v1/stats", summary: "Pipeline counters",
			answers: []apiAnswer{answer[Stats](200, "the counters")}},

		{method: "GET", path: "/v1/devices", summary: "Devices: enrolments with their last reported state, sorted by id",
			query: []apiParam{
				{name: "labels", description: "only devices with all these labels: key=value pairs separated by commas", schema: &schema{Type: "string"}},
				{name: "limit", description: "devices in the page (default: all); the X-Total-Count header says how many match", schema: &schema{Type: "integer", Minimum: bound(1), Maximum: bound(1000)}},
				{name: "offset", description: "matching devices to skip", schema: &schema{Type: "integer", Minimum: bound(0)}},
			},
			answers: []apiAnswer{answer[[]state.Device](200, "the page"), {status: 400}}},
		{method: "POST", path: "/v1/devices", summary: "Add a device; its broker credentials are shown once",
			body:    reflect.TypeFor[api.AddDeviceRequest](),
			answers: []apiAnswer{answer[state.Credentials](201, "added"), {status: 400}}},
		{method: "GET", path: "/v1/devices/{id}", summary: "A device and a page of its timeline, newest first",
			query: []apiParam{
				{name: "limit", description: "timeline entries (default 50)", schema: &schema{Type: "integer", Minimum: bound(1), Maximum: bound(1000)}},
				{name: "offset", description: "timeline entries to skip", schema: &schema{Type: "integer", Minimum: bound(0)}},
			},
			answers: []apiAnswer{answer[state.DeviceDetail](200, "the device"), {status: 404}, {status: 500}}},
		{method: "POST", path: "/v1/devices/{id}/revoke", summary: "Revoke a device and disconnect it",
			answers: []apiAnswer{{status: 204, description: "revoked"}, {status: 404}, {status: 500}}},
		{method: "GET", path: "/v1/devices/{id}/desired", summary: "The desired state the rollouts gave a device",
			answers: []apiAnswer{answer[state.Desired](200, "its desired state"), {status: 404}, {status: 500}, {status: 503}}},

		{method: "POST", path: "/v1/enrolment-tokens", summary: "Issue a one-time enrolment token",
			body:    reflect.TypeFor[api.TokenRequest](),
			answers: []apiAnswer{answer[state.EnrolToken](201, "the token"), {status: 400}, {status: 503}}},
		{method: "POST", path: "/v1/enrol", summary: "A device spends a token for its credentials (the token is the authorisation)", public: true,
			body: reflect.TypeFor[state.EnrolRequest](),
			answers: []apiAnswer{answer[state.Enrolment](201, "enrolled"), {status: 400}, {status: 403}, {status: 409},
				{status: 500}, {status: 503}}},
		{method: "GET", path: "/v1/certificates/ca", summary: "The devices' CA certificate", public: true,
			answers: []apiAnswer{{status: 200, description: "PEM", media: "application/x-pem-file", raw: &schema{Type: "string"}}, {status: 503}}},
		{method: "POST", path: "/v1/certificates/challenge", summary: "A challenge for a certificate renewal", public: true,
			answers: []apiAnswer{answer[state.Challenge](200, "sign it with the enrolled key"), {status: 503}}},
		{method: "POST", path: "/v1/certificates/renew", summary: "Renew a device's certificate with a signed challenge", public: true,
			body:    reflect.TypeFor[state.RenewRequest](),
			answers: []apiAnswer{answer[state.Renewal](200, "renewed"), {status: 400}, {status: 403}, {status: 500}, {status: 503}}},

		{method: "POST", path: "/v1/agents", summary: "Publish an agent build for self-update",
			query: []apiParam{
				{name: "build", required: true, description: "the build number", schema: &schema{Type: "integer", Format: "int64", Minimum: bound(1)}},
				{name: "version", description: "the agent's version string", schema: &schema{Type: "string"}},
				{name: "arch", description: "amd64, arm64 or arm: read from an ELF binary, required for any other", schema: &schema{Type: "string"}},
			},
			bodyMedia: "application/octet-stream",
			answers:   []apiAnswer{answer[api.AgentPublished](201, "signed as a TUF target"), {status: 400}, {status: 409}, {status: 500}}},

		{method: "GET", path: "/v1/models", summary: "The model registry",
			answers: []apiAnswer{answer[[]api.ModelSummary](200, "every model"), {status: 500}, {status: 503}}},
		{method: "POST", path: "/v1/models", summary: "Push a model package; it is signed at once",
			body: reflect.TypeFor[api.PushRequest](),
			answers: []apiAnswer{answer[api.ModelVersion](201, "registered"), {status: 400}, {status: 409}, {status: 422},
				{status: 500}, {status: 503}}},
		{method: "GET", path: "/v1/models/{name}", summary: "A model's versions",
			answers: []apiAnswer{answer[[]api.ModelVersion](200, "its versions"), {status: 404}, {status: 500}, {status: 503}}},
		{method: "POST", path: "/v1/models/{name}/versions/{version}/stage", summary: "Move a version to a stage",
			body: reflect.TypeFor[api.StageRequest](),
			answers: []apiAnswer{answer[api.ModelVersion](200, "moved"), {status: 404}, {status: 409}, {status: 422},
				{status: 500}, {status: 503}}},
		{method: "GET", path: "/v1/models/{name}/versions/{version}/costs", summary: "What a version costs on each class of device, from the devices' self-tests",
			query:   []apiParam{{name: byLabel.name, description: byLabel.description, required: true, schema: byLabel.schema}},
			answers: []apiAnswer{answer[modelCosts](200, "per label value")}},

		{method: "POST", path: "/v1/rollouts", summary: "Start a rollout",
			body: reflect.TypeFor[rollout.Spec](),
			answers: []apiAnswer{answer[rollout.Rollout](201, "started"), {status: 400}, {status: 409}, {status: 422},
				{status: 500}, {status: 503}}},
		{method: "GET", path: "/v1/rollouts", summary: "Every rollout",
			answers: []apiAnswer{answer[[]rollout.Rollout](200, "the rollouts"), {status: 500}, {status: 503}}},
		{method: "GET", path: "/v1/rollouts/{id}", summary: "A rollout; with ?by=, its devices' self-test figures per label value",
			query: []apiParam{byLabel},
			answers: []apiAnswer{{status: 200, description: "the rollout (with costs when by is given)",
				types: []reflect.Type{reflect.TypeFor[rollout.Rollout](), reflect.TypeFor[rolloutWithCosts]()}},
				{status: 404}, {status: 500}, {status: 503}}},
		{method: "POST", path: "/v1/rollouts/{id}/{action}", summary: "Pause, resume, abort or roll back a rollout",
			bodyMedia: "application/json",
			answers: []apiAnswer{answer[rollout.Rollout](200, "its new state"), {status: 404}, {status: 409}, {status: 422},
				{status: 500}, {status: 503}}},

		{method: "GET", path: "/v1/train", summary: "The trainer's state per model",
			answers: []apiAnswer{answer[[]api.TrainingStatus](200, "every trained model")}},
		{method: "GET", path: "/v1/train/{model}/history", summary: "A model's training history",
			answers: []apiAnswer{answer[[]api.TrainingEvent](200, "oldest first: kept a year, at most 10,000 events a model"), {status: 404}, {status: 503}}},
		{method: "POST", path: "/v1/train/{model}/run", summary: "Check the learner against production now",
			answers: []apiAnswer{{status: 202, description: "the check is queued"}, {status: 404}, {status: 409}}},
	}
}

// componentNames name what the Go names would not: two Devices, and
// the hub package's unexported answers.
var componentNames = map[reflect.Type]string{
	reflect.TypeFor[api.Device]():       "RolloutDevice",
	reflect.TypeFor[modelCosts]():       "ModelCosts",
	reflect.TypeFor[rolloutWithCosts](): "RolloutWithCosts",
}

// openAPIDocument is the document, built once.
var openAPIDocument = sync.OnceValues(func() ([]byte, error) {
	doc, err := buildOpenAPI(apiOps())
	if err != nil {
		return nil, err
	}
	return json.MarshalIndent(doc, "", "  ")
})

// buildOpenAPI writes ops as an OpenAPI 3.0 document.
func buildOpenAPI(ops []apiOp) (map[string]any, error) {
	g := newSchemaGen(componentNames)
	paths := map[string]map[string]any{}
	built := make([]map[string]any, len(ops))
	// Answers first: a type that is both gets its answer's name (see
	// schemaGen.component).
	for i, op := range ops {
		o, err := g.answers(op)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", op.method, op.path, err)
		}
		built[i] = o
	}
	for i, op := range ops {
		o := built[i]
		o["summary"] = op.summary
		o["operationId"] = operationID(op)
		if op.public {
			o["security"] = []any{}
		}
		params, err := op.parameters()
		if err != nil {
			return nil, err
		}
		if len(params) > 0 {
			o["parameters"] = params
		}
		if op.body != nil || op.bodyMedia != "" {
			media := op.bodyMedia
			if media == "" {
				media = "application/json"
			}
			s := &schema{Type: "object"} // an action reads no key
			switch {
			case op.body != nil:
				if s, err = g.of(op.body, input); err != nil {
					return nil, fmt.Errorf("%s %s: %w", op.method, op.path, err)
				}
			case media == "application/octet-stream":
				s = &schema{Type: "string", Format: "binary"}
			}
			o["requestBody"] = map[string]any{"required": op.body != nil || media != "application/json",
				"content": map[string]any{media: map[string]any{"schema": s}}}
		}
		if paths[op.path] == nil {
			paths[op.path] = map[string]any{}
		}
		m := strings.ToLower(op.method)
		if _, dup := paths[op.path][m]; dup {
			return nil, fmt.Errorf("openapi: %s %s twice", op.method, op.path)
		}
		paths[op.path][m] = o
	}
	return map[string]any{
		"openapi": "3.0.3",
		"info": map[string]any{
			"title":   "Outpost hub API",
			"version": "1",
			"description": "The hub's HTTP API. Every JSON key is snake_case, and every object has exactly the keys described. " +
				"Operations without their own security need the admin token as a bearer token, or a console session " +
				"(with its CSRF token in X-CSRF-Token on anything but GET); a hub without an admin token, which only " +
				"a loopback listener may be, needs neither.",
		},
		"security": []any{map[string]any{"bearer": []any{}}, map[string]any{"session": []any{}}},
		"paths":    paths,
		"components": map[string]any{
			"schemas": g.components,
			"securitySchemes": map[string]any{
				"bearer":  map[string]any{"type": "http", "scheme": "bearer", "description": "the hub's admin token (http.admin_token)"},
				"session": map[string]any{"type": "apiKey", "in": "cookie", "name": "outpost_session", "description": "a console login"},
			},
		},
	}, nil
}

// answers describes op's responses: its own, and those the admin guard
// and the path ids add.
func (g *schemaGen) answers(op apiOp) (map[string]any, error) {
	all := append([]apiAnswer(nil), op.answers...)
	add := func(status int) {
		for _, a := range all {
			if a.status == status {
				return
			}
		}
		all = append(all, apiAnswer{status: status})
	}
	if len(op.pathNames()) > 0 && !op.public {
		add(http.StatusBadRequest) // a malformed path id
	}
	if !op.public {
		add(http.StatusUnauthorized)
		if op.method != "GET" {
			add(http.StatusForbidden)
		}
	}
	out := map[string]any{}
	for _, a := range all {
		r := map[string]any{"description": a.description}
		switch {
		case a.types == nil && a.raw == nil && a.status >= 400:
			s, err := g.of(reflect.TypeFor[api.Error](), output)
			if err != nil {
				return nil, err
			}
			if a.description == "" {
				r["description"] = errorText[a.status]
			}
			r["content"] = map[string]any{"application/json": map[string]any{"schema": s}}
			if a.status == http.StatusServiceUnavailable {
				r["headers"] = map[string]any{"Retry-After": map[string]any{"description": "seconds", "schema": &schema{Type: "integer"}}}
			}
		case a.raw != nil:
			r["content"] = map[string]any{a.media: map[string]any{"schema": a.raw}}
		case a.types != nil:
			var s *schema
			for _, t := range a.types {
				x, err := g.of(t, output)
				if err != nil {
					return nil, err
				}
				if len(a.types) == 1 {
					s = x
					break
				}
				if s == nil {
					s = &schema{}
				}
				s.OneOf = append(s.OneOf, x)
			}
			r["content"] = map[string]any{"application/json": map[string]any{"schema": s}}
		}
		out[strconv.Itoa(a.status)] = r
	}
	return map[string]any{"responses": out}, nil
}

// pathNames are the wildcards of op's path.
func (op apiOp) pathNames() []string {
	var names []string
	for part := range strings.SplitSeq(op.path, "/") {
		if name, ok := strings.CutPrefix(part, "{"); ok {
			names = append(names, strings.TrimSuffix(name, "}"))
		}
	}
	return names
}

func (op apiOp) parameters() ([]any, error) {
	var out []any
	for _, name := range op.pathNames() {
		s, ok := pathParams[name]
		if !ok {
			return nil, fmt.Errorf("openapi: %s %s: no schema for path parameter %s", op.method, op.path, name)
		}
		out = append(out, map[string]any{"name": name, "in": "path", "required": true, "schema": s})
	}
	for _, q := range op.query {
		out = append(out, map[string]any{"name": q.name, "in": "query", "required": q.required, "description": q.description, "schema": q.schema})
	}
	return out, nil
}

// operationID is "get_v1_devices_id": method and path, snake_case.
func operationID(op apiOp) string {
	return strings.ToLower(op.method) + strings.NewReplacer("/", "_", "{", "", "}", "", "-", "_", ".", "_").Replace(op.path)
}

// serveOpenAPI answers GET /v1/openapi.json. It needs no token: the
// document describes the API, not the fleet, and tools (and a client
// about to ask for a token) read it first, as agents read the public TUF
// repository.
func serveOpenAPI(w http.ResponseWriter, _ *http.Request) {
	doc, err := openAPIDocument()
	if err != nil {
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(doc)
}
