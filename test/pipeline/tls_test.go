package pipeline

import (
	"context"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/outpost-edge/outpost/agent/uplink"
	"github.com/outpost-edge/outpost/firmware/enrol"
	"github.com/outpost-edge/outpost/sync/tuf"
	"github.com/outpost-edge/outpost/test/kafkatest"
	"github.com/outpost-edge/outpost/test/pki"
)

// testPKI is a throwaway CA in t.TempDir.
type testPKI struct{ *pki.CA }

func newPKI(t *testing.T) testPKI {
	t.Helper()
	ca, err := pki.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return testPKI{ca}
}

func (p testPKI) issue(t *testing.T, cn string, server bool) (certFile, keyFile string) {
	t.Helper()
	c, k, err := p.Issue(cn, server)
	if err != nil {
		t.Fatal(err)
	}
	return c, k
}

// TestMutualTLS: with broker.tls.verify_clients the hub authenticates
// devices by certificate; the agent's uplink streams with no password.
func TestMutualTLS(t *testing.T) {
	p := newPKI(t)
	cfg := hubConfig(t, kafkatest.Brokers(t), t.TempDir())
	cfg.Broker.TLS.CertFile, cfg.Broker.TLS.KeyFile = p.issue(t, "hub", true)
	cfg.Broker.TLS.CAFile = p.CAFile
	cfg.Broker.TLS.VerifyClients = true
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	h := startHub(t, cfg)
	defer h.Close()
	if _, err := h.Registry().Add(context.Background(), "dev-tls", nil); err != nil {
		t.Fatal(err)
	}
	url := "ssl://" + h.MQTTAddr()

	t.Run("enrolled certificate connects and publishes without a password", func(t *testing.T) {
		cert, key := p.issue(t, "dev-tls", false)
		tc, err := uplink.TLSConfig{CAFile: p.CAFile, CertFile: cert, KeyFile: key}.Build()
		if err != nil {
			t.Fatal(err)
		}
		lost := make(chan error, 1)
		c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(url).SetClientID("dev-tls").SetTLSConfig(tc).
			SetConnectionLostHandler(func(_ mqtt.Client, err error) { lost <- err }))
		if err := connect(c); err != nil {
			t.Fatalf("mTLS connect: %v", err)
		}
		defer c.Disconnect(100)
		if tok := c.Publish("outpost/v1/dev-tls/reported", 1, true, `{"device":"dev-tls","status":"running"}`); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("publish: %v", tok.Error())
		}
		select {
		case err := <-lost:
			t.Fatalf("connection dropped: %v", err)
		case <-time.After(300 * time.Millisecond):
		}
	})

	t.Run("certificate of an unenrolled device is refused", func(t *testing.T) {
		cert, key := p.issue(t, "stranger", false)
		tc, _ := uplink.TLSConfig{CAFile: p.CAFile, CertFile: cert, KeyFile: key}.Build()
		if err := connect(mqtt.NewClient(mqtt.NewClientOptions().AddBroker(url).SetClientID("stranger").SetTLSConfig(tc))); err == nil {
			t.Fatal("unenrolled certificate connected")
		}
	})

	t.Run("no client certificate is refused", func(t *testing.T) {
		tc, _ := uplink.TLSConfig{CAFile: p.CAFile}.Build()
		creds, _ := h.Registry().Add(context.Background(), "dev-pw", nil)
		c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(url).SetClientID("dev-pw").SetTLSConfig(tc).
			SetUsername(creds.Username).SetPassword(creds.Password))
		if err := connect(c); err == nil {
			t.Fatal("connected without a client certificate although verify_clients is on")
		}
	})

	t.Run("plain TCP is refused on a TLS listener", func(t *testing.T) {
		c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://" + h.MQTTAddr()).SetClientID("plain"))
		if err := connect(c); err == nil {
			t.Fatal("plain TCP connected")
		}
	})
}

// TestUpdatesOverHTTPS: with http.tls the hub serves its API and TUF
// repository over HTTPS; outpostctl and an agent's TUF client verify it
// against the private CA, and a client without the CA is refused.
func TestUpdatesOverHTTPS(t *testing.T) {
	p := newPKI(t)
	cfg := hubConfig(t, kafkatest.Brokers(t), t.TempDir())
	cfg.HTTP.TLS.CertFile, cfg.HTTP.TLS.KeyFile = p.issue(t, "127.0.0.1", true)
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	h := startHub(t, cfg)
	defer h.Close()
	base := "https://" + h.HTTPAddr()
	if code, out := outpostctl(t, base, "model", "push", bearing(t, 1, "")); code == 0 {
		t.Fatalf("outpostctl trusted an unknown CA: %s", out)
	}
	if code, out := outpostctl(t, base, "--ca-file", p.CAFile, "model", "push", bearing(t, 1, "")); code != 0 {
		t.Fatal(out)
	}
	root, err := os.ReadFile(filepath.Join(cfg.DataDir, "tuf", "1.root.json"))
	if err != nil {
		t.Fatal(err)
	}
	plain, err := tuf.NewClient(root, base+"/tuf", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := plain.Refresh(); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("refresh without the CA: err = %v, want a certificate error", err)
	}
	tc, err := uplink.TLSConfig{CAFile: p.CAFile}.Build()
	if err != nil {
		t.Fatal(err)
	}
	c, err := tuf.NewClientWith(root, base+"/tuf", t.TempDir(), &http.Client{Transport: &http.Transport{TLSClientConfig: tc}})
	if err != nil {
		t.Fatal(err)
	}
	tf, err := c.Target(tuf.ModelTargetName("bearing", 1))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Download(context.Background(), tf, filepath.Join(t.TempDir(), "pkg.tar")); err != nil {
		t.Fatal(err)
	}

	// Enrolment over HTTPS: with the CA the device enrols; without it the
	// hub is not trusted and the token is never sent.
	_, tokOut := outpostctl(t, base, "--ca-file", p.CAFile, "device", "token")
	token := strings.TrimSpace(tokOut)
	log := slog.New(slog.DiscardHandler)
	untrusted, dirU := tokenDevice(t, h, token, "")
	untrusted.URL = base
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := enrol.Ensure(ctx, log, &http.Client{}, dirU, untrusted); err == nil {
		t.Fatal("enrolled with a hub whose certificate it cannot verify")
	}
	req, dir := tokenDevice(t, h, token, "")
	req.URL = base
	e, err := enrol.Ensure(context.Background(), log, &http.Client{Transport: &http.Transport{TLSClientConfig: tc}}, dir, req)
	if err != nil || e.Password == "" {
		t.Fatalf("enrolment over HTTPS: %+v %v", e, err)
	}
}
