// Package ctl is outpostctl, the operator CLI: fleet managers use it for
// devices, models and rollouts; installers for bundles and enrolment.
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
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/outpost-edge/outpost/deploy/config"
	"github.com/outpost-edge/outpost/deploy/version"
	"github.com/outpost-edge/outpost/sync/state"
)

// Environment defaults for the global flags.
const (
	EnvHub   = "OUTPOST_HUB_URL"
	EnvToken = "OUTPOST_HUB_TOKEN"
	EnvCA    = "OUTPOST_HUB_CA"
)

// command is one `outpostctl <group> <verb>`.
type command struct {
	path  string // e.g. "device list"
	args  string
	usage string
	run   func(ctx context.Context, c *cli, args []string) error
}

type cli struct {
	hub, token string
	out        io.Writer
	client     *http.Client
}

var commands = []command{
	{"device list", "", "list enrolled devices with their last reported state", deviceList},
	{"device add", "ID [--label k=v ...]", "enrol a device; prints its credentials as an agent environment file", deviceAdd},
	{"device token", "[--device ID] [--label k=v ...] [--ttl 24h] [--json]", "issue a one-time enrolment token to flash with a bundle; prints the token", deviceToken},
	{"device revoke", "ID", "refuse a device from now on and disconnect it", deviceRevoke},
	{"model push", "DIR", "register a model package in the hub (validated; a new candidate version)", modelPush},
	{"model list", "", "list registered models with their latest, production and canary versions", modelList},
	{"model show", "NAME", "show every version of a model: lineage, stage, metrics, history", modelShow},
	{"model promote", "NAME VERSION [--stage canary|production]", "move a version to canary or production (the previous one steps down)", modelPromote},
	{"model archive", "NAME VERSION", "archive a version", modelArchive},
	{"quant", "IN_DIR OUT_DIR [--mode int8-static|int8-dynamic|fp16] [--data F] [--eval-data F | --holdout 0.2] [--max-accuracy-drop POINTS] [--require-faster] [--max-size-ratio R] [-o text|json]", "quantize a model package, print the report (accuracy on held-out rows, size, latency per engine), refuse a result that misses a bound", quantCmd},
	{"model inspect", "PATH [--json]", "show an ONNX file's inputs, outputs, ops, parameters and size", modelInspect},
	{"model validate", "DIR [--engine onnxruntime|go] [--json]", "check a model package: manifest, graph fit, golden vectors", modelValidate},
	{"model import", "MODEL.onnx --out DIR --data X.csv [--spec spec.yaml] [--features F.AGG,...] [--task T] [--labels a,b,...] [--engine onnxruntime|go]", "make a package from an ONNX file: manifest from flags or a YAML spec, golden vectors from sample rows; validated", modelImport},
	{"model run", "DIR --data X.csv [--engine onnxruntime|go] [-o csv|json]", "run a package over CSV rows offline: scores, the manifest's label, the graph's own label (go)", modelRun},
	{"rollout start", "MODEL VERSION [--select k=v] [--waves 1,10%,50%,100%] [--bake 1m] [--watch]", "roll a registered version out in gated waves", rolloutStart},
	{"rollout status", "[ID] [--watch]", "list rollouts, or show one with each device's progress", rolloutStatus},
	{"rollout pause", "ID", "stop starting new devices (gates still halt)", rolloutAction("pause")},
	{"rollout resume", "ID", "continue a paused rollout", rolloutAction("resume")},
	{"rollout abort", "ID", "end a rollout and send its updated devices back", rolloutAction("abort")},
	{"firmware keygen", "--dir DIR", "offline: make the bundle signing key (bundle.key) and its public half (bundle.pub)", firmwareKeygen},
	{"firmware build", "--arch arm64|armv7|amd64 --key K --root ROOT.json --hub-url URL --mqtt-url URL --out F", "cross-compile the agent and write a signed device bundle", firmwareBuild},
	{"firmware flash", "--bundle B --pubkey P --target DIR|IMG.img [--token T] [--device ID]", "verify a bundle and install it into a root filesystem or ext4 image", firmwareFlash},
	{"train status", "", "every retrained model: production version, labelled rows, accuracies, drifts, releases", trainStatus},
	{"train run", "MODEL", "judge the learner against production now (as a trigger would)", trainRun},
	{"train history", "MODEL", "a model's drifts, checks and releases", trainHistory},
	{"agent publish", "BINARY --build N [--version V]", "sign an agent build for self-update; roll it out as model outpost-agent", agentPublish},
	{"keys init", "--dir DIR [--root-keys 3] [--threshold 2]", "offline: make root keys, the hub's online keys and signed root v1", keysInit},
	{"keys rotate", "--root CUR.json --out NEXT.json [--revoke K] [--add-root-keys N] [--new-online] --dir DIR", "offline: build the next root version (unsigned)", keysRotate},
	{"keys sign", "--root ROOT.json --key root-N.key", "offline: add one root key's signature", keysSign},
	{"keys show", "ROOT.json [PREVIOUS.json]", "show a root's version, threshold and signatures, and whether it is ready", keysShow},
}

