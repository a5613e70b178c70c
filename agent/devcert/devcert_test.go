package devcert

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/hub/devca"
)

// sim runs a Renewer in virtual time: After advances the agent's clock by
// the wait at once, and the hub's clock is the agent's minus skew.
type sim struct {
	t       *testing.T
	agent   time.Time
	skew    time.Duration // agent clock minus hub clock
	ca      *devca.CA
	r       *Renewer
	waits   []time.Duration
	onWait  func(n int) // runs before each wait is taken
	renewed []time.Time // hub time of each renewal
	waitsAt []int       // waits taken before each renewal
	failing int         // renewals still to fail
	stop    context.CancelFunc
	want    int // renewals, then stop
}

func newSim(t *testing.T, skew time.Duration) *sim {
	t.Helper()
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	s := &sim{t: t, agent: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC), skew: skew, want: 3}
	certPEM, keyPEM, err := devca.Generate(s.hub())
	if err != nil {
		t.Fatal(err)
	}
	if s.ca, err = devca.Parse(certPEM, keyPEM, devca.Options{Validity: 7 * 24 * time.Hour, Now: s.hub}); err != nil {
		t.Fatal(err)
	}
	s.r = &Renewer{
		Key: key, Log: slog.New(slog.DiscardHandler),
		Now: func() time.Time { return s.agent },
		After: func(d time.Duration) <-chan time.Time {
			if s.onWait != nil {
				s.onWait(len(s.waits))
			}
			s.waits = append(s.waits, d)
			s.agent = s.agent.Add(d)
			ch := make(chan time.Time, 1)
			ch <- s.agent
			return ch
		},
		Renew: func(context.Context) (string, error) {
			if s.failing > 0 {
				s.failing--
				return "", errors.New("hub unreachable")
			}
			s.renewed = append(s.renewed, s.hub())
			s.waitsAt = append(s.waitsAt, len(s.waits))
			if len(s.renewed) == s.want {
				s.stop()
			}
			chain, _, err := s.ca.Issue("dev-1", pub)
			return chain, err
		},
		Save: func(string) error { return nil },
	}
	chain, _, err := s.ca.Issue("dev-1", pub)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.r.Set(chain); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *sim) hub() time.Time { return s.agent.Add(-s.skew) }

func (s *sim) run() {
	s.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s.stop = cancel
	if err := s.r.Run(ctx); err != nil {
		s.t.Fatal(err)
	}
}

// TestRenewsWithSkewedClocks: 1 h ahead or behind the hub, the agent still
// renews each certificate after half its life and before it expires, by
// the hub's clock, which is the one the broker checks.
func TestRenewsWithSkewedClocks(t *testing.T) {
	for _, skew := range []time.Duration{0, time.Hour, -time.Hour} {
		t.Run(skew.String(), func(t *testing.T) {
			s := newSim(t, skew)
			prev := s.r.Leaf()
			var certs []*x509.Certificate
			s.r.Save = func(string) error { certs = append(certs, s.r.Leaf()); return nil }
			s.run()
			if len(s.renewed) != 3 {
				t.Fatalf("%d renewals, want 3", len(s.renewed))
			}
			for i, at := range s.renewed {
				life := prev.NotAfter.Sub(prev.NotBefore)
				frac := float64(at.Sub(prev.NotBefore)) / float64(life)
				if frac < 0.5 || !at.Before(prev.NotAfter) {
					t.Errorf("renewal %d at %.3f of the lifetime (hub clock), want after 0.5 and before expiry", i, frac)
				}
				if i < len(certs) {
					prev = certs[i]
				}
			}
			for _, w := range s.waits {
				if w > time.Minute {
					t.Fatalf("waited %s between checks, want at most 1m (a clock jump is noticed within a check)", w)
				}
			}
		})
	}
}

// TestClockJumpPastExpiry: the agent's clock jumps 30 days forward while
// it waits; its next check renews at once, and the hub (whose clock did
// not jump) issues a certificate valid by its clock.
func TestClockJumpPastExpiry(t *testing.T) {
	s := newSim(t, 0)
	s.want = 1
	old := s.r.Leaf()
	s.onWait = func(n int) {
		if n == 2 { // the agent's clock jumps; the hub's does not
			s.agent = s.agent.Add(30 * 24 * time.Hour)
			s.skew += 30 * 24 * time.Hour
		}
	}
	s.run()
	if s.waitsAt[0] != 3 {
		t.Fatalf("renewed after %d waits, want right after the jump (3)", s.waitsAt[0])
	}
	if s.r.Leaf().SerialNumber.Cmp(old.SerialNumber) == 0 || !s.r.Leaf().NotAfter.After(s.hub()) {
		t.Fatal("no new certificate valid by the hub's clock")
	}
}

// TestOfflineBacksOff: a hub that cannot be reached for a while is
// retried with growing waits up to MaxBackoff, and the certificate is
// renewed once it answers, even though it expired meanwhile.
func TestOfflineBacksOff(t *testing.T) {
	s := newSim(t, 0)
	s.want = 1
	s.failing = 40
	s.r.MaxBackoff = 10 * time.Minute
	// The device was off for 8 days: it boots past expiry.
	s.agent = s.agent.Add(8 * 24 * time.Hour)
	s.run()
	if len(s.renewed) != 1 {
		t.Fatal("never renewed")
	}
	if s.waitsAt[0] != 40 {
		t.Fatalf("%d waits, want one per failed attempt (40)", s.waitsAt[0])
	}
	if s.waits[0] > time.Second || s.waits[10] < 4*time.Minute {
		t.Fatalf("waits %v: want a backoff from about 1s growing towards 10m", s.waits[:12])
	}
	for _, w := range s.waits {
		if w > s.r.MaxBackoff {
			t.Fatalf("waited %s, above MaxBackoff", w)
		}
	}
}

// TestGetClientCertificateIsCurrent: each handshake gets the certificate
// current at that moment.
func TestGetClientCertificateIsCurrent(t *testing.T) {
	s := newSim(t, 0)
	first, _ := s.r.GetClientCertificate(&tls.CertificateRequestInfo{})
	chain, err := s.r.Renew(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.r.Set(chain); err != nil {
		t.Fatal(err)
	}
	second, _ := s.r.GetClientCertificate(&tls.CertificateRequestInfo{})
	if first.Leaf.SerialNumber.Cmp(second.Leaf.SerialNumber) == 0 {
		t.Fatal("handshake after Set got the old certificate")
	}
	if err := s.r.Set(string(s.ca.PEM())); err == nil {
		t.Fatal("Set took a certificate for another key")
	}
}

// TestClockFarAheadDoesNotLoop: an agent whose clock runs 30 days ahead
// of the hub finds its boot certificate expired, renews once, and then
// keeps its fresh certificate for most of its lifetime instead of
// renewing in a loop.
func TestClockFarAheadDoesNotLoop(t *testing.T) {
	s := newSim(t, 30*24*time.Hour)
	s.want = 2
	s.run()
	if len(s.renewed) != 2 {
		t.Fatalf("%d renewals", len(s.renewed))
	}
	if gap := s.renewed[1].Sub(s.renewed[0]); gap < 3*24*time.Hour {
		t.Fatalf("second renewal %s after the first, want after most of the 7-day lifetime", gap)
	}
}
