package console

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
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
	User    string
	Role    string
	CSRF    string // sent back with every POST
	Expires time.Time
}

// CanOperate reports whether the session may act.
func (s *Session) CanOperate() bool { return s != nil && s.Role == Operator }

// CookieName is the session cookie.
const CookieName = "outpost_session"

// CSRFHeader carries the session's CSRF token on API calls made with the
// session cookie (forms carry it as the csrf field).
const CSRFHeader = "X-CSRF-Token"

// sessions are kept in memory: a hub restart logs everyone out, and in a
// cluster a login is valid on the hub that made it.
type sessions struct {
	mu  sync.Mutex
	m   map[string]*Session
	ttl time.Duration
}

func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails on Linux
	return base64.RawURLEncoding.EncodeToString(b)
}

func (s *sessions) create(user, role string) (id string, sess *Session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	for k, v := range s.m { // drop the expired
		if now.After(v.Expires) {
			delete(s.m, k)
		}
	}
	id = randomToken()
	sess = &Session{User: user, Role: role, CSRF: randomToken(), Expires: now.Add(s.ttl)}
	s.m[id] = sess
	return id, sess
}

func (s *sessions) get(id string) *Session {
	s.mu.Lock()
	defer s.mu.Unlock()
	sess, ok := s.m[id]
	if !ok {
		return nil
	}
	if time.Now().After(sess.Expires) {
		delete(s.m, id)
		return nil
	}
	return sess
}

func (s *sessions) drop(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, id)
}

// ErrLogin is a wrong name, password or token.
var ErrLogin = errors.New("wrong user name, password or token")

// dummyHash makes an unknown user cost a bcrypt comparison too.
var dummyHash, _ = bcrypt.GenerateFromPassword([]byte("not a password"), bcrypt.MinCost)

// check returns the role of a login: the admin token (no user name), or
// a user's name and password.
func (c *Console) check(user, secret string) (name, role string, err error) {
	if user == "" || user == AdminUser {
		// Without an admin token the hub's API is open (loopback only,
		// by config validation), and so is the console.
		if c.adminToken == "" || subtle.ConstantTimeCompare([]byte(secret), []byte(c.adminToken)) == 1 {
			return AdminUser, Operator, nil
		}
		return "", "", ErrLogin
	}
	for _, u := range c.cfg.Users {
		if u.Name == user {
			if bcrypt.CompareHashAndPassword([]byte(u.PasswordHash), []byte(secret)) != nil {
				return "", "", ErrLogin
			}
			return u.Name, u.Role, nil
		}
	}
	_ = bcrypt.CompareHashAndPassword(dummyHash, []byte(secret))
	return "", "", ErrLogin
}

// SessionOf returns the request's console session, or nil.
func (c *Console) SessionOf(r *http.Request) *Session {
	ck, err := r.Cookie(CookieName)
	if err != nil || ck.Value == "" {
		return nil
	}
	return c.sessions.get(ck.Value)
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
