package console

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/outpost-edge/outpost/deploy/config"
)

// Roles. An operator may act on rollouts and devices; a viewer only reads.
const (
	Viewer   = "viewer"
	Operator = "operator"
)

// AdminUser is who the admin token logs in (or calls the API) as.
const AdminUser = "admin"

// Config is the console's part of the hub configuration.
type Config struct {
	// Users log in with a name and password; the admin token logs in as
	// an operator besides them.
	Users []User `yaml:"users"`
	// SessionTTL is how long a login lasts.
	SessionTTL time.Duration `yaml:"session_ttl" usage:"how long a console login lasts"`
	// OfflineAfter: a device that has not reported for this long is offline.
	OfflineAfter time.Duration `yaml:"offline_after" usage:"a device silent this long shows as offline in the console"`
	// TimelineRetention is how long the device timeline keeps an entry.
	TimelineRetention time.Duration `yaml:"timeline_retention" usage:"how long the device timeline (JetStream OUTPOST_TIMELINE) keeps an entry"`
}

// User is one console account.
type User struct {
	Name         string `yaml:"name"`
	PasswordHash string `yaml:"password_hash"` // bcrypt
	Role         string `yaml:"role"`          // viewer or operator
}

// Defaults: 12 h logins; offline after three missed 30 s reports; a
// timeline of 30 days.
func Defaults() Config {
	return Config{SessionTTL: 12 * time.Hour, OfflineAfter: 90 * time.Second, TimelineRetention: 30 * 24 * time.Hour}
}

// Validate names every wrong field under prefix.
func (c Config) Validate(prefix string, errs *config.Errors) {
	if c.SessionTTL < time.Minute || c.SessionTTL > 30*24*time.Hour {
		errs.Add(prefix+".session_ttl", fmt.Sprintf("must be 1m to 720h, got %s", c.SessionTTL))
	}
	if c.OfflineAfter < time.Second {
		errs.Add(prefix+".offline_after", fmt.Sprintf("must be at least 1s, got %s", c.OfflineAfter))
	}
	if c.TimelineRetention < time.Minute {
		errs.Add(prefix+".timeline_retention", fmt.Sprintf("must be at least 1m, got %s", c.TimelineRetention))
	}
	seen := map[string]bool{}
	for i, u := range c.Users {
		p := fmt.Sprintf("%s.users[%d]", prefix, i)
		switch {
		case u.Name == "" || strings.ContainsAny(u.Name, " \t\n\r"):
			errs.Add(p+".name", fmt.Sprintf("must be a non-empty name without spaces, got %q", u.Name))
		case u.Name == AdminUser:
			errs.Add(p+".name", "admin is the admin token's name")
		case seen[u.Name]:
			errs.Add(p+".name", fmt.Sprintf("%q is listed twice", u.Name))
		}
		seen[u.Name] = true
		if _, err := bcrypt.Cost([]byte(u.PasswordHash)); err != nil {
			errs.Add(p+".password_hash", "must be a bcrypt hash (htpasswd -nbBC 12 '' PASSWORD | cut -d: -f2): "+err.Error())
		}
		if u.Role != Viewer && u.Role != Operator {
			errs.Add(p+".role", fmt.Sprintf("must be viewer or operator, got %q", u.Role))
		}
	}
}

// Session is one login.
type Session struct {
	User    string    `json:"user"`
	Role    string    `json:"role"`
	CSRF    string    `json:"csrf"` // sent back with every POST
	Expires time.Time `json:"expires"`
	// Grant fingerprints what the login was checked against (the admin
	// token, or the user's password hash and role): a session ends when
	// the token rotates, or the user's password, role or account goes.
	Grant string `json:"grant"`
}

// CanOperate reports whether the session may act.
func (s *Session) CanOperate() bool { return s != nil && s.Role == Operator }

// CookieName is the session cookie.
const CookieName = "outpost_session"

// CSRFHeader carries the session's CSRF token on API calls made with the
// session cookie (forms carry it as the csrf field).
const CSRFHeader = "X-CSRF-Token"

// SessionStore keeps logins where every hub of a cluster reads them and
// a restart does not lose them (the hub: a replicated JetStream key-value
// bucket whose entries expire with console.session_ttl). Keys are hashes
// of the cookies, so the store never holds a cookie that would log in.
type SessionStore interface {
	Put(ctx context.Context, key string, value []byte) error
	Get(ctx context.Context, key string) ([]byte, error) // ErrNoSession when absent
	Delete(ctx context.Context, key string) error
}

// ErrNoSession is a SessionStore's answer for a key it does not hold.
var ErrNoSession = errors.New("no such session")

// sessionFresh is how long a hub trusts the session it read from the
// store before reading it again: a logout on another hub ends the
// session here within it, and a store that cannot answer for a moment
// (a cluster electing leaders) does not log anyone out.
const sessionFresh = 10 * time.Second

// sessions are the logins: in memory, and in the store when there is one.
type sessions struct {
	mu    sync.Mutex
	m     map[string]*cached // by cookie
	ttl   time.Duration
	store SessionStore
	log   *slog.Logger
	now   func() time.Time
	// downUntil: the store failed; until then a cached session is
	// trusted without asking it again.
	downUntil time.Time
}

type cached struct {
	s    *Session
	read time.Time // when it came from the store (zero: never stored)
}

func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails on Linux
	return base64.RawURLEncoding.EncodeToString(b)
}

// storeKey is what the store holds a session under.
func storeKey(id string) string {
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:])
}

