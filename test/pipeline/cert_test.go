package pipeline

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/outpost-edge/outpost/agent"
	"github.com/outpost-edge/outpost/agent/ingest"
	"github.com/outpost-edge/outpost/agent/pipeline"
	"github.com/outpost-edge/outpost/firmware/enrol"
	"github.com/outpost-edge/outpost/hub"
	"github.com/outpost-edge/outpost/hub/ctl"
	"github.com/outpost-edge/outpost/hub/devca"
	"github.com/outpost-edge/outpost/sync/state"
	"github.com/outpost-edge/outpost/test/kafkatest"
	"github.com/outpost-edge/outpost/test/service"
)

// mtlsHub is a hub whose MQTT listener verifies client certificates and
// trusts nothing but its own devices' CA.
func mtlsHub(t *testing.T, p testPKI) *hub.Config {
	t.Helper()
	cfg := hubConfig(t, kafkatest.Brokers(t), t.TempDir())
	cfg.Broker.TLS.CertFile, cfg.Broker.TLS.KeyFile = p.issue(t, "hub", true)
	cfg.Broker.TLS.VerifyClients = true
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// hubCA fetches the devices' CA the hub publishes.
func hubCA(t *testing.T, h *hub.Hub) *x509.CertPool {
	t.Helper()
	resp, err := http.Get("http://" + h.HTTPAddr() + "/v1/certificates/ca")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	pool := x509.NewCertPool()
	if resp.StatusCode != http.StatusOK || !pool.AppendCertsFromPEM(data) {
		t.Fatalf("GET /v1/certificates/ca: %s %q", resp.Status, data)
	}
	return pool
}

// certClient is an MQTT client presenting cert over TLS.
func certClient(h *hub.Hub, p testPKI, id string, cert tls.Certificate, lost chan<- error) mqtt.Client {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	tc.RootCAs = x509.NewCertPool()
	if pem, err := os.ReadFile(p.CAFile); err == nil {
		tc.RootCAs.AppendCertsFromPEM(pem)
	}
	o := mqtt.NewClientOptions().AddBroker("ssl://" + h.MQTTAddr()).SetClientID(id).SetTLSConfig(tc).
		SetAutoReconnect(false).SetConnectTimeout(3 * time.Second)
	if lost != nil {
		o.SetConnectionLostHandler(func(_ mqtt.Client, err error) { lost <- err })
	}
	return mqtt.NewClient(o)
}

func keyPair(t *testing.T, chainPEM string, key ed25519.PrivateKey) tls.Certificate {
	t.Helper()
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := tls.X509KeyPair([]byte(chainPEM), pemEncode("PRIVATE KEY", kder))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestDeviceCertificates: enrolment issues a certificate for the device
// key that chains to the hub's devices' CA and connects over mTLS without
// a password; a certificate from another CA, or from the hub's CA for
// another key, is refused; revocation refuses the still-valid certificate
// at once, and its renewals.
func TestDeviceCertificates(t *testing.T) {
	p := newPKI(t)
	cfg := mtlsHub(t, p)
	h := startHub(t, cfg)
	defer h.Close()
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)
	client := &http.Client{Timeout: 10 * time.Second}

	req, dir := tokenDevice(t, h, issueToken(t, h), "cert-dev")
	e, err := enrol.Ensure(ctx, log, client, dir, req)
	if err != nil {
		t.Fatal(err)
	}
	if e.Certificate == "" || !e.CertAuth || e.Password == "" {
		t.Fatalf("enrolment: certificate %d bytes, cert_auth %v, password kept %v: want all", len(e.Certificate), e.CertAuth, e.Password != "")
	}
	key, err := enrol.Key(dir)
	if err != nil {
		t.Fatal(err)
	}
	cert := keyPair(t, e.Certificate, key)
	leaf, _ := x509.ParseCertificate(cert.Certificate[0])
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: hubCA(t, h), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("enrolled certificate does not chain to the hub's CA: %v", err)
	}
	if leaf.Subject.CommonName != "cert-dev" || len(leaf.URIs) != 1 || leaf.URIs[0].String() != "outpost://device/cert-dev" ||
		!leaf.PublicKey.(ed25519.PublicKey).Equal(key.Public()) {
		t.Fatalf("leaf: cn %q uris %v", leaf.Subject.CommonName, leaf.URIs)
	}
	if life := leaf.NotAfter.Sub(leaf.NotBefore); life > devca.DefaultValidity+10*time.Minute || life < devca.DefaultValidity {
		t.Fatalf("validity %s, want about %s", life, devca.DefaultValidity)
	}

	lost := make(chan error, 1)
	c := certClient(h, p, "cert-dev", cert, lost)
	if err := connect(c); err != nil {
		t.Fatalf("mTLS with the enrolled certificate: %v", err)
	}
	if tok := c.Publish("outpost/v1/cert-dev/reported", 1, true, `{"device":"cert-dev","status":"running"}`); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}

	t.Run("a certificate from another CA is refused", func(t *testing.T) {
		fc, fk := p.issue(t, "cert-dev", false) // the test CA: the broker trusts only the hub's
		foreign, err := tls.LoadX509KeyPair(fc, fk)
		if err != nil {
			t.Fatal(err)
		}
		if err := connect(certClient(h, p, "cert-dev", foreign, nil)); err == nil {
			t.Fatal("certificate of a foreign CA connected")
		}
		// Another outpost CA, same device key and name.
		cp, kp, _ := devca.Generate(time.Now())
		other, err := devca.Parse(cp, kp, devca.Options{})
		if err != nil {
			t.Fatal(err)
		}
		chain, _, _ := other.Issue("cert-dev", key.Public().(ed25519.PublicKey))
		if err := connect(certClient(h, p, "cert-dev", keyPair(t, chain, key), nil)); err == nil {
			t.Fatal("certificate of another hub's CA connected")
		}
	})

	t.Run("a certificate of the hub's CA for another key is refused", func(t *testing.T) {
		// The device is re-enrolled (a replaced board, a new key); the old
		// board's certificate is still valid by its dates.
		req2, dir2 := tokenDevice(t, h, issueToken(t, h, "--device", "rekeyed"), "")
		old, err := enrol.Ensure(ctx, log, client, dir2, req2)
		if err != nil {
			t.Fatal(err)
		}
		oldKey, _ := enrol.Key(dir2)
		req3, dir3 := tokenDevice(t, h, issueToken(t, h, "--device", "rekeyed"), "")
		if _, err := enrol.Ensure(ctx, log, client, dir3, req3); err != nil {
			t.Fatal(err)
		}
		if err := connect(certClient(h, p, "rekeyed", keyPair(t, old.Certificate, oldKey), nil)); err == nil {
			t.Fatal("the replaced board's certificate connected")
		}
		if _, err := enrol.Renew(ctx, client, req2.URL, "rekeyed", oldKey); !errors.Is(err, enrol.ErrRefused) {
			t.Fatalf("renewal with the replaced key: %v, want refused", err)
		}
	})

	t.Run("renewal is signed with the enrolled key", func(t *testing.T) {
		rn, err := enrol.Renew(ctx, client, req.URL, "cert-dev", key)
		if err != nil {
			t.Fatal(err)
		}
		if err := connect(certClient(h, p, "cert-dev-2", keyPair(t, rn.Certificate, key), nil)); err == nil {
			t.Fatal("client id of another device connected") // bound client ids hold for certificates too
		}
		// A challenge from nowhere, or a signature by another key, is refused.
		body, _ := json.Marshal(state.RenewRequest{Device: "cert-dev", Challenge: "bm90LWEtY2hhbGxlbmdl", Signature: ed25519.Sign(key, state.RenewMessage("cert-dev", "bm90LWEtY2hhbGxlbmdl"))})
		resp, err := http.Post(req.URL+"/v1/certificates/renew", "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Fatalf("forged challenge: %s, want 403", resp.Status)
		}
	})

	t.Run("revocation refuses the valid certificate at once, and its renewal", func(t *testing.T) {
		var out, errOut bytes.Buffer
		if rc := ctl.Main(ctx, []string{"--hub", "http://" + h.HTTPAddr(), "device", "revoke", "cert-dev"}, &out, &errOut); rc != 0 {
			t.Fatalf("revoke: %s", errOut.String())
		}
		select {
		case <-lost:
		case <-time.After(5 * time.Second):
			t.Fatal("the revoked device's mTLS connection stayed up")
		}
		if time.Now().After(leaf.NotAfter) {
			t.Fatal("test broken: the certificate expired")
		}
		if err := connect(certClient(h, p, "cert-dev", cert, nil)); err == nil {
			t.Fatal("revoked device connected with its valid certificate")
		}
		before := h.Stats().CertRenewRefused
		if _, err := enrol.Renew(ctx, client, req.URL, "cert-dev", key); !errors.Is(err, enrol.ErrRefused) || !strings.Contains(err.Error(), "revoked") {
			t.Fatalf("renewal of a revoked device: %v, want refused: revoked", err)
		}
		if h.Stats().CertRenewRefused != before+1 {
			t.Fatal("refused renewal not counted")
		}
	})
}