// Main runs outpostctl and returns its exit code.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("outpostctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	hubURL := fs.String("hub", envOr(EnvHub, "http://127.0.0.1:8080"), "hub API URL (env "+EnvHub+")")
	token := fs.String("token", os.Getenv(EnvToken), "hub admin bearer token (env "+EnvToken+")")
	caFile := fs.String("ca-file", os.Getenv(EnvCA), "PEM CA bundle for an https hub with a private CA (env "+EnvCA+")")
	showVersion := fs.Bool("version", false, "print version and exit")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "outpostctl — operator CLI for Outpost fleets\n\nUsage: outpostctl [flags] <command>\n\nCommands:\n")
		for _, c := range commands {
			fmt.Fprintf(fs.Output(), "  %-36s %s\n", c.path+" "+c.args, c.usage)
		}
		fmt.Fprintf(fs.Output(), "\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stdout)
			fs.Usage()
			return 0
		}
		return 2
	}
	if *showVersion {
		fmt.Fprintln(stdout, version.String("outpostctl"))
		return 0
	}
	rest := fs.Args()
	for _, c := range commands {
		words := strings.Fields(c.path)
		if len(rest) >= len(words) && strings.Join(rest[:len(words)], " ") == c.path {
			cl := &cli{hub: strings.TrimRight(*hubURL, "/"), token: *token, out: stdout, client: &http.Client{Timeout: 30 * time.Second}}
			tc, err := config.ClientTLS{CAFile: *caFile}.Build()
			if err != nil {
				fmt.Fprintf(stderr, "outpostctl: --ca-file: %v\n", err)
				return 2
			}
			if tc != nil {
				cl.client.Transport = &http.Transport{TLSClientConfig: tc, Proxy: http.ProxyFromEnvironment}
			}
			if err := c.run(ctx, cl, rest[len(words):]); err != nil {
				fmt.Fprintf(stderr, "outpostctl %s: %v\n", c.path, err)
				if errors.Is(err, errUsage) {
					return 2
				}
				return 1
			}
			return 0
		}
	}
	fmt.Fprintf(stderr, "outpostctl: unknown command %q\n\n", strings.Join(rest, " "))
	fs.Usage()
	return 2
}

var errUsage = errors.New("usage")

// call sends one API request; in and out are JSON bodies (either may be nil).
func (c *cli) call(ctx context.Context, method, path string, in, out any) error {
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
		err := c.once(ctx, method, path, payload, in != nil, out)
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

// once sends one request.
func (c *cli) once(ctx context.Context, method, path string, payload []byte, hasBody bool, out any) error {
	var body io.Reader
	if hasBody {
		body = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.hub+path, body)
	if err != nil {
		return err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if hasBody {
		req.Header.Set("Content-Type", "application/json")
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
	var devs []state.Device
	if err := c.call(ctx, http.MethodGet, "/v1/devices", nil, &devs); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DEVICE\tENROLMENT\tSTATUS\tAGENT\tARCH\tBOOT\tLAST REPORT")
	for _, d := range devs {
		enrol := "active"
		if d.RevokedAt != nil {
			enrol = "revoked"
		}
		status, agent, arch, boot, last := "-", "-", "-", "-", "-"
		if r := d.Reported; r != nil {
			status, agent, arch, boot, last = r.Status, r.AgentVersion, r.Arch, fmt.Sprint(r.Boot), r.ReportedAt.Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", d.ID, enrol, status, agent, arch, boot, last)
	}
	return tw.Flush()
}

func deviceAdd(ctx context.Context, c *cli, args []string) error {
	fs := flag.NewFlagSet("device add", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	labels := map[string]string{}
	fs.Func("label", "k=v label (repeatable)", labelFlag(labels))
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return fmt.Errorf("%w: device add ID [--label k=v ...]", errUsage)
	}
	id := args[0]
	if err := fs.Parse(args[1:]); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	var creds state.Credentials
	if err := c.call(ctx, http.MethodPost, "/v1/devices", map[string]any{"id": id, "labels": labels}, &creds); err != nil {
		return err
	}
	// An environment file: systemd's EnvironmentFile= and `set -a; . file` read it.
	fmt.Fprintf(c.out, "# outpost-agent credentials for %s; keep this file secret\n", creds.Device)
	fmt.Fprintf(c.out, "OUTPOST_AGENT_DEVICE_ID=%s\nOUTPOST_AGENT_HUB_USERNAME=%s\nOUTPOST_AGENT_HUB_PASSWORD=%s\n", creds.Device, creds.Username, creds.Password)
	return nil
}

func deviceToken(ctx context.Context, c *cli, args []string) error {
	fs := flag.NewFlagSet("device token", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	device := fs.String("device", "", "enrol exactly this device id (default: the device proposes one)")
	ttl := fs.Duration("ttl", 24*time.Hour, "how long the token stays valid")
	asJSON := fs.Bool("json", false, "print the token with its device, labels and expiry as JSON")
	labels := map[string]string{}
	fs.Func("label", "k=v label (repeatable)", labelFlag(labels))
	if err := fs.Parse(args); err != nil || fs.NArg() != 0 {
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

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