func (s *sessions) create(ctx context.Context, user, role, grant string) (string, *Session, error) {
	now := s.now()
	id := randomToken()
	sess := &Session{User: user, Role: role, CSRF: randomToken(), Expires: now.Add(s.ttl), Grant: grant}
	if s.store != nil {
		data, _ := json.Marshal(sess) // plain struct, cannot fail
		if err := s.store.Put(ctx, storeKey(id), data); err != nil {
			return "", nil, fmt.Errorf("console: store the session: %w", err)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, v := range s.m { // drop the expired
		if now.After(v.s.Expires) {
			delete(s.m, k)
		}
	}
	s.m[id] = &cached{s: sess, read: now}
	return id, sess, nil
}

func (s *sessions) get(ctx context.Context, id string) *Session {
	now := s.now()
	s.mu.Lock()
	c, ok := s.m[id]
	s.mu.Unlock()
	if ok && now.After(c.s.Expires) {
		s.forget(id)
		return nil
	}
	if s.store == nil || (ok && now.Sub(c.read) < sessionFresh) {
		if !ok {
			return nil
		}
		return c.s
	}
	s.mu.Lock()
	down := now.Before(s.downUntil)
	s.mu.Unlock()
	if down && ok { // the store failed a moment ago: no wait on every request
		return c.s
	}
	gctx, cancel := context.WithTimeout(ctx, time.Second)
	data, err := s.store.Get(gctx, storeKey(id))
	cancel()
	if err != nil && !errors.Is(err, ErrNoSession) {
		s.mu.Lock()
		s.downUntil = now.Add(5 * time.Second)
		s.mu.Unlock()
	}
	switch {
	case errors.Is(err, ErrNoSession): // logged out, expired, or never made
		s.forget(id)
		return nil
	case err != nil:
		if ok { // keep the login through a store's bad moment
			s.log.Warn("console: the session store cannot answer; trusting the session read before", "err", err)
			return c.s
		}
		s.log.Warn("console: the session store cannot answer", "err", err)
		return nil
	}
	var sess Session
	if err := json.Unmarshal(data, &sess); err != nil || now.After(sess.Expires) {
		s.forget(id)
		return nil
	}
	s.mu.Lock()
	for k, v := range s.m { // every 10 s per session at most: drop the expired
		if now.After(v.s.Expires) {
			delete(s.m, k)
		}
	}
	s.m[id] = &cached{s: &sess, read: now}
	s.mu.Unlock()
	return &sess
}

func (s *sessions) forget(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, id)
}

func (s *sessions) drop(ctx context.Context, id string) error {
	s.forget(id)
	if s.store == nil {
		return nil
	}
	if err := s.store.Delete(ctx, storeKey(id)); err != nil && !errors.Is(err, ErrNoSession) {
		return fmt.Errorf("console: end the session: %w", err)
	}
	return nil
}

// ErrLogin is a wrong name, password or token.
var ErrLogin = errors.New("wrong user name, password or token")

// dummyHash makes an unknown user cost a bcrypt comparison too.
var dummyHash, _ = bcrypt.GenerateFromPassword([]byte("not a password"), bcrypt.MinCost)

// check returns the role of a login: the admin token (no user name), or
// a user's name and password; grant fingerprints what it was checked
// against.
func (c *Console) check(user, secret string) (name, role, grant string, err error) {
	if user == "" || user == AdminUser {
		// Without an admin token the hub's API is open (loopback only,
		// by config validation), and so is the console.
		if c.adminToken == "" || subtle.ConstantTimeCompare([]byte(secret), []byte(c.adminToken)) == 1 {
			return AdminUser, Operator, c.grant(AdminUser), nil
		}
		return "", "", "", ErrLogin
	}
	for _, u := range c.cfg.Users {
		if u.Name == user {
			if bcrypt.CompareHashAndPassword([]byte(u.PasswordHash), []byte(secret)) != nil {
				return "", "", "", ErrLogin
			}
			return u.Name, u.Role, c.grant(u.Name), nil
		}
	}
	_ = bcrypt.CompareHashAndPassword(dummyHash, []byte(secret))
	return "", "", "", ErrLogin
}

// grant is the fingerprint of what user logs in with now ("" for a user
// that no longer exists).
func (c *Console) grant(user string) string {
	var what string
	if user == AdminUser {
		what = "admin\x00" + c.adminToken
	} else {
		for _, u := range c.cfg.Users {
			if u.Name == user {
				what = "user\x00" + u.Name + "\x00" + u.Role + "\x00" + u.PasswordHash
			}
		}
		if what == "" {
			return ""
		}
	}
	sum := sha256.Sum256([]byte(what))
	return hex.EncodeToString(sum[:16])
}

// SessionOf returns the request's console session, or nil: none, expired,
// logged out (on any hub), or made with a token, password or role that
// has changed since.
func (c *Console) SessionOf(r *http.Request) *Session {
	ck, err := r.Cookie(CookieName)
	if err != nil || ck.Value == "" {
		return nil
	}
	s := c.sessions.get(r.Context(), ck.Value)
	if s == nil || s.Grant == "" || subtle.ConstantTimeCompare([]byte(s.Grant), []byte(c.grant(s.User))) != 1 {
		return nil
	}
	return s
}

// CheckCSRF compares the form field or header with the session's token.
func CheckCSRF(s *Session, r *http.Request) bool {
	got := r.Header.Get(CSRFHeader)
	if got == "" {
		got = r.PostFormValue("csrf")
	}
	return s != nil && got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(s.CSRF)) == 1
}

func (c *Console) setCookie(w http.ResponseWriter, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{
		Name: CookieName, Value: value, Path: "/", MaxAge: maxAge,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: c.tls,
	})
}
