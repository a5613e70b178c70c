// Package ctl is outpostctl, the operator CLI: fleet managers use it for
// devices, models and rollouts; installers for bundles and enrolment.
//
// The command tree is built on spf13/cobra (flags parsed by spf13/pflag):
// help for every command, flags in any position, shell completion. Each
// command still declares its flags on a standard library flag.FlagSet,
// which the tree adds to its pflag set.
package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/outpost-edge/outpost/deploy/config"
	"github.com/outpost-edge/outpost/deploy/version"
	"github.com/outpost-edge/outpost/sync/state"
)

// Exit codes.
const (
	ExitOK      = 0 // the command did what it was asked
	ExitFailure = 1 // it failed, or the hub (or a check) refused it
	ExitUsage   = 2 // the command line was wrong: unknown command, bad flag or argument
)

// Environment for the connection settings; flags and --context win over
// it, and it wins over the config file's current context.
const (
	EnvHub    = "OUTPOST_HUB"
	EnvToken  = "OUTPOST_TOKEN"
	EnvCA     = "OUTPOST_HUB_CA"
	EnvConfig = "OUTPOST_CONFIG"
	// Older names, still read when the new ones are unset.
	EnvHubURL   = "OUTPOST_HUB_URL"
	EnvHubToken = "OUTPOST_HUB_TOKEN"
)

// DefaultHub is the hub URL when nothing names one.
const DefaultHub = "http://127.0.0.1:8080"

// runFunc runs a command with its positional arguments; its flags are
// already parsed.
type runFunc func(ctx context.Context, c *cli, args []string) error

// command is one `outpostctl <group> <verb>`.
type command struct {
	path    string // e.g. "device list"
	args    string // positional arguments for the usage line, e.g. "ID"
	usage   string
	example string
	// define declares the command's flags on fs and returns its runner.
	define func(fs *flag.FlagSet) runFunc
	read   bool // takes -o table|wide|json|yaml (and --json)
	watch  bool // takes --watch
}

// plain is define for a command without flags of its own.
func plain(run runFunc) func(*flag.FlagSet) runFunc {
	return func(*flag.FlagSet) runFunc { return run }
}

type cli struct {
	hub, token string
	connErr    error // why there is no hub to call (a bad URL, a missing context)
	out        io.Writer
	client     *http.Client
	format     string // table, wide, json or yaml
	watch      bool
	interval   time.Duration
	flags      *pflag.FlagSet // the command's parsed flags
}

