package ctl

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/outpost-edge/outpost/hub/api"
)

// labelsFlag collects --select k=v.
type labelsFlag map[string]string

func (l labelsFlag) String() string { return labelString(l, "") }
func (l labelsFlag) Type() string   { return "key=value" }
func (l labelsFlag) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("want key=value, got %q", s)
	}
	l[k] = v
	return nil
}

func rolloutStart(fs *flag.FlagSet) runFunc {
	sel := labelsFlag{}
	fs.Var(sel, "select", "target devices with this label (key=value, repeatable)")
	waves := fs.String("waves", "1,10%,50%,100%", "waves: device counts or cumulative percentages")
	bake := fs.Duration("bake", time.Minute, "wait after a wave passes its gates")
	waveTimeout := fs.Duration("wave-timeout", 30*time.Minute, "halt a wave that has not finished by then")
	minHealthy := fs.Float64("min-healthy", 1, "fraction of devices that must commit, 0 to 1")
	maxErr := fs.Float64("max-error-rate", 0.01, "errors per row a device may see in probation, 0 to 1")
	maxLat := fs.Float64("max-latency-factor", 3, "latency at self-test and in probation as a multiple of the running model's")
	maxMS := fs.Float64("max-latency-ms", 0, "each device's latency budget: refuse the version at self-test where its p99 per call is over this (0: none; fractions allowed)")
	maxRSS := fs.Float64("max-rss-mb", 0, "each device's memory budget: refuse the version at self-test where loading it grows the agent's RSS by more (0: none)")
	minInf := fs.Int64("min-inferences", 0, "inferences a device must serve in probation to count as healthy")
	shadow := fs.Duration("shadow", 0, "run the new version beside the old one this long on each device before switching")
	split := fs.Float64("split", 0, "with --shadow: share of windows the new version serves meanwhile, 0 to 1 (0: compare only)")
	minAgree := fs.Float64("min-agreement", 0, "with --shadow: share of windows on which both versions must agree, 0 to 1")
	allowEmpty := fs.Bool("allow-empty", false, "start even if the selector matches no device that runs the model yet: wait for one (up to --wave-timeout)")
	watch := fs.Bool("watch", false, "follow the rollout until it ends")
	return func(ctx context.Context, c *cli, args []string) error {
		name, v, err := nameVersion(fs, args, "rollout start MODEL VERSION [--select k=v] [--waves 1,10%,50%,100%] [--bake 1m] [--watch]")
		if err != nil {
			return err
		}
		version, _ := strconv.ParseInt(v, 10, 64) // checked by nameVersion
		ws, err := api.ParseWaves(*waves)
		if err != nil {
			return fmt.Errorf("%w: --waves: %w", errUsage, err)
		}
		for _, r := range []struct {
			flag string
			v    float64
		}{{"min-healthy", *minHealthy}, {"max-error-rate", *maxErr}, {"split", *split}, {"min-agreement", *minAgree}} {
			if math.IsNaN(r.v) || r.v < 0 || r.v > 1 {
				return fmt.Errorf("%w: --%s is a share from 0 to 1, got %v", errUsage, r.flag, r.v)
			}
		}
		switch {
		case math.IsNaN(*maxLat) || *maxLat <= 0:
			return fmt.Errorf("%w: --max-latency-factor must be above 0, got %v", errUsage, *maxLat)
		case math.IsNaN(*maxMS) || math.IsInf(*maxMS, 0) || *maxMS < 0 || math.IsNaN(*maxRSS) || math.IsInf(*maxRSS, 0) || *maxRSS < 0:
			return fmt.Errorf("%w: --max-latency-ms and --max-rss-mb must be finite and not negative", errUsage)
		case *minInf < 0:
			return fmt.Errorf("%w: --min-inferences must not be negative, got %d", errUsage, *minInf)
		case *bake < 0 || *waveTimeout < 0 || *shadow < 0:
			return fmt.Errorf("%w: --bake, --wave-timeout and --shadow must not be negative", errUsage)
		case *split > 0 && *shadow == 0:
			return fmt.Errorf("%w: --split needs --shadow", errUsage)
		}
		spec := api.Spec{Model: name, Version: version, Selector: sel, Waves: ws, Bake: api.Duration(*bake), WaveTimeout: api.Duration(*waveTimeout),
			Gates:  api.Gates{MinHealthy: *minHealthy, MaxErrorRate: *maxErr, MaxLatencyFactor: *maxLat, MinInferences: *minInf, MinAgreement: *minAgree, MaxLatencyMS: *maxMS, MaxRSSMB: *maxRSS},
			Shadow: api.Duration(*shadow), Split: *split, AllowEmpty: *allowEmpty}
		var r api.Rollout
		if err := c.call(ctx, http.MethodPost, "/v1/rollouts", spec, &r); err != nil {
			return err
		}
		fmt.Fprintf(c.out, "rollout %s started: %s v%d on %s, waves %s\n", r.ID, name, version, selectorString(sel), wavesString(ws))
		if *watch {
			return watchRollout(ctx, c, r.ID)
		}
		return nil
	}
}

