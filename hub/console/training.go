package console

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"

	"github.com/outpost-edge/outpost/hub/api"
)

// TrainingBackend is what the retraining pages read: the trainer's status
// (counted since the trainer started on the lease holder) and each
// model's history (stored in JetStream, so it outlives restarts and
// answers on every hub).
type TrainingBackend interface {
	Training(ctx context.Context) []api.TrainingStatus
	// TrainingHistory is a model's events, oldest first; ok is false for
	// a model the hub does not train.
	TrainingHistory(ctx context.Context, model string) (evs []api.TrainingEvent, ok bool, err error)
}

// driftKinds are the history's drift events: production's error rate
// (drift), a cohort's (cohort_drift), the fleet's input data
// (fleet_data_drift).
var driftKinds = []string{"drift", "cohort_drift", "fleet_data_drift"}

// trainingPage is what training.html shows for one model.
type trainingPage struct {
	Status   api.TrainingStatus
	Accuracy Chart
	Drifts   []api.TrainingEvent // newest first
	Releases []api.TrainingEvent // release and failed, newest first
	Events   []api.TrainingEvent // a page of everything, newest first
	Total    int
	Offset   int
	Next     int // the next page's offset (0: none)
	Prev     int // the previous page's offset (-1: none)
	Err      string
}

const trainingPageSize = 50

func (c *Console) trainingList(w http.ResponseWriter, r *http.Request, s *Session) {
	c.render(w, http.StatusOK, "training_list", view{Title: "Retraining", Nav: "training", Session: s, Data: c.b.Training(r.Context())})
}

func (c *Console) training(w http.ResponseWriter, r *http.Request, s *Session) {
	name := r.PathValue("model")
	var p trainingPage
	found := false
	for _, st := range c.b.Training(r.Context()) {
		if st.Model == name {
			p.Status, found = st, true
		}
	}
	evs, ok, err := c.b.TrainingHistory(r.Context(), name)
	if !found || !ok {
		c.fail(w, r, s, http.StatusNotFound, fmt.Errorf("the hub does not train %q (trainer.models)", name))
		return
	}
	if err != nil {
		p.Err = err.Error()
	}
	p.Accuracy = AccuracyChart(evs)
	for i := len(evs) - 1; i >= 0; i-- {
		e := evs[i]
		switch {
		case slices.Contains(driftKinds, e.Kind):
			p.Drifts = append(p.Drifts, e)
		case e.Kind == "release" || e.Kind == "failed":
			p.Releases = append(p.Releases, e)
		}
	}
	p.Total = len(evs)
	p.Offset, _ = strconv.Atoi(r.URL.Query().Get("offset"))
	p.Offset = max(0, min(p.Offset, max(0, p.Total-1)))
	newest := slices.Clone(evs)
	slices.Reverse(newest)
	p.Events = newest[min(p.Offset, len(newest)):min(len(newest), p.Offset+trainingPageSize)]
	if p.Offset+trainingPageSize < p.Total {
		p.Next = p.Offset + trainingPageSize
	}
	p.Prev = -1
	if p.Offset > 0 {
		p.Prev = max(0, p.Offset-trainingPageSize)
	}
	c.render(w, http.StatusOK, "training", view{Title: "Retraining " + name, Nav: "training", Session: s, Data: p})
}

// AccuracyChart plots, for every decision the trainer made (a release or
// a candidate kept back), the holdout accuracy of the champion in
// production beside the challenger's, and production's recent accuracy
// at each drift.
func AccuracyChart(evs []api.TrainingEvent) Chart {
	ch := Chart{ID: "accuracy-chart", Title: "Holdout accuracy: champion (production) against challenger (candidate)", Unit: "%", Min: 0, Max: 100,
		Series: []Series{{Name: "champion"}, {Name: "challenger"}, {Name: "production at a drift"}}}
	for _, e := range evs {
		switch e.Kind {
		case "release", "kept":
			ch.Series[0].Points = append(ch.Series[0].Points, Point{e.At, 100 * e.ProductionAccuracy})
			ch.Series[1].Points = append(ch.Series[1].Points, Point{e.At, 100 * e.CandidateAccuracy})
		case "drift":
			if e.ProductionAccuracy > 0 {
				ch.Series[2].Points = append(ch.Series[2].Points, Point{e.At, 100 * e.ProductionAccuracy})
			}
		}
	}
	return ch
}