var commands = []command{
	{path: "device list", usage: "list enrolled devices with what each runs and its last reported state", read: true, watch: true, define: plain(deviceList),
		example: "outpostctl device list\noutpostctl device list -o json\noutpostctl device list --watch --hub https://hub.example:8443"},
	{path: "device show", args: "ID", usage: "show a device: enrolment, what it runs, its last report with each pipeline's live health and the uplink (-o wide: rows per call and totals), and its timeline (update phases, state changes, drift, enrolment)", read: true, watch: true, define: deviceShow,
		example: "outpostctl device show pump-7\noutpostctl device show pump-7 --limit 200 -o json"},
	{path: "device add", args: "ID", usage: "enrol a device; prints its credentials as an agent environment file", define: deviceAdd,
		example: "outpostctl device add pump-7 --label site=lab > pump-7.env"},
	{path: "device token", usage: "issue a one-time enrolment token to flash with a bundle; prints the token", define: deviceToken,
		example: "outpostctl device token --label site=lab --ttl 48h\noutpostctl device token --device pump-7 --json"},
	{path: "device revoke", args: "ID", usage: "refuse a device from now on and disconnect it", define: plain(deviceRevoke),
		example: "outpostctl device revoke pump-7"},
	{path: "model push", args: "DIR", usage: "register a model package in the hub (validated; a new candidate version)", define: plain(modelPush),
		example: "outpostctl model push ./bearing-v2"},
	{path: "model list", usage: "list registered models with their latest, production and canary versions", read: true, watch: true, define: plain(modelList),
		example: "outpostctl model list\noutpostctl model list -o yaml"},
	{path: "model show", args: "NAME", usage: "show every version of a model: lineage, stage, metrics, history", read: true, define: plain(modelShow),
		example: "outpostctl model show bearing\noutpostctl model show bearing -o json"},
	{path: "model promote", args: "NAME VERSION", usage: "move a version to canary or production (the previous one steps down)", define: modelPromote,
		example: "outpostctl model promote bearing 2 --stage canary --why 'recall +3 points'"},
	{path: "model archive", args: "NAME VERSION", usage: "archive a version", define: modelArchive,
		example: "outpostctl model archive bearing 1 --why superseded"},
	{path: "quant", args: "IN_DIR OUT_DIR", usage: "quantize a model package, print the report (accuracy on held-out rows, size, latency per engine), refuse a result that misses a bound", define: quantCmd,
		example: "outpostctl quant ./bearing ./bearing-int8 --mode int8-static --data rows.jsonl --max-accuracy-drop 1\noutpostctl quant ./bearing ./bearing-fp16 --mode fp16 -o json"},
	{path: "model inspect", args: "PATH", usage: "show an ONNX file's inputs, outputs, ops, parameters and size", define: modelInspect,
		example: "outpostctl model inspect model.onnx\noutpostctl model inspect ./bearing --json"},
	{path: "model validate", args: "DIR", usage: "check a model package: manifest, graph fit, golden vectors", define: modelValidate,
		example: "outpostctl model validate ./bearing\noutpostctl model validate ./bearing --engine go --json"},
	{path: "model import", args: "MODEL.onnx", usage: "make a package from an ONNX file: manifest from flags or a YAML spec, golden vectors from sample rows; validated", define: modelImport,
		example: "outpostctl model import model.onnx --out ./bearing --data sample.csv --spec spec.yaml\noutpostctl model import iris.onnx --out ./iris --data iris.csv --labels setosa,versicolor,virginica"},
	{path: "model run", args: "DIR", usage: "run a package over CSV rows offline: scores, the manifest's label, the graph's own label (go)", define: modelRun,
		example: "outpostctl model run ./bearing --data rows.csv\noutpostctl model run ./bearing --data rows.csv --engine go -o json"},
	{path: "rollout start", args: "MODEL VERSION", usage: "roll a registered version out in gated waves", define: rolloutStart,
		example: "outpostctl rollout start bearing 2 --select site=lab --waves 1,10%,100% --bake 5m --watch\noutpostctl rollout start bearing 3 --shadow 10m --min-agreement 0.95"},
	{path: "rollout list", usage: "list rollouts", read: true, watch: true, define: plain(rolloutList),
		example: "outpostctl rollout list\noutpostctl rollout list -o json"},
	{path: "rollout status", args: "[ID]", usage: "list rollouts, or show one with each device's progress", read: true, watch: true, define: plain(rolloutStatus),
		example: "outpostctl rollout status\noutpostctl rollout status r-20260101-1 --watch\noutpostctl rollout status r-20260101-1 -o yaml"},
	{path: "rollout pause", args: "ID", usage: "stop starting new devices (gates still halt)", define: plain(rolloutAction("pause")),
		example: "outpostctl rollout pause r-20260101-1"},
	{path: "rollout resume", args: "ID", usage: "continue a paused rollout", define: plain(rolloutAction("resume")),
		example: "outpostctl rollout resume r-20260101-1"},
	{path: "rollout abort", args: "ID", usage: "end a rollout and send its updated devices back", define: plain(rolloutAction("abort")),
		example: "outpostctl rollout abort r-20260101-1"},
	{path: "rollout rollback", args: "ID", usage: "send every device the rollout moved back to its previous version now, in one step (no waves, no bake); --staged: undo a completed rollout through its own waves", define: rolloutRollback,
		example: "outpostctl rollout rollback r-20260101-1\noutpostctl rollout rollback r-20260101-1 --staged   # a completed rollout, undone through its waves and bakes"},
	{path: "firmware keygen", usage: "offline: make the bundle signing key (bundle.key) and its public half (bundle.pub)", define: firmwareKeygen,
		example: "outpostctl firmware keygen --dir /media/offline/bundle-keys"},
	{path: "firmware build", usage: "write a signed device bundle with the agent of a release (make dist), a binary or the source tree", define: firmwareBuild,
		example: "outpostctl firmware build --arch arm64 --dist ./dist --key bundle.key --root root.json \\n  --hub-url https://hub:8443 --mqtt-url ssl://hub:8883 --model ./bearing --out pump.bundle"},
	{path: "firmware flash", usage: "verify a bundle and install it into a root filesystem or ext4 image", define: firmwareFlash,
		example: "outpostctl firmware flash --bundle pump.bundle --pubkey bundle.pub --target sd.img --token-file token.txt"},
	{path: "train status", usage: "every retrained model: production version, labelled rows, accuracies, drifts, releases", read: true, watch: true, define: plain(trainStatus),
		example: "outpostctl train status\noutpostctl train status -o json --watch"},
	{path: "train run", args: "MODEL", usage: "judge the learner against production now (as a trigger would)", define: plain(trainRun),
		example: "outpostctl train run bearing"},
	{path: "train history", args: "MODEL", usage: "a model's drifts, checks and releases", read: true, define: plain(trainHistory),
		example: "outpostctl train history bearing\noutpostctl train history bearing -o yaml"},
	{path: "agent publish", args: "BINARY", usage: "sign an agent build for self-update; roll it out as model outpost-agent", define: agentPublish,
		example: "outpostctl agent publish dist/linux-arm64/outpost-agent --build 42 --version 1.4.0"},
	{path: "keys init", usage: "offline: make root keys, the hub's online keys and signed root v1", define: keysInit,
		example: "outpostctl keys init --dir /media/offline/keys --root-keys 3 --threshold 2"},
	{path: "keys rotate", usage: "offline: build the next root version (unsigned)", define: keysRotate,
		example: "outpostctl keys rotate --root root.json --out root-v2.json --revoke root-2.key --new-online --dir keys/"},
	{path: "keys sign", usage: "offline: add one root key's signature", define: keysSign,
		example: "outpostctl keys sign --root root-v2.json --key root-1.key"},
	{path: "keys show", args: "ROOT.json [PREVIOUS.json]", usage: "show a root's version, threshold and signatures, and whether it is ready", define: plain(keysShow),
		example: "outpostctl keys show root-v2.json root.json"},
}

