package registry

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-edge/outpost/sync/state"
)

// TokenBucket holds enrolment tokens by the hash of their value, so that a
// copy of the bucket enrols nothing. A hub cluster shares it, and a token
// is consumed by compare-and-set: it works once across the cluster.
const TokenBucket = "OUTPOST_ENROL_TOKENS"

// MaxTokenTTL bounds a token's life; the bucket forgets tokens after it.
const MaxTokenTTL = 30 * 24 * time.Hour

// DefaultTokenTTL is a token's life when the operator names none.
const DefaultTokenTTL = 24 * time.Hour

type token struct {
	Device    string            `json:"device,omitempty"` // fixed id, or empty: the device proposes one
	Labels    map[string]string `json:"labels,omitempty"`
	CreatedAt time.Time         `json:"created_at"`
	ExpiresAt time.Time         `json:"expires_at"`
	UsedAt    *time.Time        `json:"used_at,omitempty"`
	UsedBy    string            `json:"used_by,omitempty"`
}

// tokenBucket opens the token bucket, creating it on first use rather
// than at start: a replicated bucket's first leader election takes
// seconds, and a cluster's start already waits for every other one.
func (r *Registry) tokenBucket(ctx context.Context) (jetstream.KeyValue, error) {
	r.tokenMu.Lock()
	defer r.tokenMu.Unlock()
	r.mu.RLock()
	kv, js, replicas := r.tokens, r.js, r.replicas
	r.mu.RUnlock()
	if kv != nil {
		return kv, nil
	}
	if js == nil {
		return nil, fmt.Errorf("registry: %w", ErrNotReady)
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: TokenBucket, History: 1, Replicas: max(replicas, 1), Storage: jetstream.FileStorage,
		TTL: MaxTokenTTL + 24*time.Hour,
	})
	if err != nil {
		return nil, fmt.Errorf("registry: token bucket: %w", err)
	}
	r.mu.Lock()
	r.tokens = kv
	r.mu.Unlock()
	return kv, nil
}

// NewToken issues a one-time enrolment token that expires after ttl. With
// device set, the token enrols (or re-enrols) exactly that device id.
func (r *Registry) NewToken(ctx context.Context, device string, labels map[string]string, ttl time.Duration) (state.EnrolToken, error) {
	if device != "" {
		if err := enrollable(device); err != nil {
			return state.EnrolToken{}, err
		}
	}
	if ttl <= 0 {
		ttl = DefaultTokenTTL
	}
	if ttl > MaxTokenTTL {
		return state.EnrolToken{}, fmt.Errorf("registry: token ttl %s is over the maximum %s", ttl, MaxTokenTTL)
	}
	kv, err := r.tokenBucket(ctx)
	if err != nil {
		return state.EnrolToken{}, err
	}
	now := time.Now().UTC()
	t := token{Device: device, Labels: labels, CreatedAt: now, ExpiresAt: now.Add(ttl)}
	value := "opt_" + randomSecret()
	data, err := json.Marshal(t)
	if err != nil {
		return state.EnrolToken{}, fmt.Errorf("registry: encode token: %w", err)
	}
	if _, err := kv.Create(ctx, hash(value), data); err != nil {
		return state.EnrolToken{}, fmt.Errorf("registry: store token: %w", err)
	}
	r.log.Info("enrolment token issued", "device", device, "expires_at", t.ExpiresAt)
	return state.EnrolToken{Token: value, Device: device, Labels: labels, ExpiresAt: t.ExpiresAt}, nil
}