// TestCertificateRenewalKeepsStreaming runs the whole agent, enrolled with
// a token, over mTLS with certificates valid for 10 s. The agent renews
// them as it goes; once the enrolled certificate has expired the hub
// restarts while the agent buffers, and the agent reconnects with its
// renewed certificate, without a restart, and every window reaches Kafka
// exactly once.
func TestCertificateRenewalKeepsStreaming(t *testing.T) {
	p := newPKI(t)
	cfg := mtlsHub(t, p)
	cfg.Devices.CertValidity = 10 * time.Second // below the 1m validation floor, on purpose
	h := startHub(t, cfg)
	cfg.HTTP.Listen = h.HTTPAddr() // the agent renews here after the restart too
	defer func() { h.Close() }()

	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "enrol.token")
	if err := os.WriteFile(tokenFile, []byte(issueToken(t, h, "--device", "cert-agent")), 0o600); err != nil {
		t.Fatal(err)
	}
	input := filepath.Join(t.TempDir(), "sensors.jsonl")
	base := time.Now().UTC().Truncate(time.Minute).Add(-10 * time.Minute)
	writeLines := func(from, to int) { // seconds [from, to), 3 sensors
		f, err := os.OpenFile(input, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		for s := from; s < to; s++ {
			for k := 0; k < 3; k++ {
				fmt.Fprintf(f, `{"sensor":"s%d","ts":"%s","temp":%d}`+"\n", k, base.Add(time.Duration(s)*time.Second).Format(time.RFC3339), 20+s%5)
			}
		}
	}
	writeLines(0, 20) // closes [0,5) [5,10) [10,15): 9 windows

	acfg := agent.Defaults()
	acfg.Device.ID = "cert-agent"
	acfg.DataDir = filepath.Join(dir, "data")
	acfg.Enrolment.URL, acfg.Enrolment.TokenFile = "http://"+h.HTTPAddr(), tokenFile
	acfg.Hub.URL = "ssl://" + h.MQTTAddr()
	acfg.Hub.TLS.CAFile = p.CAFile
	acfg.Hub.ReconnectJitter = 100 * time.Millisecond
	acfg.Uplink.AckTimeout = time.Second
	mport, _ := service.FreePort()
	acfg.Metrics.Listen = service.Addr(mport)
	acfg.Pipelines = []pipeline.Config{{
		Name:         "temps",
		Source:       ingest.SourceConfig{Type: "file", File: ingest.FileConfig{Path: input, FromStart: true}},
		Decode:       ingest.DecodeConfig{KeyField: "sensor", TimeField: "ts", Fields: []string{"temp"}, MaxSkew: time.Hour},
		Window:       pipeline.WindowConfig{Kind: "tumbling", Size: 5 * time.Second},
		Aggregations: []string{"count"},
	}}
	if err := acfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- agent.Run(ctx, acfg, testLogger(t)) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agent: %v", err)
		}
	}()

	topic := cfg.Kafka.TopicPrefix + "windows"
	if recs, _ := readAgentRecords(t, cfg.Kafka.Brokers, []string{topic}, 9, 60*time.Second); len(recs) != 9 {
		t.Fatalf("%d windows over mTLS before renewal, want 9", len(recs))
	}
	stored := func() *x509.Certificate {
		data, err := os.ReadFile(filepath.Join(acfg.DataDir, enrol.CredentialsFile))
		if err != nil {
			t.Fatal(err)
		}
		var e state.Enrolment
		if err := json.Unmarshal(data, &e); err != nil || e.Certificate == "" {
			t.Fatalf("credentials.json: %v", err)
		}
		b, _ := pemDecode(e.Certificate)
		c, err := x509.ParseCertificate(b)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	first := stored()
	// The enrolled certificate expires; renewals keep the agent current.
	time.Sleep(time.Until(first.NotAfter) + time.Second)
	if h.Stats().CertRenewed == 0 || stored().SerialNumber.Cmp(first.SerialNumber) == 0 {
		t.Fatalf("no renewal within the enrolled certificate's life (renewed %d)", h.Stats().CertRenewed)
	}

	// The hub goes away; the agent keeps working into its outbox.
	h.Close()
	writeLines(20, 40) // closes [15,20) .. [30,35): 12 more
	time.Sleep(time.Second)
	h = startHub(t, cfg)
	recs, _ := readAgentRecords(t, cfg.Kafka.Brokers, []string{topic}, 21, 90*time.Second)
	seen := map[uint64]int{}
	for _, r := range recs {
		if r.Device != "cert-agent" {
			t.Fatalf("record of %q", r.Device)
		}
		seen[r.Seq]++
	}
	if len(seen) != 21 || len(recs) != 21 {
		t.Fatalf("%d windows (%d distinct) after the reconnect with a renewed certificate, want 21 exactly once", len(recs), len(seen))
	}
	if time.Now().Before(first.NotAfter) {
		t.Fatal("test broken: the enrolled certificate had not expired at the reconnect")
	}
}

func pemEncode(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func pemDecode(s string) ([]byte, bool) {
	b, _ := pem.Decode([]byte(s))
	if b == nil {
		return nil, false
	}
	return b.Bytes, true
}
