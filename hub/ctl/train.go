package ctl

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/outpost-edge/outpost/hub/api"
)

func trainStatus(ctx context.Context, c *cli, args []string) error {
	if len(args) != 0 {
		return fmt.Errorf("%w: train status", errUsage)
	}
	return show(ctx, c, "/v1/train", nil, func(tw io.Writer, list []api.TrainingStatus, _ bool) {
		fmt.Fprintln(tw, "MODEL\tPIPELINE\tPRODUCTION\tLABELLED\tPROD ACC (RECENT)\tLEARNER ACC (RECENT)\tDRIFTS\tCHECKS\tRELEASES\tUNMATCHED LABELS\tNOTE")
		for _, s := range list {
			prod := "-"
			if s.Production > 0 {
				prod = fmt.Sprintf("v%d", s.Production)
			}
			if s.Canary > 0 {
				prod += fmt.Sprintf(" (canary v%d)", s.Canary)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%.3f (%.3f)\t%.3f (%.3f)\t%d\t%d\t%d\t%d\t%s\n", s.Model, s.Pipeline, prod, s.Labelled,
				s.ProductionAccuracy, s.RecentProduction, s.LearnerAccuracy, s.RecentLearner, s.Drifts, s.Checks, s.Releases, s.Join.UnmatchedLabels, s.LastError)
		}
	})
}

func trainRun(ctx context.Context, c *cli, args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("%w: train run MODEL", errUsage)
	}
	if err := c.call(ctx, http.MethodPost, "/v1/train/"+url.PathEscape(args[0])+"/run", nil, nil); err != nil {
		return err
	}
	fmt.Fprintf(c.out, "check started: the learner is judged against production on the next labelled rows (outpostctl train history %s)\n", args[0])
	return nil
}

func trainHistory(ctx context.Context, c *cli, args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("%w: train history MODEL", errUsage)
	}
	return show(ctx, c, "/v1/train/"+url.PathEscape(args[0])+"/history", nil, func(tw io.Writer, evs []api.TrainingEvent, _ bool) {
		fmt.Fprintln(tw, "AT\tEVENT\tVERSION\tPRODUCTION ACC\tCANDIDATE ACC\tROLLOUT\tDETAIL")
		for _, e := range evs {
			v := "-"
			if e.Version > 0 {
				v = fmt.Sprintf("v%d", e.Version)
			}
			acc := func(a float64) string { // absent on events that judged nothing
				if a == 0 {
					return "-"
				}
				return fmt.Sprintf("%.3f", a)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.At.Format(time.RFC3339), e.Kind, v, acc(e.ProductionAccuracy), acc(e.CandidateAccuracy), orDash(e.Rollout), orDash(e.Detail))
		}
	})
}
