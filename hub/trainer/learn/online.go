package learn

import (
	"fmt"

	"github.com/outpost-edge/outpost/models/drift"
)

// Retrain is the hub's loop over one model's labelled stream, the way the
// fleet sees it (ADWIN and Page-Hinkley watch production's errors): Production is the model devices run, frozen between
// releases; a learner trains on every labelled row (test-then-train, with
// replay). A release is considered when ADWIN finds the production
// model's error rate has changed (a concept drift) or every Every rows;
// the learner becomes the candidate, judged against production on the
// rows both predicted before the learner trained on them (a holdout), and
// replaces production only if it is better by Margin.
type Retrain struct {
	Production Model
	Learner    Model
	Replay     *Replay
	Batch      int     // rows per training step (32)
	ReplayRows int     // replayed rows mixed into each step
	Holdout    int     // rows judged after a trigger
	Margin     float64 // accuracy the candidate must win by
	Every      int     // rows between scheduled checks (0: drift only)

	// The detectors at their defaults (ADWIN's delta drift.DefaultADWINDelta).
	adwin             drift.ADWIN
	ph                drift.PageHinkley
	bx                [][]float64
	by                []int
	judging           int // rows left in the holdout, 0 when not judging
	prodOK, candOK    int
	sinceCheck        int
	Drifts, Releases  int
	Checks, Decisions int
	// LastDetector names the detector of the last drift.
	LastDetector string
	// The last decision's holdout accuracies.
	LastProduction, LastCandidate float64
	ProductionAccuracy            *Prequential // of the model devices run
	LearnerAccuracy               *Prequential
	Log                           func(format string, args ...any)
}

// NewRetrain starts from a production model; the learner begins as its copy.
func NewRetrain(production Model, replay *Replay) *Retrain {
	return &Retrain{Production: production, Learner: production.Clone(), Replay: replay, Batch: 32, ReplayRows: 8,
		Holdout: 500, Margin: 0.01, ProductionAccuracy: NewPrequential(1000), LearnerAccuracy: NewPrequential(1000)}
}

// Observe takes one labelled row: both models predict it, then the
// learner learns it. It reports whether production predicted it right.
func (r *Retrain) Observe(x []float64, y int) (bool, error) {
	prodRight := Argmax(r.Production.Predict(x)) == y
	learnRight := Argmax(r.Learner.Predict(x)) == y
	r.ProductionAccuracy.Add(prodRight)
	r.LearnerAccuracy.Add(learnRight)
	if r.judging > 0 {
		r.judging--
		if prodRight {
			r.prodOK++
		}
		if learnRight {
			r.candOK++
		}
		if r.judging == 0 {
			r.decide()
		}
	}
	errv := 1.0
	if prodRight {
		errv = 0
	}
	// ADWIN sees any change of the error rate; Page-Hinkley a sustained
	// rise, sooner when the rise is small.
	byADWIN, byPH := r.adwin.Update(errv), r.ph.Update(errv)
	if (byADWIN || byPH) && r.judging == 0 {
		r.Drifts++
		r.LastDetector = "adwin"
		if !byADWIN {
			r.LastDetector = "page-hinkley"
		}
		// The old concept's rows now teach the wrong answer.
		r.Replay.Reset()
		r.Check("drift in the production model's error rate")
	}
	r.sinceCheck++
	if r.Every > 0 && r.sinceCheck >= r.Every && r.judging == 0 {
		r.Check("schedule")
	}
	r.bx, r.by = append(r.bx, x), append(r.by, y)
	r.Replay.Add(x, y)
	if len(r.bx) >= r.Batch {
		bx, by := r.Replay.Mix(r.bx, r.by, r.ReplayRows)
		if _, err := r.Learner.Fit(bx, by); err != nil {
			return prodRight, fmt.Errorf("learn: train: %w", err)
		}
		r.bx, r.by = r.bx[:0], r.by[:0]
	}
	return prodRight, nil
}

// Check starts judging the learner against production on the next
// Holdout rows (an operator's "train run", or a trigger); one already
// running continues.
func (r *Retrain) Check(why string) {
	if r.judging > 0 {
		return
	}
	r.judging, r.prodOK, r.candOK, r.sinceCheck = r.Holdout, 0, 0, 0
	r.Checks++
	if r.Log != nil {
		r.Log("retrain check: %s", why)
	}
}

// decide promotes the learner when it beat production on the holdout.
func (r *Retrain) decide() {
	prod, cand := float64(r.prodOK)/float64(r.Holdout), float64(r.candOK)/float64(r.Holdout)
	r.LastProduction, r.LastCandidate = prod, cand
	r.Decisions++
	if cand >= prod+r.Margin {
		r.Production = r.Learner.Clone()
		r.Releases++
		r.adwin.Reset()
		r.ph.Reset()
		if r.Log != nil {
			r.Log("release: candidate %.3f beats production %.3f on %d held-out rows", cand, prod, r.Holdout)
		}
		return
	}
	if r.Log != nil {
		r.Log("kept production %.3f; candidate %.3f", prod, cand)
	}
}
