// Package devca is the hub as the devices' certificate authority: it
// issues each enrolled device a short-lived client certificate for its
// ed25519 key (common name and URI SAN outpost://device/<id>), which the
// broker verifies on mTLS connections. The CA is either one the hub
// generates and keeps in the JetStream KV bucket OUTPOST_DEVICE_CA, so
// that every hub of a cluster issues from the same CA, or an operator's
// intermediate read from files.
package devca

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net/url"
	"os"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Bucket holds the generated CA (certificate and key); a cluster shares it.
const Bucket = "OUTPOST_DEVICE_CA"

const caKey = "ca"

// DefaultValidity is a device certificate's life when none is configured.
const DefaultValidity = 7 * 24 * time.Hour

// ChallengeTTL is how long a renewal challenge stays good (hub clock).
const ChallengeTTL = 5 * time.Minute

// Config is devices.ca: an intermediate CA of the operator's, or nothing
// for a CA the hub generates.
type Config struct {
	CertFile string `yaml:"cert_file" usage:"PEM certificate (chain) of an intermediate CA that signs device certificates; empty: the hub generates its own CA and shares it through JetStream"`
	KeyFile  string `yaml:"key_file" usage:"PEM private key of that CA (PKCS#8, ed25519, ECDSA or RSA)"`
}

// Configured reports whether an operator CA is set.
func (c Config) Configured() bool { return c.CertFile != "" || c.KeyFile != "" }

// CA issues device certificates.
type CA struct {
	cert     *x509.Certificate   // the issuing certificate
	chain    []*x509.Certificate // what devices get after their leaf: cert, then its parents from cert_file
	key      crypto.Signer
	macKey   []byte
	validity time.Duration
	now      func() time.Time
}

// Options tune a CA; zero values take the defaults.
type Options struct {
	Validity time.Duration    // of issued certificates (DefaultValidity)
	Now      func() time.Time // the hub's clock (time.Now)
}

// Open returns the configured CA, or the cluster's generated one, creating
// it on first use by compare-and-set: of two hubs starting at once, one
// CA wins and both issue from it.
func Open(ctx context.Context, js jetstream.JetStream, replicas int, cfg Config, o Options, log *slog.Logger) (*CA, error) {
	if cfg.Configured() {
		certPEM, err := os.ReadFile(cfg.CertFile)
		if err != nil {
			return nil, fmt.Errorf("devca: devices.ca.cert_file: %w", err)
		}
		keyPEM, err := os.ReadFile(cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("devca: devices.ca.key_file: %w", err)
		}
		return Parse(certPEM, keyPEM, o)
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: Bucket, History: 1, Replicas: max(replicas, 1), Storage: jetstream.FileStorage})
	if err != nil {
		return nil, fmt.Errorf("devca: bucket: %w", err)
	}
	return shared(ctx, kv, o, log)
}

// caKV is what shared uses of the CA's bucket.
type caKV interface {
	Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error)
	Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error)
}

// sharedWait bounds how long a hub waits for its replica of the bucket to
// show a CA that another hub stored.
const sharedWait = 10 * time.Second

