package console

import (
	"errors"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/hub/rollout"
)

// The streams page charts the sampler's rates, lists the dead letters and
// says who holds the lease; its live part comes alone from
// /streams/charts, which without a session is a 401, not the login page.
func TestStreamsPage(t *testing.T) {
	b := &fakeBackend{ro: &rollout.Rollout{ID: "r1"}, holder: "hub-b",
		dead: []DeadLetter{{Time: now.Add(-time.Minute), Device: "pump-7", Subject: "outpost.v1.pump-7.up.bogus", Reason: "unknown stream bogus", PayloadSize: 2048},
			{Time: now.Add(-2 * time.Minute), Subject: "outpost.v1.x", Reason: "no <device>", PayloadSize: 12}}}
	srv, c := newTestConsole(t, b)
	c.sampler = NewSampler(5*time.Second, time.Minute)
	c.sampler.Sample(now.Add(-10*time.Second), StreamCounters{TopicRecords: map[string]int64{"windows": 1000}, Transactions: 10})
	c.sampler.Sample(now.Add(-5*time.Second), StreamCounters{TopicRecords: map[string]int64{"windows": 1500, "deadletter": 5}, Transactions: 20, Aborts: 1,
		DeadLetters: 5, Backlog: 40, BacklogAge: 3 * time.Second})
	viewer := client(t, srv.URL, url.Values{"user": {"vic"}, "password": {viewerPass}})

	charts := []string{`id="chart-topics"`, `id="chart-backlog"`, `id="chart-backlog-age"`, `id="chart-transactions"`,
		"Records into Kafka per topic", "windows <b>100/s</b>", "deadletter <b>1/s</b>", "commits <b>2/s</b>", "aborts <b>0.200/s</b>",
		"messages <b>40</b>", "oldest <b>3 s</b>", `<tr id="n-topic-windows"><td>records into windows</td><td class="n">1500</td><td class="n">100/s</td>`,
		`<tr id="n-backlog">`, `id="sampled-at"`}
	code, body := get(t, viewer, srv.URL+"/streams")
	if code != http.StatusOK {
		t.Fatalf("streams: %d %s", code, body)
	}
	for _, want := range append(charts, `<a href="/streams" class="on">Streams</a>`, `id="stream-live" data-live="/streams/charts"`,
		`held by <b id="lease-holder">hub-b</b>`, "numbers below are this hub's (hub-a)", `id="dead-letters"`,
		`<a href="/devices/pump-7">pump-7</a>`, "unknown stream bogus", "2.0 KiB", "no &lt;device&gt;", "2026-12-01 11:59:00") {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if strings.Contains(body, `id="dead-letters-error"`) {
		t.Error("an error line without an error")
	}
	if rows := regexp.MustCompile(`<td class="reason">`).FindAllString(body, -1); len(rows) != 2 {
		t.Errorf("%d dead-letter rows, want 2", len(rows))
	}

	resp, err := viewer.Get(srv.URL + "/streams/charts")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("fragment: %d, Cache-Control %q", resp.StatusCode, resp.Header.Get("Cache-Control"))
	}
	_, frag := get(t, viewer, srv.URL+"/streams/charts")
	for _, want := range charts {
		if !strings.Contains(frag, want) {
			t.Errorf("fragment lacks %q", want)
		}
	}
	for _, not := range []string{"<html", "<nav", "dead-letters", "lease-holder"} {
		if strings.Contains(frag, not) {
			t.Errorf("fragment holds %q: more than the live part", not)
		}
	}

	// Kafka unreadable: an error line in its card, the rest rendered.
	b.dead, b.deadErr = nil, errors.New("kafka: dial tcp 127.0.0.1:9092: connection refused")
	b.holder = "hub-a"
	code, body = get(t, viewer, srv.URL+"/streams")
	if code != http.StatusOK || !strings.Contains(body, `<p class="error" id="dead-letters-error">Kafka could not be read: kafka: dial tcp 127.0.0.1:9092: connection refused</p>`) ||
		!strings.Contains(body, `id="chart-topics"`) || strings.Contains(body, `id="dead-letters"`) {
		t.Fatalf("streams without Kafka: %d %s", code, body)
	}
	if !strings.Contains(body, `This hub (<b id="lease-holder">hub-a</b>) holds the pipeline lease`) {
		t.Error("the lease holder's page does not say the bridge runs here")
	}
	b.deadErr = nil
	if _, body = get(t, viewer, srv.URL+"/streams"); !strings.Contains(body, `id="dead-letters-none"`) {
		t.Error("no dead letters, and the page does not say so")
	}

	// No session: the fragment is refused outright, the page redirects.
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for path, want := range map[string]int{"/streams/charts": http.StatusUnauthorized, "/streams": http.StatusSeeOther} {
		resp, err := noRedirect.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("anonymous %s: %d, want %d", path, resp.StatusCode, want)
		}
	}
}

// Without a sampler (or before its first reading) the charts say there
// is no data yet.
func TestStreamsPageBeforeAnyReading(t *testing.T) {
	srv, _ := newTestConsole(t, &fakeBackend{ro: &rollout.Rollout{ID: "r1"}})
	cl := client(t, srv.URL, url.Values{"token": {"tok"}})
	code, body := get(t, cl, srv.URL+"/streams/charts")
	if code != http.StatusOK || strings.Count(body, "no data yet") != 4 || !strings.Contains(body, "No reading yet") {
		t.Fatalf("fragment before any reading: %d %s", code, body)
	}
	if _, body = get(t, cl, srv.URL+"/streams"); !strings.Contains(body, "No hub holds the pipeline lease") {
		t.Error("a free lease is not said")
	}
}
