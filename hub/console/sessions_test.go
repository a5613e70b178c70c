package console

import (
	"context"
	"errors"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/outpost-edge/outpost/hub/rollout"
)

// memSessions is a session store shared by two consoles (two hubs), that
// can be made to fail.
type memSessions struct {
	mu   sync.Mutex
	m    map[string][]byte
	down bool
}

func (s *memSessions) Put(_ context.Context, k string, v []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down {
		return errors.New("nats: no responders available for request")
	}
	s.m[k] = v
	return nil
}

func (s *memSessions) Get(_ context.Context, k string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down {
		return nil, errors.New("nats: no responders available for request")
	}
	v, ok := s.m[k]
	if !ok {
		return nil, ErrNoSession
	}
	return v, nil
}

func (s *memSessions) Delete(_ context.Context, k string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, k)
	return nil
}

// Logins in the shared store: a login on one hub is valid on another and
// after a restart; a logout on one ends it on the other within
// sessionFresh; a store that cannot answer keeps a login this hub has
// read; a rotated admin token, a changed password or role, or a removed
// user ends the session; the store never holds the cookie.
func TestSessionsAcrossHubs(t *testing.T) {
	store := &memSessions{m: map[string][]byte{}}
	var mu sync.Mutex
	clock := now
	tick := func(d time.Duration) { mu.Lock(); clock = clock.Add(d); mu.Unlock() }
	hash := func(p string) string {
		h, _ := bcrypt.GenerateFromPassword([]byte(p), bcrypt.MinCost)
		return string(h)
	}
	users := []User{{Name: "olga", PasswordHash: hash(operatorPass), Role: Operator}, {Name: "vic", PasswordHash: hash(viewerPass), Role: Viewer}}
	hubOf := func(token string, users []User) *httptest.Server {
		cfg := Defaults()
		cfg.Users = users
		b := &fakeBackend{devs: fleet(2), ro: &rollout.Rollout{ID: "r1", State: rollout.Running}}
		c, err := New(cfg, b, Options{AdminToken: token, Sessions: store, Now: func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }})
		if err != nil {
			t.Fatal(err)
		}
		mux := http.NewServeMux()
		c.Routes(mux)
		srv := httptest.NewServer(mux)
		t.Cleanup(srv.Close)
		return srv
	}
	a, b := hubOf("tok", users), hubOf("tok", users)
	// One cookie jar across both hubs, as behind a load balancer.
	jar, _ := cookiejar.New(nil)
	cl := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	login := func(srv *httptest.Server, form url.Values) *http.Cookie {
		t.Helper()
		resp, err := cl.PostForm(srv.URL+"/login", form)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusSeeOther || len(resp.Cookies()) != 1 {
			t.Fatalf("login %v: %d", form, resp.StatusCode)
		}
		return resp.Cookies()[0]
	}
	in := func(srv *httptest.Server, ck *http.Cookie) bool {
		t.Helper()
		req, _ := http.NewRequest("GET", srv.URL+"/", nil)
		req.AddCookie(ck)
		resp, err := cl.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}
	ck := login(a, url.Values{"user": {"olga"}, "password": {operatorPass}})
	for k, v := range store.m {
		if strings.Contains(string(v), ck.Value) || k == ck.Value {
			t.Fatal("the store holds the cookie")
		}
	}
	if !in(a, ck) || !in(b, ck) {
		t.Fatal("a login on hub a is not valid on hub b")
	}
	if restarted := hubOf("tok", users); !in(restarted, ck) {
		t.Fatal("a restarted hub lost the login")
	}
	// The store cannot answer: hub b keeps the login it read; a hub
	// that never read it refuses (and logins fail with 503).
	store.mu.Lock()
	store.down = true
	store.mu.Unlock()
	tick(sessionFresh + time.Second)
	if !in(b, ck) {
		t.Fatal("hub b logged the operator out while the store could not answer")
	}
	if in(hubOf("tok", users), ck) {
		t.Fatal("a hub that never read the session let it in while the store was down")
	}
	resp, _ := cl.PostForm(a.URL+"/login", url.Values{"user": {"vic"}, "password": {viewerPass}})
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("login while the store is down: %d", resp.StatusCode)
	}
	store.mu.Lock()
	store.down = false
	store.mu.Unlock()
	// Log out on hub b: hub a refuses the cookie once its copy is stale.
	_, body := get(t, &http.Client{Jar: jar}, b.URL+"/")
	csrf := body[strings.Index(body, `name="csrf" value="`)+19:]
	csrf = csrf[:strings.Index(csrf, `"`)]
	req, _ := http.NewRequest("POST", b.URL+"/logout", strings.NewReader(url.Values{"csrf": {csrf}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.AddCookie(ck)
	if resp, err := cl.Do(req); err != nil || resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("logout: %v %v", resp, err)
	}
	tick(sessionFresh + time.Second)
	if in(a, ck) || in(b, ck) {
		t.Fatal("a logged-out session still lets in")
	}
	// What a session was checked against changes: it ends.
	ck = login(a, url.Values{"token": {"tok"}})
	if in(hubOf("rotated", users), ck) {
		t.Fatal("a session of the old admin token outlived its rotation")
	}
	ck = login(a, url.Values{"user": {"vic"}, "password": {viewerPass}})
	if !in(b, ck) {
		t.Fatal("viewer login")
	}
	promoted := []User{users[0], {Name: "vic", PasswordHash: users[1].PasswordHash, Role: Operator}}
	if in(hubOf("tok", promoted), ck) || in(hubOf("tok", users[:1]), ck) {
		t.Fatal("a session outlived its user's role change or removal")
	}
	// Expiry.
	tick(Defaults().SessionTTL + time.Second)
	if in(b, ck) {
		t.Fatal("an expired session lets in")
	}
}
