package ctl

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/outpost-edge/outpost/hub/rollout"
)

// labelsFlag collects --select k=v.
type labelsFlag map[string]string

func (l labelsFlag) String() string { return fmt.Sprint(map[string]string(l)) }
func (l labelsFlag) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("want key=value, got %q", s)
	}
	l[k] = v
	return nil
}

func rolloutStart(ctx context.Context, c *cli, args []string) error {
	fs := flag.NewFlagSet("rollout start", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	sel := labelsFlag{}
	fs.Var(sel, "select", "target devices with this label (key=value, repeatable)")
	waves := fs.String("waves", "1,10%,50%,100%", "waves: device counts or cumulative percentages")
	bake := fs.Duration("bake", time.Minute, "wait after a wave passes its gates")
	waveTimeout := fs.Duration("wave-timeout", 30*time.Minute, "halt a wave that has not finished by then")
	minHealthy := fs.Float64("min-healthy", 1, "fraction of devices that must commit")
	maxErr := fs.Float64("max-error-rate", 0.01, "errors per row a device may see in probation")
	maxLat := fs.Float64("max-latency-factor", 3, "latency in probation as a multiple of the previous model's")
	minInf := fs.Int64("min-inferences", 0, "inferences a device must serve in probation to count as healthy")
	shadow := fs.Duration("shadow", 0, "run the new version beside the old one this long on each device before switching")
	split := fs.Float64("split", 0, "with --shadow: share of windows the new version serves meanwhile (0: compare only)")
	minAgree := fs.Float64("min-agreement", 0, "with --shadow: share of windows on which both versions must agree")
	watch := fs.Bool("watch", false, "follow the rollout until it ends")
	name, v, err := nameVersion(fs, args, "rollout start MODEL VERSION [--select k=v] [--waves 1,10%,50%,100%] [--bake 1m] [--watch]")
	if err != nil {
		return err
	}
	version, _ := strconv.ParseInt(v, 10, 64) // checked by nameVersion
	ws, err := rollout.ParseWaves(*waves)
	if err != nil {
		return fmt.Errorf("%w: --waves: %w", errUsage, err)
	}
	spec := rollout.Spec{Model: name, Version: version, Selector: sel, Waves: ws, Bake: rollout.Duration(*bake), WaveTimeout: rollout.Duration(*waveTimeout),
		Gates:  rollout.Gates{MinHealthy: *minHealthy, MaxErrorRate: *maxErr, MaxLatencyFactor: *maxLat, MinInferences: *minInf, MinAgreement: *minAgree},
		Shadow: rollout.Duration(*shadow), Split: *split}
	var r rollout.Rollout
	if err := c.call(ctx, http.MethodPost, "/v1/rollouts", spec, &r); err != nil {
		return err
	}
	fmt.Fprintf(c.out, "rollout %s started: %s v%d, waves %v\n", r.ID, name, version, ws)
	if *watch {
		return watchRollout(ctx, c, r.ID)
	}
	return nil
}

func rolloutStatus(ctx context.Context, c *cli, args []string) error {
	fs := flag.NewFlagSet("rollout status", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	watch := fs.Bool("watch", false, "follow the rollout until it ends")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	if fs.NArg() == 0 {
		var list []rollout.Rollout
		if err := c.call(ctx, http.MethodGet, "/v1/rollouts", nil, &list); err != nil {
			return err
		}
		tw := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ROLLOUT\tMODEL\tVERSION\tSTATE\tWAVE\tDEVICES\tREASON")
		for _, r := range list {
			fmt.Fprintf(tw, "%s\t%s\tv%d\t%s\t%d/%d\t%d/%d\t%s\n", r.ID, r.Spec.Model, r.Spec.Version, r.State, r.Wave+1, len(r.Spec.Waves), len(r.Devices), r.Targeted, r.Reason)
		}
		return tw.Flush()
	}
	id := fs.Arg(0)
	if *watch {
		return watchRollout(ctx, c, id)
	}
	var r rollout.Rollout
	if err := c.call(ctx, http.MethodGet, "/v1/rollouts/"+url.PathEscape(id), nil, &r); err != nil {
		return err
	}
	printRollout(c.out, &r)
	return nil
}

func printRollout(w io.Writer, r *rollout.Rollout) {
	fmt.Fprintf(w, "rollout %s: %s v%d on %v\nstate %s, wave %d of %d (%v), %d of %d targeted devices assigned\n",
		r.ID, r.Spec.Model, r.Spec.Version, r.Spec.Selector, r.State, r.Wave+1, len(r.Spec.Waves), r.Spec.Waves, len(r.Devices), r.Targeted)
	if r.Reason != "" {
		fmt.Fprintf(w, "reason: %s\n", r.Reason)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DEVICE\tWAVE\tFROM\tPHASE\tINFERENCES\tERRORS\tLATENCY µs\tSHADOW AGREEMENT\tREASON")
	ids := make([]string, 0, len(r.Devices))
	for id := range r.Devices {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		d := r.Devices[id]
		phase := d.Phase
		if d.Reverted {
			phase += " (reverted)"
		}
		agree := "-"
		if d.Shadow != nil {
			agree = fmt.Sprintf("%.3f of %d", d.Shadow.Agreement, d.Shadow.Rows)
		}
		fmt.Fprintf(tw, "%s\t%d\tv%d\t%s\t%d\t%d\t%.0f\t%s\t%s\n", id, d.Wave+1, d.From, phase, d.Health.Inferences, d.Health.Errors, d.Health.MeanLatencyUS, agree, d.Reason)
	}
	tw.Flush()
}

// watchRollout prints a line whenever the rollout changes, until it ends.
func watchRollout(ctx context.Context, c *cli, id string) error {
	last := ""
	for {
		var r rollout.Rollout
		if err := c.call(ctx, http.MethodGet, "/v1/rollouts/"+url.PathEscape(id), nil, &r); err != nil {
			return err
		}
		counts := r.Counts()
		keys := make([]string, 0, len(counts))
		for k := range counts {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var parts []string
		for _, k := range keys {
			parts = append(parts, fmt.Sprintf("%s=%d", k, counts[k]))
		}
		line := fmt.Sprintf("%s wave %d/%d, %d/%d devices: %s", r.State, r.Wave+1, len(r.Spec.Waves), len(r.Devices), r.Targeted, strings.Join(parts, " "))
		if r.Reason != "" {
			line += " — " + r.Reason
		}
		if line != last {
			fmt.Fprintf(c.out, "%s %s\n", time.Now().Format("15:04:05"), line)
			last = line
		}
		if !rollout.Active(r.State) {
			if r.State != rollout.Completed {
				return fmt.Errorf("rollout %s %s: %s", id, r.State, r.Reason)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

func rolloutAction(action string) func(context.Context, *cli, []string) error {
	return func(ctx context.Context, c *cli, args []string) error {
		if len(args) != 1 {
			return fmt.Errorf("%w: rollout %s ID", errUsage, action)
		}
		var r rollout.Rollout
		if err := c.call(ctx, http.MethodPost, "/v1/rollouts/"+url.PathEscape(args[0])+"/"+action, struct{}{}, &r); err != nil {
			return err
		}
		_, err := fmt.Fprintf(c.out, "rollout %s is %s\n", r.ID, r.State)
		return err
	}
}