// shared reads the cluster's generated CA, storing a new one if the bucket
// has none. A KV bucket allows direct gets, which any replica answers: one
// that lags says "not found" for a CA another hub has stored, so after a
// refused create this hub asks again until its replica has it.
func shared(ctx context.Context, kv caKV, o Options, log *slog.Logger) (*CA, error) {
	type stored struct {
		Cert string `json:"cert"`
		Key  string `json:"key"`
	}
	e, err := kv.Get(ctx, caKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		certPEM, keyPEM, gerr := Generate(time.Now())
		if gerr != nil {
			return nil, gerr
		}
		data, _ := json.Marshal(stored{Cert: string(certPEM), Key: string(keyPEM)})
		_, cerr := kv.Create(ctx, caKey, data)
		if cerr == nil {
			log.Info("generated the devices' CA; it is kept in JetStream", "bucket", Bucket)
			return Parse(certPEM, keyPEM, o)
		}
		if !errors.Is(cerr, jetstream.ErrKeyExists) {
			return nil, fmt.Errorf("devca: store CA: %w", cerr)
		}
		deadline := time.After(sharedWait)
		// The one another hub stored first.
		for e, err = kv.Get(ctx, caKey); errors.Is(err, jetstream.ErrKeyNotFound); e, err = kv.Get(ctx, caKey) {
			select {
			case <-ctx.Done():
				return nil, fmt.Errorf("devca: read CA: %w", ctx.Err())
			case <-deadline:
				return nil, fmt.Errorf("devca: read CA: another hub stored it, and this hub's replica of %s still lacks it after %s: %w", Bucket, sharedWait, err)
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	if err != nil {
		return nil, fmt.Errorf("devca: read CA: %w", err)
	}
	var s stored
	if err := json.Unmarshal(e.Value(), &s); err != nil {
		return nil, fmt.Errorf("devca: decode CA: %w", err)
	}
	return Parse([]byte(s.Cert), []byte(s.Key), o)
}

// Generate makes a self-signed ed25519 CA, valid for 20 years.
func Generate(now time.Time) (certPEM, keyPEM []byte, err error) {
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("devca: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: "outpost devices CA", Organization: []string{"outpost"}},
		NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(20, 0, 0),
		IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, key)
	if err != nil {
		return nil, nil, fmt.Errorf("devca: %w", err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("devca: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), nil
}

// Parse reads a CA: the first certificate of certPEM issues, the others
// (its parents) go to devices with their leaf.
func Parse(certPEM, keyPEM []byte, o Options) (*CA, error) {
	var chain []*x509.Certificate
	for rest := certPEM; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("devca: certificate: %w", err)
		}
		chain = append(chain, c)
	}
	if len(chain) == 0 {
		return nil, fmt.Errorf("devca: %w", ErrNoCertificate)
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil {
		return nil, fmt.Errorf("devca: %w", ErrNoKey)
	}
	var parsed any
	var err error
	switch kb.Type {
	case "EC PRIVATE KEY":
		parsed, err = x509.ParseECPrivateKey(kb.Bytes)
	case "RSA PRIVATE KEY":
		parsed, err = x509.ParsePKCS1PrivateKey(kb.Bytes)
	default:
		parsed, err = x509.ParsePKCS8PrivateKey(kb.Bytes)
	}
	if err != nil {
		return nil, fmt.Errorf("devca: key: %w", err)
	}
	key, ok := parsed.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("devca: key: %w", ErrNoKey)
	}
	cert := chain[0]
	if !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("devca: %w: %q is not a CA certificate with cert-sign usage", ErrNotCA, cert.Subject.CommonName)
	}
	if !publicKeysEqual(cert.PublicKey, key.Public()) {
		return nil, fmt.Errorf("devca: %w", ErrKeyMismatch)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("devca: key: %w", err)
	}
	mac := sha256.Sum256(append([]byte("outpost-renew-challenge-v1\x00"), kder...))
	ca := &CA{cert: cert, chain: chain, key: key, macKey: mac[:], validity: o.Validity, now: o.Now}
	if ca.validity <= 0 {
		ca.validity = DefaultValidity
	}
	if ca.now == nil {
		ca.now = time.Now
	}
	return ca, nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	e, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && e.Equal(b)
}

// Certificate is the issuing certificate: the broker trusts it for
// device certificates.
func (ca *CA) Certificate() *x509.Certificate { return ca.cert }

// PEM is the issuing certificate as PEM.
func (ca *CA) PEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw})
}

// Validity is the life of the certificates it issues.
func (ca *CA) Validity() time.Duration { return ca.validity }

// DeviceURI is the URI SAN of a device certificate.
func DeviceURI(id string) *url.URL {
	return &url.URL{Scheme: "outpost", Host: "device", Path: "/" + id}
}

// Issue signs a client certificate for the device's key: the leaf, then
// the CA chain, as PEM. It starts a little in the past (hubs' clocks
// differ slightly) and never outlives the CA.
func (ca *CA) Issue(id string, pub ed25519.PublicKey) (chainPEM string, notAfter time.Time, err error) {
	if len(pub) != ed25519.PublicKeySize {
		return "", time.Time{}, fmt.Errorf("devca: %w", ErrNoKey)
	}
	now := ca.now()
	backdate := min(5*time.Minute, ca.validity/10)
	notAfter = now.Add(ca.validity)
	if notAfter.After(ca.cert.NotAfter) {
		notAfter = ca.cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: id},
		URIs:      []*url.URL{DeviceURI(id)},
		NotBefore: now.Add(-backdate), NotAfter: notAfter,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("devca: issue for %s: %w", id, err)
	}
	out := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	for _, c := range ca.chain {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return string(out), notAfter, nil
}

// Challenge is a fresh renewal challenge: the hub's time, 16 random bytes
// and a MAC under a key derived from the CA key, so that any hub of the
// cluster accepts it and none has to remember it.
func (ca *CA) Challenge() string {
	b := make([]byte, 8+16, 8+16+sha256.Size)
	binary.BigEndian.PutUint64(b, uint64(ca.now().UnixNano()))
	_, _ = rand.Read(b[8:])
	m := hmac.New(sha256.New, ca.macKey)
	m.Write(b)
	return base64.RawURLEncoding.EncodeToString(m.Sum(b))
}

// CheckChallenge accepts a challenge a hub of this CA made within
// ChallengeTTL, by the hub's clock: the device's clock does not matter.
func (ca *CA) CheckChallenge(s string) error {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) != 8+16+sha256.Size {
		return fmt.Errorf("devca: %w: malformed", ErrChallenge)
	}
	m := hmac.New(sha256.New, ca.macKey)
	m.Write(b[:24])
	if !hmac.Equal(m.Sum(nil), b[24:]) {
		return fmt.Errorf("devca: %w: not made by this hub's CA", ErrChallenge)
	}
	made := time.Unix(0, int64(binary.BigEndian.Uint64(b)))
	if age := ca.now().Sub(made); age > ChallengeTTL || age < -time.Minute {
		return fmt.Errorf("devca: %w: made %s ago, good for %s", ErrChallenge, age.Round(time.Second), ChallengeTTL)
	}
	return nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // the kernel's CSPRNG does not fail on Linux
	}
	return n.Add(n, big.NewInt(1))
}