// groups describes the command groups.
var groups = map[string]string{
	"device":   "enrolled devices: list, enrol, tokens, revoke",
	"model":    "model packages and the hub's registry",
	"rollout":  "gated rollouts of a model version",
	"firmware": "signed device bundles: keys, build, flash",
	"train":    "the hub's retraining loop",
	"agent":    "agent builds for self-update",
	"keys":     "offline TUF root keys",
}

// Main runs outpostctl and returns its exit code (ExitOK, ExitFailure or
// ExitUsage).
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	ran := false // a command's own code ran: errors before that are usage errors
	root := newRoot(ctx, stdout, stderr, &ran)
	root.SetArgs(args)
	cmd, err := root.ExecuteC()
	if err == nil {
		return ExitOK
	}
	name := "outpostctl"
	if cmd != nil {
		name = cmd.CommandPath()
	}
	fmt.Fprintf(stderr, "%s: %v\n", name, err)
	if !ran || errors.Is(err, errUsage) {
		fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", name)
		return ExitUsage
	}
	return ExitFailure
}

// globals are the connection flags every command takes.
type globals struct {
	hub, token, ca, context string
}

const rootLong = `outpostctl — operator CLI for Outpost fleets.

Connection settings (hub URL, CA file, token) come, each on its own, from
the first of: its flag (--hub, --token, --ca-file); the context --context
names; the environment (OUTPOST_HUB, OUTPOST_TOKEN, OUTPOST_HUB_CA); the
current context of the config file ($OUTPOST_CONFIG, default
~/.config/outpost/config.yaml; see outpostctl config); ` + DefaultHub + `.
A hub URL without a scheme (127.0.0.1:8080) means http://.

Exit codes: 0 ok; 1 the command failed or was refused (by the hub, a gate,
a check); 2 usage: unknown command, bad flag or argument.`

