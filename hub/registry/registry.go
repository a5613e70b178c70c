// Package registry holds the fleet's devices and their credentials, and
// authenticates every connection to the embedded broker: devices get
// permissions for their own topic prefix only; the hub's own components
// use an internal user created per process.
package registry

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/time/rate"

	"github.com/outpost-edge/outpost/sync/state"
	"github.com/outpost-edge/outpost/sync/topics"
)

// Bucket is the JetStream KV bucket of device records; a hub cluster shares it.
const Bucket = "OUTPOST_DEVICES"

// record is what the KV bucket stores per device.
type record struct {
	state.Device
	SecretHash string `json:"secret_hash"`          // sha256 of the random secret, hex
	PublicKey  string `json:"public_key,omitempty"` // the ed25519 key it enrolled with, hex
}

// Stats count authentication outcomes.
type Stats struct {
	Accepted, Refused      atomic.Int64
	Enrolled, EnrolRefused atomic.Int64 // token enrolments
	Renewed, RenewRefused  atomic.Int64 // certificate renewals
}

// Issuer signs device certificates (the hub's devices' CA).
type Issuer interface {
	Issue(id string, pub ed25519.PublicKey) (chainPEM string, notAfter time.Time, err error)
}

// Registry is the device registry and the broker's authenticator.
type Registry struct {
	log     *slog.Logger
	mu      sync.RWMutex
	devices map[string]record
	kv      jetstream.KeyValue
	tokens  jetstream.KeyValue // made on first use: see tokenBucket

	js       jetstream.JetStream
	tokenMu  sync.Mutex // serialises the token bucket's creation
	replicas int
	watcher  jetstream.KeyWatcher

	issuer   Issuer // nil: enrolment hands out passwords only
	certAuth bool   // the broker verifies client certificates

	internalUser, internalPass string
	refusedLog                 rate.Sometimes
	Stats                      Stats
}

var _ server.Authentication = (*Registry)(nil)

// New builds an empty registry with a fresh internal user. Attach loads
// the devices once the broker's JetStream is up.
func New(log *slog.Logger) *Registry {
	return &Registry{
		log:          log.With("component", "registry"),
		devices:      map[string]record{},
		internalUser: "_outpost_hub",
		internalPass: randomSecret(),
		refusedLog:   rate.Sometimes{First: 20, Interval: 10 * time.Second},
	}
}

// SetIssuer makes enrolment and renewal issue certificates; certAuth
// tells devices that the broker verifies them (broker.tls.verify_clients).
func (r *Registry) SetIssuer(iss Issuer, certAuth bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.issuer, r.certAuth = iss, certAuth
}

// Internal returns the user and password of the hub's own connections.
func (r *Registry) Internal() (user, pass string) { return r.internalUser, r.internalPass }

// Attach loads every device from the KV bucket (creating it if needed) and
// keeps following it, so that devices enrolled or revoked through any hub
// of a cluster are known to every hub. A revocation disconnects the device
// from srv, whichever hub it was revoked on. Close stops following.
func (r *Registry) Attach(ctx context.Context, js jetstream.JetStream, replicas int, srv *server.Server) error {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: Bucket, History: 5, Replicas: max(replicas, 1), Storage: jetstream.FileStorage})
	if err != nil {
		return fmt.Errorf("registry: bucket: %w", err)
	}
	w, err := kv.WatchAll(context.Background())
	if err != nil {
		return fmt.Errorf("registry: watch: %w", err)
	}
	// The watcher first replays every current entry, then sends nil.
	loaded := map[string]record{}
	for initial := true; initial; {
		select {
		case <-ctx.Done():
			_ = w.Stop()
			return fmt.Errorf("registry: load: %w", ctx.Err())
		case e := <-w.Updates():
			if e == nil {
				initial = false
				break
			}
			if d, ok := r.decode(e); ok {
				loaded[d.ID] = d
			}
		}
	}
	r.mu.Lock()
	r.kv, r.js, r.replicas, r.devices, r.watcher = kv, js, replicas, loaded, w
	r.mu.Unlock()
	go r.follow(w, srv)
	return nil
}

