// Package devcert keeps the agent's device certificate current: it hands
// the uplink whatever certificate is newest (tls.Config's
// GetClientCertificate, so a reconnect uses a renewed one without a
// restart), and renews it with the hub well before it expires.
//
// Renewal is due at a point between 60% and 70% of the certificate's
// lifetime, chosen at random per certificate so a fleet enrolled together
// does not renew together, counted from the moment the agent received it
// (from its NotBefore for one read back at boot). The agent compares that point with its wall
// clock at every check, at least every CheckEvery: a clock that jumps
// forward (past expiry, even) renews at the next check, and a clock
// behind renews late by its error at most. Failed renewals retry with
// backoff for as long as it takes (a device offline for weeks renews when
// it is back); the hub accepts a renewal signed with the enrolled key
// whether or not the old certificate has expired.
package devcert

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync/atomic"
	"time"
)

// Renewer holds the current certificate and renews it.
type Renewer struct {
	Key ed25519.PrivateKey
	// Renew gets a new certificate chain (PEM) from the hub.
	Renew func(ctx context.Context) (chainPEM string, err error)
	// Save stores a renewed chain, so the next boot starts with it.
	Save func(chainPEM string) error
	Log  *slog.Logger

	// Test hooks; zero values are the defaults.
	Now        func() time.Time                     // time.Now
	After      func(time.Duration) <-chan time.Time // time.After
	Fraction   func() float64                       // renewal point in [0,1) of [0.6, 0.7]: rand.Float64
	CheckEvery time.Duration                        // 1m
	MaxBackoff time.Duration                        // 10m

	cur atomic.Pointer[current]
}

type current struct {
	cert    tls.Certificate
	leaf    *x509.Certificate
	renewAt time.Time
}

// ErrNoCertificate means a chain holds no certificate for the key.
var ErrNoCertificate = errors.New("no certificate for the device key")

// Set makes chainPEM the current certificate, due for renewal by its
// own dates (a certificate read back at boot).
func (r *Renewer) Set(chainPEM string) error { return r.set(chainPEM, time.Time{}) }

// set takes a certificate; a non-zero received is when the hub issued it
// by the agent's clock, and the renewal point counts from then: an agent
// whose clock is far off the hub's would otherwise find every fresh
// certificate due again at once and renew in a loop.
func (r *Renewer) set(chainPEM string, received time.Time) error {
	var cert tls.Certificate
	for rest := []byte(chainPEM); ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if b.Type == "CERTIFICATE" {
			cert.Certificate = append(cert.Certificate, b.Bytes)
		}
	}
	if len(cert.Certificate) == 0 {
		return fmt.Errorf("devcert: %w", ErrNoCertificate)
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return fmt.Errorf("devcert: %w", err)
	}
	if pub, ok := leaf.PublicKey.(ed25519.PublicKey); !ok || !pub.Equal(r.Key.Public()) {
		return fmt.Errorf("devcert: %w: the leaf is for another key", ErrNoCertificate)
	}
	cert.PrivateKey, cert.Leaf = r.Key, leaf
	frac := rand.Float64
	if r.Fraction != nil {
		frac = r.Fraction
	}
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	anchor := leaf.NotBefore
	if !received.IsZero() {
		anchor = received
	}
	at := anchor.Add(time.Duration((0.6 + 0.1*frac()) * float64(life)))
	r.cur.Store(&current{cert: cert, leaf: leaf, renewAt: at})
	return nil
}

// Leaf is the current certificate (nil before Set).
func (r *Renewer) Leaf() *x509.Certificate {
	if c := r.cur.Load(); c != nil {
		return c.leaf
	}
	return nil
}

// RenewAt is when the current certificate is due for renewal.
func (r *Renewer) RenewAt() time.Time {
	if c := r.cur.Load(); c != nil {
		return c.renewAt
	}
	return time.Time{}
}

// GetClientCertificate is tls.Config.GetClientCertificate: the current
// certificate, read at every handshake.
func (r *Renewer) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	c := r.cur.Load()
	if c == nil {
		return &tls.Certificate{}, nil // no certificate: the broker refuses
	}
	return &c.cert, nil
}

// Run renews the certificate whenever it is due, until ctx ends.
func (r *Renewer) Run(ctx context.Context) error {
	now, after := r.Now, r.After
	if now == nil {
		now = time.Now
	}
	if after == nil {
		after = time.After
	}
	every, maxBackoff := r.CheckEvery, r.MaxBackoff
	if every <= 0 {
		every = time.Minute
	}
	if maxBackoff <= 0 {
		maxBackoff = 10 * time.Minute
	}
	var backoff time.Duration
	for {
		wait := every
		if c := r.cur.Load(); c != nil {
			if t := now(); t.Before(c.renewAt) {
				wait = min(c.renewAt.Sub(t), every)
			} else if err := r.renew(ctx, now); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				backoff = min(max(2*backoff, time.Second), maxBackoff)
				wait = backoff/2 + rand.N(backoff/2+1)
				r.Log.Warn("device certificate renewal failed; retrying", "err", err, "in", wait,
					"not_after", c.leaf.NotAfter, "expired", !t.Before(c.leaf.NotAfter))
			} else {
				backoff = 0
				continue // look at the new certificate at once
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-after(wait):
		}
	}
}

func (r *Renewer) renew(ctx context.Context, now func() time.Time) error {
	chain, err := r.Renew(ctx)
	if err != nil {
		return err
	}
	if err := r.set(chain, now()); err != nil {
		return err
	}
	if err := r.Save(chain); err != nil {
		// The new certificate is in use; the next boot renews again.
		r.Log.Warn("could not store the renewed device certificate", "err", err)
	}
	r.Log.Info("device certificate renewed", "not_after", r.Leaf().NotAfter, "renew_at", r.RenewAt())
	return nil
}