func newRoot(ctx context.Context, stdout, stderr io.Writer, ran *bool) *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:           "outpostctl",
		Short:         "operator CLI for Outpost fleets",
		Long:          rootLong,
		Version:       version.String("outpostctl"),
		SilenceErrors: true,
		SilenceUsage:  true,
		RunE:          groupRun,
		Args:          cobra.ArbitraryArgs,
	}
	root.SetVersionTemplate("{{.Version}}\n")
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(flagError)
	pf := root.PersistentFlags()
	pf.StringVar(&g.hub, "hub", "", "hub API URL (env "+EnvHub+"; default "+DefaultHub+")")
	pf.StringVar(&g.token, "token", "", "hub admin bearer token (env "+EnvToken+")")
	pf.StringVar(&g.ca, "ca-file", "", "PEM CA bundle for an https hub with a private CA (env "+EnvCA+")")
	pf.StringVar(&g.context, "context", "", "connection context from the config file (default: its current context)")
	parents := map[string]*cobra.Command{}
	for _, cmd := range commands {
		words := strings.Fields(cmd.path)
		parent := root
		for _, w := range words[:len(words)-1] {
			p, ok := parents[w]
			if !ok {
				p = &cobra.Command{Use: w, Short: groups[w], RunE: groupRun, Args: cobra.ArbitraryArgs}
				parent.AddCommand(p)
				parents[w] = p
			}
			parent = p
		}
		parent.AddCommand(leaf(ctx, cmd, g, stdout, ran))
	}
	root.AddCommand(configCommand(stdout, ran), &cobra.Command{
		Use: "version", Short: "print outpostctl's version", Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			_, err := fmt.Fprintln(stdout, version.String("outpostctl"))
			return err
		},
	})
	return root
}

// flagHints say what a flag of a type takes, for a value that does not parse.
var flagHints = map[string]string{
	"duration": "a duration such as 90s, 30m or 24h",
	"float":    "a number",
	"float64":  "a number",
	"int":      "a whole number",
	"int64":    "a whole number",
	"bool":     "true or false",
}

var badValue = regexp.MustCompile(`^invalid argument ".*" for "(?:-\w, )?--([\w-]+)" flag`)

// flagError makes a flag error a usage error, saying what the flag takes
// where pflag only says "parse error".
func flagError(cmd *cobra.Command, err error) error {
	if m := badValue.FindStringSubmatch(err.Error()); m != nil {
		if f := cmd.Flags().Lookup(m[1]); f != nil {
			if hint, ok := flagHints[f.Value.Type()]; ok {
				return fmt.Errorf("%w: %w: want %s", errUsage, err, hint)
			}
		}
	}
	return fmt.Errorf("%w: %w", errUsage, err)
}

// groupRun is a group's own run: help, or an unknown command.
func groupRun(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return fmt.Errorf("%w: unknown command %q", errUsage, strings.TrimSpace(cmd.CommandPath()+" "+strings.Join(args, " ")))
	}
	return cmd.Help()
}

// leaf makes one command's cobra.Command.
func leaf(ctx context.Context, cmd command, g *globals, stdout io.Writer, ran *bool) *cobra.Command {
	words := strings.Fields(cmd.path)
	gofs := flag.NewFlagSet(cmd.path, flag.ContinueOnError)
	gofs.SetOutput(io.Discard)
	run := cmd.define(gofs)
	cc := &cobra.Command{
		Use:     strings.TrimSpace(words[len(words)-1] + " " + cmd.args),
		Short:   cmd.usage,
		Example: "  " + strings.ReplaceAll(cmd.example, "\n", "\n  "),
		Args:    cobra.ArbitraryArgs, // each command checks its own
	}
	addGoFlags(cc.Flags(), gofs)
	var format string
	var asJSON, watch bool
	var interval time.Duration
	if cmd.read {
		cc.Flags().StringVarP(&format, "output", "o", "table", "output format: table, wide, json or yaml")
		cc.Flags().BoolVar(&asJSON, "json", false, "same as -o json")
	}
	if cmd.watch {
		cc.Flags().BoolVarP(&watch, "watch", "w", false, "keep polling the hub and print again whenever the answer changes")
		cc.Flags().DurationVar(&interval, "interval", time.Second, "with --watch: how often to poll")
	}
	cc.RunE = func(cc *cobra.Command, args []string) error {
		if asJSON {
			format = "json"
		}
		switch format {
		case "", "table", "wide", "json", "yaml":
		default:
			return fmt.Errorf("%w: -o must be table, wide, json or yaml, got %q", errUsage, format)
		}
		if interval <= 0 {
			interval = time.Second
		}
		*ran = true
		c := g.cli(stdout)
		c.format, c.watch, c.interval, c.flags = format, watch, interval, cc.Flags()
		return run(ctx, c, args)
	}
	return cc
}

