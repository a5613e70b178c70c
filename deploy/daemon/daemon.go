// Package daemon is the shared body of every Outpost main: flags, typed
// config, --check-config, --version, logging and signal handling. It keeps
// the mains thin and makes all binaries behave the same way.
package daemon

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/outpost-edge/outpost/deploy/config"
	"github.com/outpost-edge/outpost/deploy/version"
)

// Exit codes shared by the daemons.
const (
	ExitOK     = 0
	ExitFailed = 1 // runtime failure
	ExitConfig = 2 // bad flags or configuration
)

// Config is what a daemon's typed config must offer.
type Config interface {
	Validate() error
	Logging() LogConfig
}

// Spec describes one daemon.
type Spec[C Config] struct {
	Name      string // binary name
	EnvPrefix string // e.g. OUTPOST_AGENT
	Summary   string // one line for --help
	Defaults  func() C
	Run       func(ctx context.Context, cfg C, log *slog.Logger) error
	// Check, when set, runs after a passing Validate, at --check-config and
	// before Run: checks of what the config names on this machine that
	// Validate leaves out (the agent's model packages), so that a daemon
	// that could not run refuses before it acts, and the check says so.
	Check func(cfg C) error
	// Aliases are extra flag names for config paths, e.g. "kafka-brokers"
	// for "kafka.brokers".
	Aliases map[string]string
}

// Main parses args, loads and validates the config, then runs until ctx is
// cancelled by SIGINT/SIGTERM. It returns the process exit code.
func Main[C Config](spec Spec[C], args []string, environ []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet(spec.Name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "YAML config file (env "+spec.EnvPrefix+"_CONFIG)")
	check := fs.Bool("check-config", false, "validate the configuration, print the result and exit")
	showVersion := fs.Bool("version", false, "print version and exit")
	cfg := spec.Defaults()
	loader := config.NewLoader(spec.EnvPrefix, cfg, fs)
	for alias, path := range spec.Aliases {
		f := fs.Lookup(path)
		if f == nil {
			panic("daemon: alias " + alias + " of unknown flag " + path) // a programming error in a main
		}
		fs.Var(f.Value, alias, "same as --"+path)
	}
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "%s — %s\n\nUsage: %s [flags]\n\nConfiguration is read from defaults, then --config, then %s_* environment variables, then flags.\n\nFlags:\n", spec.Name, spec.Summary, spec.Name, spec.EnvPrefix)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stdout)
			fs.Usage()
			return ExitOK
		}
		return ExitConfig
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "%s: unexpected arguments: %s\n", spec.Name, strings.Join(fs.Args(), " "))
		return ExitConfig
	}
	if *showVersion {
		fmt.Fprintln(stdout, version.String(spec.Name))
		return ExitOK
	}
	if *cfgPath == "" {
		*cfgPath = lookup(environ, spec.EnvPrefix+"_CONFIG")
	}
	err := loader.Load(cfg, *cfgPath, environ)
	var fieldErrs config.Errors
	if err == nil || errors.As(err, &fieldErrs) {
		// The value checks run on what was read, so one round names every
		// mistake: a misspelt key and a bad value elsewhere together.
		if verr := cfg.Validate(); verr != nil {
			var more config.Errors
			switch {
			case errors.As(verr, &more):
				err = append(fieldErrs, more...)
			case err == nil:
				err = verr
			default:
				err = errors.Join(err, verr)
			}
		}
	}
	if err == nil && spec.Check != nil {
		err = spec.Check(cfg)
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", spec.Name, err)
		return ExitConfig
	}
	if *check {
		fmt.Fprintf(stdout, "%s: configuration OK\n", spec.Name)
		return ExitOK
	}
	log := cfg.Logging().NewLogger(stderr).With("daemon", spec.Name)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log.Info("starting", "version", version.Version, "commit", version.Commit)
	if err := spec.Run(ctx, cfg, log); err != nil && !errors.Is(err, context.Canceled) {
		log.Error("stopped with error", "err", err)
		if errors.Is(err, config.ErrInvalid) {
			return ExitConfig
		}
		return ExitFailed
	}
	log.Info("stopped")
	return ExitOK
}

func lookup(environ []string, key string) string {
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok && k == key {
			return v
		}
	}
	return ""
}
