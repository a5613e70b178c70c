package pipeline

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/outpost-edge/outpost/agent/uplink"
	"github.com/outpost-edge/outpost/test/kafkatest"
)

// pki is a throwaway CA for one test; nothing is written outside t.TempDir.
type pki struct {
	dir  string
	ca   *x509.Certificate
	key  *ecdsa.PrivateKey
	next int64
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "outpost test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(der)
	p := &pki{dir: t.TempDir(), ca: ca, key: key, next: 2}
	p.write(t, "ca.pem", "CERTIFICATE", der)
	return p
}

func (p *pki) write(t *testing.T, name, typ string, der []byte) string {
	t.Helper()
	path := filepath.Join(p.dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// issue signs a certificate for cn; server certificates get 127.0.0.1.
func (p *pki) issue(t *testing.T, cn string, server bool) (certFile, keyFile string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(p.next), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	}
	p.next++
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	return p.write(t, cn+".pem", "CERTIFICATE", der), p.write(t, cn+"-key.pem", "EC PRIVATE KEY", kder)
}

// TestMutualTLS: with broker.tls.verify_clients the hub authenticates
// devices by certificate; the agent's uplink streams with no password.
func TestMutualTLS(t *testing.T) {
	p := newPKI(t)
	cfg := hubConfig(t, kafkatest.Brokers(t), t.TempDir())
	cfg.Broker.TLS.CertFile, cfg.Broker.TLS.KeyFile = p.issue(t, "hub", true)
	cfg.Broker.TLS.CAFile = filepath.Join(p.dir, "ca.pem")
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
		tc, err := uplink.TLSConfig{CAFile: filepath.Join(p.dir, "ca.pem"), CertFile: cert, KeyFile: key}.Build()
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
		tc, _ := uplink.TLSConfig{CAFile: filepath.Join(p.dir, "ca.pem"), CertFile: cert, KeyFile: key}.Build()
		if err := connect(mqtt.NewClient(mqtt.NewClientOptions().AddBroker(url).SetClientID("stranger").SetTLSConfig(tc))); err == nil {
			t.Fatal("unenrolled certificate connected")
		}
	})

	t.Run("no client certificate is refused", func(t *testing.T) {
		tc, _ := uplink.TLSConfig{CAFile: filepath.Join(p.dir, "ca.pem")}.Build()
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
