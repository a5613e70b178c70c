package api

// The small bodies of the hub's HTTP API that used to be anonymous maps
// and structs in the handlers: named here, so the OpenAPI document is
// generated from the same types the handlers encode and decode.

// Error is the body of every error answer of the JSON API.
type Error struct {
	Error string `json:"error"`
}

// HubHealth is GET /healthz.
type HubHealth struct {
	Status        string   `json:"status"` // "ok"
	EmbeddedKafka bool     `json:"embedded_kafka"`
	KafkaBrokers  []string `json:"kafka_brokers"`
}

// AddDeviceRequest is the body of POST /v1/devices.
type AddDeviceRequest struct {
	ID     string            `json:"id"`
	Labels map[string]string `json:"labels,omitempty"`
}

// TokenRequest is the body of POST /v1/enrolment-tokens: the device id
// the token fixes (empty: the device proposes one), its labels, and how
// long the token lasts as a Go duration ("24h"; empty: the default).
type TokenRequest struct {
	Device string            `json:"device,omitempty"`
	Labels map[string]string `json:"labels,omitempty"`
	TTL    string            `json:"ttl,omitempty"`
}

// AgentPublished is the answer of POST /v1/agents: the TUF target an
// agent build was signed as.
type AgentPublished struct {
	Target       string `json:"target"`
	Build        int64  `json:"build"`
	Arch         string `json:"arch"`
	AgentVersion string `json:"agent_version"`
}