// follow applies changes made by any hub until the watcher stops.
func (r *Registry) follow(w jetstream.KeyWatcher, srv *server.Server) {
	for e := range w.Updates() {
		if e == nil {
			continue
		}
		if e.Operation() != jetstream.KeyValuePut {
			r.mu.Lock()
			delete(r.devices, e.Key())
			r.mu.Unlock()
			continue
		}
		d, ok := r.decode(e)
		if !ok {
			continue
		}
		r.mu.Lock()
		r.devices[d.ID] = d
		r.mu.Unlock()
		if d.RevokedAt != nil {
			r.disconnect(srv, d.ID)
		}
	}
}

func (r *Registry) decode(e jetstream.KeyValueEntry) (record, bool) {
	var d record
	if err := json.Unmarshal(e.Value(), &d); err != nil || d.ID == "" {
		r.log.Error("registry: undecodable device record; ignoring it", "key", e.Key(), "revision", e.Revision(), "err", err)
		return d, false
	}
	return d, true
}

// Close stops following the bucket.
func (r *Registry) Close() {
	r.mu.Lock()
	w := r.watcher
	r.watcher = nil
	r.mu.Unlock()
	if w != nil {
		_ = w.Stop()
	}
}

// Add enrols a device and returns its credentials. Re-adding an existing
// device rotates its secret (and lifts a revocation).
func (r *Registry) Add(ctx context.Context, id string, labels map[string]string) (state.Credentials, error) {
	if err := enrollable(id); err != nil {
		return state.Credentials{}, err
	}
	secret := randomSecret()
	d := record{Device: state.Device{ID: id, Labels: labels, CreatedAt: time.Now().UTC()}, SecretHash: hash(secret)}
	if err := r.put(ctx, d); err != nil {
		return state.Credentials{}, err
	}
	return state.Credentials{Device: id, Username: id, Password: secret}, nil
}

// Revoke refuses the device from now on and disconnects it.
func (r *Registry) Revoke(ctx context.Context, id string, srv *server.Server) error {
	r.mu.RLock()
	d, ok := r.devices[id]
	r.mu.RUnlock()
	if !ok {
		return fmt.Errorf("registry: %w: %s", ErrUnknownDevice, id)
	}
	now := time.Now().UTC()
	d.RevokedAt = &now
	if err := r.put(ctx, d); err != nil {
		return err
	}
	// Here at once; the other hubs of a cluster disconnect it when they
	// see the change in the bucket.
	r.disconnect(srv, id)
	r.log.Info("device revoked", "device", id)
	return nil
}

// disconnect closes every connection of device id on srv.
func (r *Registry) disconnect(srv *server.Server, id string) {
	if srv == nil {
		return
	}
	conns, err := srv.Connz(&server.ConnzOptions{User: id, Username: true})
	if err != nil {
		return
	}
	for _, c := range conns.Conns {
		_ = srv.DisconnectClientByID(c.Cid)
	}
}