// Enrol consumes the request's token and enrols the device with the key
// it proved it holds. The device's labels are the token's, plus the arch
// and accelerator it reports (the token's win: the installer knows the
// site and the hardware better than a default config does).
func (r *Registry) Enrol(ctx context.Context, req state.EnrolRequest) (state.Enrolment, error) {
	if err := req.Check(); err != nil {
		return state.Enrolment{}, err
	}
	kv, err := r.tokenBucket(ctx)
	if err != nil {
		return state.Enrolment{}, err
	}
	key := hash(req.Token)
	e, err := kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return r.refuseEnrol(fmt.Errorf("registry: %w: unknown token", ErrTokenInvalid))
	}
	if err != nil {
		return state.Enrolment{}, fmt.Errorf("registry: read token: %w", err)
	}
	var t token
	if err := json.Unmarshal(e.Value(), &t); err != nil {
		return state.Enrolment{}, fmt.Errorf("registry: decode token: %w", err)
	}
	now := time.Now().UTC()
	switch {
	case t.UsedAt != nil:
		return r.refuseEnrol(fmt.Errorf("registry: %w: already used at %s by %s", ErrTokenInvalid, t.UsedAt.Format(time.RFC3339), t.UsedBy))
	case now.After(t.ExpiresAt):
		return r.refuseEnrol(fmt.Errorf("registry: %w: expired at %s", ErrTokenInvalid, t.ExpiresAt.Format(time.RFC3339)))
	}

	id := t.Device
	switch {
	case id != "" && req.Device != "" && req.Device != id:
		return r.refuseEnrol(fmt.Errorf("registry: %w: token is for device %s, not %s", ErrTokenInvalid, id, req.Device))
	case id == "" && req.Device != "":
		id = req.Device
	case id == "":
		id = "dev-" + state.KeyFingerprint(req.PublicKey)[:12]
	}
	if err := enrollable(id); err != nil {
		return state.Enrolment{}, err
	}
	r.mu.RLock()
	_, exists := r.devices[id]
	r.mu.RUnlock()
	if exists && t.Device == "" {
		// Only a token issued for this id may replace its credentials.
		return r.refuseEnrol(fmt.Errorf("registry: %w: %s", ErrDeviceExists, id))
	}

	// Consume first, by compare-and-set: of two devices racing with one
	// token (on any hub), one wins and the other is refused.
	t.UsedAt, t.UsedBy = &now, id
	data, err := json.Marshal(t)
	if err != nil {
		return state.Enrolment{}, fmt.Errorf("registry: encode token: %w", err)
	}
	if _, err := kv.Update(ctx, key, data, e.Revision()); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return r.refuseEnrol(fmt.Errorf("registry: %w: used concurrently", ErrTokenInvalid))
		}
		return state.Enrolment{}, fmt.Errorf("registry: consume token: %w", err)
	}

	labels := map[string]string{"arch": req.Arch}
	if req.Accelerator != "" {
		labels["accelerator"] = req.Accelerator
	}
	maps.Copy(labels, t.Labels)
	secret := randomSecret()
	d := record{
		Device:     state.Device{ID: id, Labels: labels, CreatedAt: now, KeyFingerprint: state.KeyFingerprint(req.PublicKey)},
		SecretHash: hash(secret),
		PublicKey:  hex.EncodeToString(req.PublicKey),
	}
	if err := r.put(ctx, d); err != nil {
		return state.Enrolment{}, fmt.Errorf("%w (the token is spent; issue a new one)", err)
	}
	out := state.Enrolment{Credentials: state.Credentials{Device: id, Username: id, Password: secret}, Labels: labels}
	r.mu.RLock()
	iss, certAuth := r.issuer, r.certAuth
	r.mu.RUnlock()
	if iss != nil {
		chain, notAfter, err := iss.Issue(id, req.PublicKey)
		if err != nil {
			return state.Enrolment{}, fmt.Errorf("registry: %w (the device is enrolled; it can renew for a certificate)", err)
		}
		out.Certificate, out.CertAuth = chain, certAuth
		r.log.Info("device certificate issued", "device", id, "not_after", notAfter)
	}
	r.Stats.Enrolled.Add(1)
	r.log.Info("device enrolled with a token", "device", id, "key", d.KeyFingerprint, "labels", labels, "agent_version", req.AgentVersion)
	return out, nil
}

// Renew issues a new certificate to an enrolled device that signed the
// hub's challenge with the key it enrolled with. The signature is the
// proof, not the old certificate: a device whose certificate expired
// while it was offline, or whose clock jumped, still renews. A revoked
// device, or one enrolled without a key, is refused (ErrRenewRefused).
// checkChallenge verifies that the hub made the challenge, recently.
func (r *Registry) Renew(req state.RenewRequest, checkChallenge func(string) error) (state.Renewal, error) {
	r.mu.RLock()
	d, ok := r.devices[req.Device]
	iss, certAuth := r.issuer, r.certAuth
	r.mu.RUnlock()
	if iss == nil {
		return state.Renewal{}, fmt.Errorf("registry: %w: this hub issues no certificates", ErrNotReady)
	}
	if err := checkChallenge(req.Challenge); err != nil {
		return r.refuseRenew(req.Device, fmt.Errorf("registry: %w: %w", ErrRenewRefused, err))
	}
	var pub ed25519.PublicKey
	if ok {
		pub, _ = hex.DecodeString(d.PublicKey)
	}
	switch {
	case !ok:
		return r.refuseRenew(req.Device, fmt.Errorf("registry: %w: unknown device %q", ErrRenewRefused, req.Device))
	case d.RevokedAt != nil:
		return r.refuseRenew(req.Device, fmt.Errorf("registry: %w: device %s is revoked", ErrRenewRefused, req.Device))
	case len(pub) != ed25519.PublicKeySize:
		return r.refuseRenew(req.Device, fmt.Errorf("registry: %w: device %s enrolled without a key (outpostctl device add); enrol it with a token", ErrRenewRefused, req.Device))
	case !ed25519.Verify(pub, state.RenewMessage(req.Device, req.Challenge), req.Signature):
		return r.refuseRenew(req.Device, fmt.Errorf("registry: %w: signature does not verify with the enrolled key", ErrRenewRefused))
	}
	chain, notAfter, err := iss.Issue(d.ID, pub)
	if err != nil {
		return state.Renewal{}, fmt.Errorf("registry: %w", err)
	}
	r.Stats.Renewed.Add(1)
	r.log.Info("device certificate renewed", "device", d.ID, "not_after", notAfter)
	return state.Renewal{Device: d.ID, Certificate: chain, NotAfter: notAfter, CertAuth: certAuth}, nil
}

func (r *Registry) refuseRenew(device string, err error) (state.Renewal, error) {
	r.Stats.RenewRefused.Add(1)
	r.refusedLog.Do(func() {
		r.log.Warn("certificate renewal refused", "device", device, "err", err, "refused_total", r.Stats.RenewRefused.Load())
	})
	return state.Renewal{}, err
}

func (r *Registry) refuseEnrol(err error) (state.Enrolment, error) {
	r.Stats.EnrolRefused.Add(1)
	r.log.Warn("enrolment refused", "err", err, "refused_total", r.Stats.EnrolRefused.Load())
	return state.Enrolment{}, err
}