// selectorString says which devices a selector targets.
func selectorString(sel map[string]string) string {
	if len(sel) == 0 {
		return "every device"
	}
	return labelString(sel, "")
}

func wavesString(ws []api.Wave) string {
	parts := make([]string, len(ws))
	for i, w := range ws {
		parts[i] = w.String()
	}
	return strings.Join(parts, ",")
}

// reason is a rollout's reason without its state repeated in front of it
// ("aborted: by the operator" for an aborted rollout reads "by the
// operator", and so does "rolled back by the operator" for a rolled_back
// one).
func reason(r *api.Rollout) string {
	s := strings.TrimPrefix(r.Reason, r.State+": ")
	return strings.TrimPrefix(s, strings.ReplaceAll(r.State, "_", " ")+" ")
}

func rolloutList(ctx context.Context, c *cli, _ []string) error {
	return show(ctx, c, "/v1/rollouts", nil, rolloutTable)
}

func rolloutTable(tw io.Writer, list []api.Rollout, wide bool) {
	head := "ROLLOUT\tMODEL\tVERSION\tSTATE\tWAVE\tDEVICES\tREASON"
	if wide {
		head += "\tSELECTOR\tWAVES\tCREATED\tUPDATED"
	}
	fmt.Fprintln(tw, head)
	for _, r := range list {
		fmt.Fprintf(tw, "%s\t%s\tv%d\t%s\t%d/%d\t%d/%d\t%s", r.ID, r.Spec.Model, r.Spec.Version, r.State, r.Wave+1, len(r.Spec.Waves), len(r.Devices), r.Targeted, dash(r.Reason))
		if wide {
			fmt.Fprintf(tw, "\t%s\t%s\t%s\t%s", selectorString(r.Spec.Selector), wavesString(r.Spec.Waves), r.CreatedAt.Format(time.RFC3339), r.UpdatedAt.Format(time.RFC3339))
		}
		fmt.Fprintln(tw)
	}
}

func rolloutStatus(ctx context.Context, c *cli, args []string) error {
	switch len(args) {
	case 0:
		return rolloutList(ctx, c, nil)
	case 1:
	default:
		return fmt.Errorf("%w: rollout status [ID]", errUsage)
	}
	id := args[0]
	if c.watch && (c.format == "table" || c.format == "wide" || c.format == "") {
		return watchRollout(ctx, c, id)
	}
	var end *api.Rollout
	err := show(ctx, c, "/v1/rollouts/"+url.PathEscape(id), func(r api.Rollout) bool {
		end = &r
		return !api.Active(r.State)
	}, func(w io.Writer, r api.Rollout, wide bool) { printRollout(w, &r, wide) })
	if err == nil && c.watch && end != nil && !api.Active(end.State) && end.State != api.Completed {
		return fmt.Errorf("rollout %s %s: %s", id, end.State, reason(end))
	}
	return err
}

// printRollout shows a rollout and each device's progress; wide adds
// what each device measured of the candidate at self-test.
func printRollout(w io.Writer, r *api.Rollout, wide bool) {
	fmt.Fprintf(w, "rollout %s: %s v%d on %s\nstate %s, wave %d of %d (%s), %d of %d targeted devices assigned\n",
		r.ID, r.Spec.Model, r.Spec.Version, selectorString(r.Spec.Selector), r.State, r.Wave+1, len(r.Spec.Waves), wavesString(r.Spec.Waves), len(r.Devices), r.Targeted)
	if r.Reason != "" {
		fmt.Fprintf(w, "reason: %s\n", r.Reason)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	head := "DEVICE\tWAVE\tFROM\tPHASE\tINFERENCES\tERRORS\tLATENCY µs\tSHADOW AGREEMENT"
	if wide {
		head += "\tSELFTEST P50/P99 µs\tBATCH P99 µs\tRSS +MB\tREAL ROWS"
	}
	fmt.Fprintln(tw, head+"\tREASON")
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
		latency := "-" // not serving the candidate yet
		if d.Health.Calls > 0 || d.Health.MeanLatencyUS > 0 {
			latency = fmt.Sprintf("%.0f", d.Health.MeanLatencyUS)
		}
		row := fmt.Sprintf("%s\t%d\tv%d\t%s\t%d\t%d\t%s\t%s", id, d.Wave+1, d.From, phase, d.Health.Inferences, d.Health.Errors, latency, agree)
		if wide {
			st := "-\t-\t-\t-"
			if s := d.SelfTest; s != nil {
				st = fmt.Sprintf("%.0f/%.0f\t%.0f\t%.1f\t%d", s.LatencyP50US, s.LatencyP99US, s.BatchP99US, s.RSSGrowthMB, s.RealRows)
			}
			row += "\t" + st
		}
		fmt.Fprintf(tw, "%s\t%s\n", row, d.Reason)
	}
	tw.Flush()
}

