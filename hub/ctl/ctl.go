// Package ctl is outpostctl, the operator CLI: fleet managers use it for
// devices, models and rollouts; installers for bundles and enrolment.
package ctl

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/outpost-edge/outpost/deploy/version"
	"github.com/outpost-edge/outpost/sync/state"
)

// EnvHub names the hub API URL when --hub is not given.
const EnvHub = "OUTPOST_HUB_URL"

// command is one `outpostctl <group> <verb>`.
type command struct {
	path  string // e.g. "device list"
	usage string
	run   func(ctx context.Context, c *cli, args []string) error
}

type cli struct {
	hub    string
	out    io.Writer
	client *http.Client
}

var commands = []command{
	{"device list", "list devices and their last reported state", deviceList},
}

// Main runs outpostctl and returns its exit code.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("outpostctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	hub := fs.String("hub", envOr(EnvHub, "http://127.0.0.1:8080"), "hub API URL (env "+EnvHub+")")
	showVersion := fs.Bool("version", false, "print version and exit")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "outpostctl — operator CLI for Outpost fleets\n\nUsage: outpostctl [flags] <command>\n\nCommands:\n")
		for _, c := range commands {
			fmt.Fprintf(fs.Output(), "  %-14s %s\n", c.path, c.usage)
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
			cl := &cli{hub: strings.TrimRight(*hub, "/"), out: stdout, client: &http.Client{Timeout: 30 * time.Second}}
			if err := c.run(ctx, cl, rest[len(words):]); err != nil {
				fmt.Fprintf(stderr, "outpostctl %s: %v\n", c.path, err)
				return 1
			}
			return 0
		}
	}
	fmt.Fprintf(stderr, "outpostctl: unknown command %q\n\n", strings.Join(rest, " "))
	fs.Usage()
	return 2
}

func (c *cli) getJSON(ctx context.Context, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.hub+path, nil)
	if err != nil {
		return err
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return fmt.Errorf("hub at %s: %w", c.hub, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("hub at %s: %s: %s", c.hub, resp.Status, strings.TrimSpace(string(body)))
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("hub at %s: decode %s: %w", c.hub, path, err)
	}
	return nil
}

func deviceList(ctx context.Context, c *cli, _ []string) error {
	var devs []state.Reported
	if err := c.getJSON(ctx, "/v1/devices", &devs); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DEVICE\tSTATUS\tAGENT\tARCH\tBOOT\tLAST REPORT")
	for _, d := range devs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", d.Device, d.Status, d.AgentVersion, d.Arch, d.Boot, d.ReportedAt.Format(time.RFC3339))
	}
	return tw.Flush()
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