// List returns all devices, sorted by id.
func (r *Registry) List() []state.Device {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]state.Device, 0, len(r.devices))
	for _, d := range r.devices {
		out = append(out, d.Device)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

func (r *Registry) put(ctx context.Context, d record) error {
	data, err := json.Marshal(d)
	if err != nil {
		return fmt.Errorf("registry: encode: %w", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.kv == nil {
		return fmt.Errorf("registry: %w", ErrNotReady)
	}
	if _, err := r.kv.Put(ctx, d.ID, data); err != nil {
		return fmt.Errorf("registry: store %s: %w", d.ID, err)
	}
	r.devices[d.ID] = d
	return nil
}

// Check authenticates one broker connection (server.Authentication).
func (r *Registry) Check(c server.ClientAuthentication) bool {
	o := c.GetOpts()
	if o.Username == r.internalUser {
		if subtle.ConstantTimeCompare([]byte(o.Password), []byte(r.internalPass)) != 1 {
			return r.refuse(c, o.Username, "bad internal credentials")
		}
		c.RegisterUser(&server.User{Username: r.internalUser})
		return true
	}
	// A verified client certificate (mTLS) names the device by its common
	// name and replaces the secret; a username, if given, must agree.
	id, byCert := o.Username, false
	var leaf *x509.Certificate
	if cs := c.GetTLSConnectionState(); cs != nil && len(cs.VerifiedChains) > 0 {
		leaf = cs.VerifiedChains[0][0]
		cn := leaf.Subject.CommonName
		if id != "" && id != cn {
			return r.refuse(c, id, "username differs from certificate common name "+cn)
		}
		id, byCert = cn, true
	}
	r.mu.RLock()
	d, ok := r.devices[id]
	r.mu.RUnlock()
	switch {
	case !ok:
		return r.refuse(c, id, "unknown device")
	case d.RevokedAt != nil:
		return r.refuse(c, id, "revoked device")
	case byCert && !d.holds(leaf):
		// A re-enrolled (replaced) board has a new key: the old board's
		// certificate, still valid by its dates, names the id but not it.
		return r.refuse(c, id, "certificate is not for the device's enrolled key")
	case !byCert && subtle.ConstantTimeCompare([]byte(hash(o.Password)), []byte(d.SecretHash)) != 1:
		return r.refuse(c, id, "wrong secret")
	}
	// The MQTT client id names the session the broker replaces on a new
	// connect: bound to the device, or one device could drop another's.
	if cid, mqtt := mqttClientID(c); mqtt && cid != d.ID {
		return r.refuse(c, id, fmt.Sprintf("MQTT client id %q is not the device's id", cid))
	}
	c.RegisterUser(&server.User{Username: d.ID, Permissions: permissions(d.ID)})
	r.Stats.Accepted.Add(1)
	return true
}

// holds reports whether a certificate is for the device's enrolled key.
// Devices added without a key (outpostctl device add) take any certificate
// the broker verified, as before certificates were issued.
func (d record) holds(leaf *x509.Certificate) bool {
	if d.PublicKey == "" {
		return true
	}
	want, err := hex.DecodeString(d.PublicKey)
	if err != nil {
		return false
	}
	got, ok := leaf.PublicKey.(ed25519.PublicKey)
	return ok && bytes.Equal(got, want)
}

// mqttClientID is the client id an MQTT connection presented, and whether
// the connection is MQTT at all. nats-server hands the authenticator no
// client id, but names an MQTT connection `<addr> - mid:<n> - "<client id>"`
// once CONNECT is parsed (nats-server 2.15); TestClientIDIsBoundToDevice
// holds this to the server in go.mod. An MQTT connection whose id cannot
// be read this way is refused, not let through.
func mqttClientID(c server.ClientAuthentication) (string, bool) {
	str, ok := c.(fmt.Stringer)
	if !ok {
		return "", false
	}
	name := str.String()
	if !strings.Contains(name, " - mid") {
		return "", false // a NATS connection: no sessions to take over
	}
	i := strings.LastIndex(name, ` - "`)
	if i < 0 {
		return "\x00unreadable", true
	}
	cid, err := strconv.Unquote(name[i+3:])
	if err != nil {
		return "\x00unreadable", true
	}
	return cid, true
}

// permissions confine a device to its own prefix: it publishes its data and
// reported state, and subscribes to its acks and desired state.
func permissions(id string) *server.Permissions {
	return &server.Permissions{
		Publish: &server.SubjectPermission{Allow: []string{
			topics.Subject(topics.Up(id, "*")),
			topics.Subject(topics.Reported(id)),
		}},
		Subscribe: &server.SubjectPermission{Allow: []string{
			topics.Subject(topics.Ack(id)),
			topics.Subject(topics.Desired(id)),
			topics.Subject(topics.Reported(id)),
		}},
	}
}

func (r *Registry) refuse(c server.ClientAuthentication, user, why string) bool {
	r.Stats.Refused.Add(1)
	r.refusedLog.Do(func() {
		r.log.Warn("connection refused", "user", user, "reason", why, "remote", c.RemoteAddress().String(), "refused_total", r.Stats.Refused.Load())
	})
	return false
}

func randomSecret() string {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		panic(err) // the kernel's CSPRNG does not fail on Linux
	}
	return hex.EncodeToString(b)
}

// hash is enough for 192-bit random secrets; a slow KDF would only slow
// down a fleet reconnecting at once.
func hash(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

// enrollable is a valid device id outside the hub's own namespace: ids
// starting with "_" name the hub in the device topics (its trainer
// events are device "_hub").
func enrollable(id string) error {
	if err := topics.ValidDevice(id); err != nil {
		return err
	}
	if strings.HasPrefix(id, "_") {
		return fmt.Errorf("%w: ids starting with '_' are the hub's", topics.ErrDevice)
	}
	return nil
}

// Labels returns a device's labels (nil for an unknown device).
func (r *Registry) Labels(id string) map[string]string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.devices[id].Labels
}
