package console

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/hub/api"
)

// The retraining page of a model: its drifts and releases, newest first,
// the champion/challenger chart from every decision, the history paged,
// and a store that cannot be read named on the page.
func TestTrainingPage(t *testing.T) {
	t0 := now.Add(-2 * time.Hour)
	b := &fakeBackend{}
	for i := range 120 {
		b.history = append(b.history, api.TrainingEvent{At: t0.Add(time.Duration(i) * time.Minute), Kind: "check", Detail: fmt.Sprintf("check-%03d", i)})
	}
	b.history = append(b.history,
		api.TrainingEvent{At: t0.Add(3 * time.Hour), Kind: "drift", Detail: "adwin: production's error rate changed", ProductionAccuracy: 0.61},
		api.TrainingEvent{At: t0.Add(4 * time.Hour), Kind: "kept", ProductionAccuracy: 0.62, CandidateAccuracy: 0.64},
		api.TrainingEvent{At: t0.Add(5 * time.Hour), Kind: "release", Version: 2, Rollout: "bearing-v2-canary", ProductionAccuracy: 0.6, CandidateAccuracy: 0.91},
		api.TrainingEvent{At: t0.Add(6 * time.Hour), Kind: "failed", Version: 3, Detail: "register: the registry is not ready"},
	)
	srv, _ := newTestConsole(t, b)
	cl := client(t, srv.URL, url.Values{"user": {"vic"}, "password": {viewerPass}})
	code, list := get(t, cl, srv.URL+"/training")
	if code != http.StatusOK || !strings.Contains(list, `href="/training/bearing"`) || !strings.Contains(list, "4200") {
		t.Fatalf("list: %d %s", code, list)
	}
	code, page := get(t, cl, srv.URL+"/training/bearing")
	if code != http.StatusOK {
		t.Fatalf("page: %d %s", code, page)
	}
	section := func(id string) string {
		i := strings.Index(page, `id="`+id+`"`)
		if i < 0 {
			t.Fatalf("no #%s in %s", id, page)
		}
		return page[i : i+strings.Index(page[i:], "</section>")]
	}
	if d := section("drifts"); !strings.Contains(d, "adwin") || strings.Contains(d, "check-") {
		t.Errorf("drifts: %s", d)
	}
	r := section("releases")
	if !strings.Contains(r, `href="/rollouts/bearing-v2-canary"`) || !strings.Contains(r, "91%") || strings.Index(r, "not ready") > strings.Index(r, "v2") {
		t.Errorf("releases, newest first: %s", r)
	}
	// Two decisions (kept, release) in each line of the chart; the drift's
	// accuracy as a dot.
	ch := section("history")
	if !strings.Contains(page, `id="accuracy-chart"`) || strings.Count(page, `<polyline class="s0"`) != 1 || strings.Count(page, `<polyline class="s1"`) != 1 ||
		!strings.Contains(page, `<circle class="s2"`) || !strings.Contains(page, "<b>91%</b>") {
		t.Errorf("chart: %s", page)
	}
	// 124 events: the first page holds the newest 50.
	if !strings.Contains(ch, "124 events") || !strings.Contains(ch, "check-119") || strings.Contains(ch, "check-073") || !strings.Contains(ch, `href="?offset=50"`) {
		t.Errorf("history page 1: %s", ch)
	}
	_, page = get(t, cl, srv.URL+"/training/bearing?offset=100")
	if ch = section("history"); !strings.Contains(ch, "check-023") || !strings.Contains(ch, "check-000") || strings.Contains(ch, "check-024") || strings.Contains(ch, "older") {
		t.Errorf("history page 3: %s", ch)
	}
	if code, _ := get(t, cl, srv.URL+"/training/nope"); code != http.StatusNotFound {
		t.Errorf("an untrained model: %d", code)
	}
	b.histErr = errors.New("nats: no responders available for request")
	if _, page = get(t, cl, srv.URL+"/training/bearing"); !strings.Contains(page, `id="history-error"`) || !strings.Contains(page, "no responders") {
		t.Errorf("a store that cannot be read: %s", page)
	}
}
