package state

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"
)

// EnrolRequest is what a device sends, once, to POST /v1/enrol: the
// one-time token its installer flashed, the public half of the key pair it
// generated on first boot, and a signature over both that proves it holds
// the private half.
type EnrolRequest struct {
	Token        string `json:"token"`
	Device       string `json:"device,omitempty"` // proposed id; the token may fix another
	PublicKey    []byte `json:"public_key"`       // ed25519
	Signature    []byte `json:"signature"`        // over EnrolMessage
	Arch         string `json:"arch"`
	Accelerator  string `json:"accelerator,omitempty"`
	AgentVersion string `json:"agent_version,omitempty"`
}

// EnrolMessage is what the device signs: a fixed context string, so that
// the signature means nothing anywhere else, then the token and the key.
func EnrolMessage(token string, pub []byte) []byte {
	return fmt.Appendf(nil, "outpost-enrol-v1\x00%s\x00%x", token, pub)
}

// Check verifies the request's shape and its proof of possession.
func (r EnrolRequest) Check() error {
	switch {
	case r.Token == "":
		return fmt.Errorf("%w: token is empty", ErrDocument)
	case len(r.PublicKey) != ed25519.PublicKeySize:
		return fmt.Errorf("%w: public_key must be a %d-byte ed25519 key", ErrDocument, ed25519.PublicKeySize)
	case r.Arch == "":
		return fmt.Errorf("%w: arch is empty", ErrDocument)
	case !ed25519.Verify(r.PublicKey, EnrolMessage(r.Token, r.PublicKey), r.Signature):
		return fmt.Errorf("%w: signature does not verify with public_key", ErrDocument)
	}
	return nil
}

// KeyFingerprint names a device key in listings: sha256, first 16 hex digits.
func KeyFingerprint(pub []byte) string {
	s := sha256.Sum256(pub)
	return hex.EncodeToString(s[:8])
}

// Enrolment is the hub's answer to an accepted EnrolRequest. Hubs that
// act as the devices' CA add a short-lived client certificate for the
// enrolled key (PEM: the leaf, then its CA chain); the password stays for
// agents that predate certificates and for brokers without mTLS.
type Enrolment struct {
	Credentials
	Labels      map[string]string `json:"labels,omitempty"`
	Certificate string            `json:"certificate,omitempty"`
	// CertAuth: the hub's broker verifies client certificates, so the
	// agent connects with the certificate instead of the password.
	CertAuth bool `json:"cert_auth,omitempty"`
}

// RenewRequest asks POST /v1/certificates/renew for a new certificate:
// the device signs a challenge from POST /v1/certificates/challenge with
// the key it enrolled with.
type RenewRequest struct {
	Device    string `json:"device"`
	Challenge string `json:"challenge"`
	Signature []byte `json:"signature"` // ed25519 over RenewMessage
}

// RenewMessage is what the device signs to renew: a fixed context string,
// its id and the hub's challenge.
func RenewMessage(device, challenge string) []byte {
	return fmt.Appendf(nil, "outpost-renew-v1\x00%s\x00%s", device, challenge)
}

// Renewal is the hub's answer to an accepted RenewRequest.
type Renewal struct {
	Device      string    `json:"device"`
	Certificate string    `json:"certificate"` // PEM: leaf, then CA chain
	NotAfter    time.Time `json:"not_after"`
	CertAuth    bool      `json:"cert_auth,omitempty"`
}

// Challenge is the answer of POST /v1/certificates/challenge.
type Challenge struct {
	Challenge string `json:"challenge"`
}

// EnrolToken is what `outpostctl device token` gets back; the hub keeps
// only its hash.
type EnrolToken struct {
	Token     string            `json:"token"`
	Device    string            `json:"device,omitempty"`
	Labels    map[string]string `json:"labels,omitempty"`
	ExpiresAt time.Time         `json:"expires_at"`
}