// addGoFlags adds a standard library flag set to a pflag set. A pair of
// flags -o and -output on one value becomes --output with shorthand -o.
func addGoFlags(to *pflag.FlagSet, from *flag.FlagSet) {
	from.VisitAll(func(f *flag.Flag) {
		if f.Name == "o" && from.Lookup("output") != nil {
			return
		}
		pf := pflag.PFlagFromGoFlag(f)
		if o := from.Lookup("o"); f.Name == "output" && o != nil {
			pf.Shorthand, pf.Usage = "o", o.Usage
		}
		to.AddFlag(pf)
	})
}

// cli resolves the connection settings into a client. A bad setting is
// kept and reported when the command calls the hub, so that offline
// commands are not held up by it.
func (g *globals) cli(out io.Writer) *cli {
	c := &cli{out: out, client: &http.Client{Timeout: 30 * time.Second}}
	cn, err := g.resolve()
	if err != nil {
		c.connErr = err
		return c
	}
	if c.hub, err = NormalizeHub(cn.hub); err != nil {
		c.connErr = err
		return c
	}
	c.token = cn.token
	tc, err := config.ClientTLS{CAFile: cn.ca}.Build()
	if err != nil {
		c.connErr = fmt.Errorf("%w: CA file: %w", errUsage, err)
		return c
	}
	if tc != nil {
		c.client.Transport = &http.Transport{TLSClientConfig: tc, Proxy: http.ProxyFromEnvironment}
	}
	return c
}

var errUsage = errors.New("usage")

// call sends one API request; in and out are JSON bodies (either may be nil).
func (c *cli) call(ctx context.Context, method, path string, in, out any) error {
	if c.connErr != nil {
		return c.connErr
	}
	var payload []byte
	if in != nil {
		var err error
		if payload, err = json.Marshal(in); err != nil {
			return err
		}
	}
	// A hub answering 503 (its cluster electing leaders) is asked again,
	// as its Retry-After says, for up to half a minute.
	for deadline := time.Now().Add(30 * time.Second); ; {
		media := ""
		if in != nil {
			media = "application/json"
		}
		err := c.once(ctx, method, path, payload, media, out)
		var busy *errBusy
		if !errors.As(err, &busy) || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(busy.after):
		}
	}
}

// errBusy is a 503 with how long to wait.
type errBusy struct {
	after time.Duration
	err   error
}

func (e *errBusy) Error() string { return e.err.Error() }

// once sends one request, with payload as a body of media ("": none).
func (c *cli) once(ctx context.Context, method, path string, payload []byte, media string, out any) error {
	if c.connErr != nil {
		return c.connErr
	}
	var body io.Reader
	if media != "" {
		body = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.hub+path, body)
	if err != nil {
		return err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if media != "" {
		req.Header.Set("Content-Type", media)
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return fmt.Errorf("hub at %s: %w", c.hub, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		var e struct{ Error string }
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(b))
		}
		err := fmt.Errorf("hub at %s: %s: %s", c.hub, resp.Status, e.Error)
		if resp.StatusCode == http.StatusServiceUnavailable {
			after := 2 * time.Second
			if n, perr := strconv.Atoi(resp.Header.Get("Retry-After")); perr == nil && n > 0 && n < 60 {
				after = time.Duration(n) * time.Second
			}
			return &errBusy{after: after, err: err}
		}
		return err
	}
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("hub at %s: decode %s: %w", c.hub, path, err)
	}
	return nil
}

