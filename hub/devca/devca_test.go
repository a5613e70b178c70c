package devca

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"testing"
	"time"
)

func newCA(t *testing.T, now *time.Time) *CA {
	t.Helper()
	c, k, err := Generate(*now)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := Parse(c, k, Options{Validity: time.Hour, Now: func() time.Time { return *now }})
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func TestIssueChainsToTheCA(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	ca := newCA(t, &now)
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	chain, notAfter, err := ca.Issue("pump-7", pub)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode([]byte(chain))
	leaf, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Certificate())
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatal(err)
	}
	if !notAfter.Equal(now.Add(time.Hour)) || leaf.Subject.CommonName != "pump-7" || leaf.URIs[0].String() != "outpost://device/pump-7" {
		t.Fatalf("leaf %q %v until %s", leaf.Subject.CommonName, leaf.URIs, notAfter)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: now.Add(61 * time.Minute), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err == nil {
		t.Fatal("leaf verifies after its validity")
	}
}

func TestChallenges(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	ca := newCA(t, &now)
	ch := ca.Challenge()
	if err := ca.CheckChallenge(ch); err != nil {
		t.Fatal(err)
	}
	// A challenge of another CA is refused.
	now2 := now
	other := newCA(t, &now2)
	if err := other.CheckChallenge(ch); !errors.Is(err, ErrChallenge) {
		t.Fatalf("challenge of another CA: %v", err)
	}
	now = now.Add(ChallengeTTL + time.Second)
	if err := ca.CheckChallenge(ch); !errors.Is(err, ErrChallenge) {
		t.Fatalf("stale challenge: %v", err)
	}
	tampered := "A" + ch[1:]
	if ch[0] == 'A' {
		tampered = "B" + ch[1:]
	}
	if err := ca.CheckChallenge(tampered); !errors.Is(err, ErrChallenge) {
		t.Fatalf("tampered challenge: %v", err)
	}
}

func TestParseRefusesMismatchedKey(t *testing.T) {
	c, _, _ := Generate(time.Now())
	_, k, _ := Generate(time.Now())
	if _, err := Parse(c, k, Options{}); !errors.Is(err, ErrKeyMismatch) {
		t.Fatalf("mismatched key: %v", err)
	}
}