// watchRollout prints a line whenever the rollout changes, until it ends.
func watchRollout(ctx context.Context, c *cli, id string) error {
	last := ""
	for {
		var r api.Rollout
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
		if !api.Active(r.State) {
			if r.State != api.Completed {
				return fmt.Errorf("rollout %s %s: %s", id, r.State, reason(&r))
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(c.interval):
		}
	}
}

func rolloutAction(action string) func(context.Context, *cli, []string) error {
	return func(ctx context.Context, c *cli, args []string) error {
		if len(args) != 1 {
			return fmt.Errorf("%w: rollout %s ID", errUsage, action)
		}
		var r api.Rollout
		if err := c.call(ctx, http.MethodPost, "/v1/rollouts/"+url.PathEscape(args[0])+"/"+action, struct{}{}, &r); err != nil {
			return err
		}
		_, err := fmt.Fprintf(c.out, "rollout %s is %s\n", r.ID, r.State)
		return err
	}
}

// rolloutRollback sends a rollout's devices back at once and says how
// many; with --staged, a completed rollout is undone through its own waves,
// bakes and gates instead: a new rollout of the version it replaced.
func rolloutRollback(fs *flag.FlagSet) runFunc {
	staged := fs.Bool("staged", false, "for a completed rollout: roll the version it replaced out again through the same selector, waves, bake and gates, as a new rollout")
	return func(ctx context.Context, c *cli, args []string) error {
		if len(args) != 1 {
			return fmt.Errorf("%w: rollout rollback ID [--staged]", errUsage)
		}
		if *staged {
			return stagedRollback(ctx, c, args[0])
		}
		var r api.Rollout
		if err := c.call(ctx, http.MethodPost, "/v1/rollouts/"+url.PathEscape(args[0])+"/rollback", struct{}{}, &r); err != nil {
			return err
		}
		back := 0
		for _, d := range r.Devices {
			if d.Reverted {
				back++
			}
		}
		_, err := fmt.Fprintf(c.out, "rollout %s is %s: %d devices sent back to the versions they ran before %s v%d (outpostctl rollout status %s --watch follows them)\n",
			r.ID, r.State, back, r.Spec.Model, r.Spec.Version, r.ID)
		return err
	}
}

// stagedRollback starts the rollout that undoes completed rollout id: the
// version its devices ran before, with its selector, waves, bake and
// gates. Devices that came from different versions cannot go back as one
// rollout; an active rollout is rolled back at once or aborted.
func stagedRollback(ctx context.Context, c *cli, id string) error {
	var r api.Rollout
	if err := c.call(ctx, http.MethodGet, "/v1/rollouts/"+url.PathEscape(id), nil, &r); err != nil {
		return err
	}
	if r.State != api.Completed {
		return fmt.Errorf("rollout %s is %s: --staged undoes a completed rollout (an active one: rollout rollback %s without --staged, or rollout abort %s)", id, r.State, id, id)
	}
	from, fresh := map[int64]int{}, 0
	for _, d := range r.Devices {
		switch {
		case d.Reverted:
		case d.From > 0:
			from[d.From]++
		default:
			fresh++
		}
	}
	if fresh > 0 {
		return fmt.Errorf("rollout %s installed %s on %d devices that ran no version of it before: a staged rollback would give them a version they never ran; rollout rollback %s sends each device back to what it had", id, r.Spec.Model, fresh, id)
	}
	// Undoing an older rollout would skip the versions rolled out since.
	var versions []api.ModelVersion
	if err := c.call(ctx, http.MethodGet, "/v1/models/"+url.PathEscape(r.Spec.Model), nil, &versions); err != nil {
		return err
	}
	for _, v := range versions {
		if v.Stage == "production" && v.Version != r.Spec.Version {
			return fmt.Errorf("rollout %s put %s v%d out, but production is v%d now: undo the later rollout first", id, r.Spec.Model, r.Spec.Version, v.Version)
		}
	}
	if len(from) != 1 {
		vs := make([]string, 0, len(from))
		for v, n := range from {
			vs = append(vs, fmt.Sprintf("v%d (%d devices)", v, n))
		}
		sort.Strings(vs)
		if len(vs) == 0 {
			return fmt.Errorf("rollout %s moved no device from an earlier version: nothing to roll back", id)
		}
		return fmt.Errorf("rollout %s moved devices from %s: one staged rollback cannot send them to one version; rollout rollback %s sends each to its own", id, strings.Join(vs, ", "), id)
	}
	var prev int64
	for v := range from {
		prev = v
	}
	spec := r.Spec
	spec.Version, spec.AllowEmpty = prev, false
	var back api.Rollout
	if err := c.call(ctx, http.MethodPost, "/v1/rollouts", spec, &back); err != nil {
		return err
	}
	_, err := fmt.Fprintf(c.out, "rollout %s started: %s v%d back on %s, waves %s (undoes %s; outpostctl rollout status %s --watch follows it)\n",
		back.ID, spec.Model, prev, selectorString(spec.Selector), wavesString(spec.Waves), id, back.ID)
	return err
}