func deviceList(ctx context.Context, c *cli, _ []string) error {
	return show(ctx, c, "/v1/devices", nil, func(tw io.Writer, devs []state.Device, wide bool) {
		head := "DEVICE\tENROLMENT\tSTATUS\tMODELS\tAGENT\tARCH\tBOOT\tLAST REPORT"
		if wide {
			head += "\tBUILD\tLABELS\tOUTBOX"
		}
		fmt.Fprintln(tw, head)
		for _, d := range devs {
			enrol := "active"
			if d.RevokedAt != nil {
				enrol = "revoked"
			}
			status, models, agent, arch, boot, last, build, outbox := "-", "-", "-", "-", "-", "-", "-", "-"
			if r := d.Reported; r != nil {
				status, agent, arch, boot, last = r.Status, r.AgentVersion, r.Arch, fmt.Sprint(r.Boot), r.ReportedAt.Format(time.RFC3339)
				if len(r.Models) > 0 {
					var ms []string
					for _, m := range r.Models {
						ms = append(ms, fmt.Sprintf("%s=%s v%d", m.Pipeline, m.Model, m.Version))
					}
					models = strings.Join(ms, ",")
				}
				if r.Build > 0 {
					build = fmt.Sprint(r.Build)
				}
				if r.Outbox != nil {
					outbox = fmt.Sprintf("%d records", r.Outbox.Records)
				}
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s", d.ID, enrol, status, models, agent, arch, boot, last)
			if wide {
				fmt.Fprintf(tw, "\t%s\t%s\t%s", build, labelString(d.Labels, "-"), outbox)
			}
			fmt.Fprintln(tw)
		}
	})
}

func deviceShow(fs *flag.FlagSet) runFunc {
	limit := fs.Int("limit", 50, "timeline entries to show, newest first (1 to 1000)")
	return func(ctx context.Context, c *cli, args []string) error {
		if len(args) != 1 {
			return fmt.Errorf("%w: device show ID [--limit N]", errUsage)
		}
		if *limit < 1 || *limit > 1000 {
			return fmt.Errorf("%w: --limit %d: want 1 to 1000", errUsage, *limit)
		}
		path := fmt.Sprintf("/v1/devices/%s?limit=%d", url.PathEscape(args[0]), *limit)
		return show(ctx, c, path, nil, func(tw io.Writer, d state.DeviceDetail, wide bool) {
			dev := d.Device
			enrol := "active since " + dev.CreatedAt.Format(time.RFC3339)
			if dev.RevokedAt != nil {
				enrol = "revoked at " + dev.RevokedAt.Format(time.RFC3339)
			}
			fmt.Fprintf(tw, "DEVICE\t%s\nENROLMENT\t%s\nLABELS\t%s\n", dev.ID, enrol, labelString(dev.Labels, "-"))
			if r := dev.Reported; r != nil {
				fmt.Fprintf(tw, "STATUS\t%s (reported %s, boot %d)\nAGENT\t%s build %d, %s\n", r.Status, r.ReportedAt.Format(time.RFC3339), r.Boot, r.AgentVersion, r.Build, r.Arch)
				for _, m := range r.Models {
					fmt.Fprintf(tw, "PIPELINE\t%s: %s v%d (slot %s)\n", m.Pipeline, m.Model, m.Version, orDash(m.Slot))
				}
				if r.Outbox != nil {
					fmt.Fprintf(tw, "OUTBOX\t%d records\n", r.Outbox.Records)
				}
				writeHealth(tw, r, wide)
			} else {
				fmt.Fprintf(tw, "STATUS\tnever reported\n")
			}
			fmt.Fprintf(tw, "\nTIMELINE (%d of %d, newest first)\n", len(d.Timeline), d.TimelineTotal)
			fmt.Fprintln(tw, "AT\tKIND\tDETAIL")
			for _, e := range d.Timeline {
				fmt.Fprintf(tw, "%s\t%s\t%s\n", e.At.Format(time.RFC3339), e.Kind, e.Detail)
			}
		})
	}
}

// writeHealth writes a reported state's live health: a line per
// pipeline (wide: with rows per call and the totals) and the uplink.
func writeHealth(tw io.Writer, r *state.Reported, wide bool) {
	if r.Pipelines == nil && r.Uplink == nil {
		fmt.Fprintf(tw, "HEALTH\tnot reported by this agent version\n")
		return
	}
	for _, h := range r.Pipelines {
		rates := "rates not yet measured"
		if h.RateSeconds > 0 {
			rates = fmt.Sprintf("%.2f inferences/s, %.2f events/s", h.InferencesPerSec, h.EventsPerSec)
		}
		latency := "no model call yet"
		if h.LatencyCalls > 0 {
			latency = fmt.Sprintf("latency p50/p99 %.1f/%.1f µs", h.LatencyP50US, h.LatencyP99US)
		}
		line := fmt.Sprintf("%s: %s, errors %s, NaN %s, %s", h.Pipeline, rates, percentOf(h.InferErrors, h.Rows()), percentOf(h.NaN, h.Rows()), latency)
		if wide {
			if h.LatencyCalls > 0 {
				line += fmt.Sprintf(" over %d calls of %.1f rows", h.LatencyCalls, h.RowsPerCall)
			}
			line += fmt.Sprintf("; since start %d events, %d windows, %d inferences, %d errors, %d NaN, %d late, %d rejected",
				h.Events, h.Windows, h.Inferences, h.InferErrors, h.NaN, h.Late, h.Rejected)
		}
		fmt.Fprintf(tw, "HEALTH\t%s\n", line)
	}
	if u := r.Uplink; u != nil {
		conn := "disconnected"
		if u.Connected {
			conn = "connected"
		}
		if u.Broker != "" {
			conn += " to " + u.Broker
		}
		ack := "never"
		if u.LastAckAt != nil {
			ack = u.LastAckAt.Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "UPLINK\t%s, last ack %s, %d ack errors, %d reconnects\n", conn, ack, u.AckErrors, u.Reconnects)
	}
}

// percentOf is n of d as a percentage, or "-" without rows.
func percentOf(n, d int64) string {
	if d <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f%%", 100*float64(n)/float64(d))
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// labelString writes labels as k=v,k=v in key order, or none when empty.
func labelString(m map[string]string, none string) string {
	if len(m) == 0 {
		return none
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		keys[i] = k + "=" + m[k]
	}
	return strings.Join(keys, ",")
}

func deviceAdd(fs *flag.FlagSet) runFunc {
	labels := map[string]string{}
	fs.Func("label", "k=v label (repeatable)", labelFlag(labels))
	return func(ctx context.Context, c *cli, args []string) error {
		if len(args) != 1 {
			return fmt.Errorf("%w: device add ID [--label k=v ...]", errUsage)
		}
		id := args[0]
		var creds state.Credentials
		if err := c.call(ctx, http.MethodPost, "/v1/devices", map[string]any{"id": id, "labels": labels}, &creds); err != nil {
			return err
		}
		// An environment file: systemd's EnvironmentFile= and `set -a; . file` read it.
		fmt.Fprintf(c.out, "# outpost-agent credentials for %s; keep this file secret\n", creds.Device)
		fmt.Fprintf(c.out, "OUTPOST_AGENT_DEVICE_ID=%s\nOUTPOST_AGENT_HUB_USERNAME=%s\nOUTPOST_AGENT_HUB_PASSWORD=%s\n", creds.Device, creds.Username, creds.Password)
		return nil
	}
}

func deviceToken(fs *flag.FlagSet) runFunc {
	device := fs.String("device", "", "enrol exactly this device id (default: the device proposes one)")
	ttl := fs.Duration("ttl", 24*time.Hour, "how long the token stays valid")
	asJSON := fs.Bool("json", false, "print the token with its device, labels and expiry as JSON")
	labels := map[string]string{}
	fs.Func("label", "k=v label (repeatable)", labelFlag(labels))
	return func(ctx context.Context, c *cli, args []string) error {
		if len(args) != 0 {
			return fmt.Errorf("%w: device token [--device ID] [--label k=v ...] [--ttl 24h] [--json]", errUsage)
		}
		var tok state.EnrolToken
		if err := c.call(ctx, http.MethodPost, "/v1/enrolment-tokens", map[string]any{"device": *device, "labels": labels, "ttl": ttl.String()}, &tok); err != nil {
			return err
		}
		if *asJSON {
			enc := json.NewEncoder(c.out)
			enc.SetIndent("", "  ")
			return enc.Encode(tok)
		}
		fmt.Fprintln(c.out, tok.Token)
		return nil
	}
}

// labelFlag parses repeatable k=v flags into m.
func labelFlag(m map[string]string) func(string) error {
	return func(s string) error {
		k, v, ok := strings.Cut(s, "=")
		if !ok || k == "" {
			return fmt.Errorf("label %q is not k=v", s)
		}
		m[k] = v
		return nil
	}
}

func deviceRevoke(ctx context.Context, c *cli, args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("%w: device revoke ID", errUsage)
	}
	if err := c.call(ctx, http.MethodPost, "/v1/devices/"+args[0]+"/revoke", nil, nil); err != nil {
		return err
	}
	fmt.Fprintf(c.out, "revoked %s\n", args[0])
	return nil
}
