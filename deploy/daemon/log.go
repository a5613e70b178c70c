package daemon

import (
	"io"
	"log/slog"

	"github.com/outpost-edge/outpost/deploy/config"
)

// LogConfig is the logging section every daemon config embeds.
type LogConfig struct {
	Level  string `yaml:"level" usage:"log level: debug, info, warn or error"`
	Format string `yaml:"format" usage:"log format: text or json"`
}

// DefaultLog is info-level text, readable on a terminal.
func DefaultLog() LogConfig { return LogConfig{Level: "info", Format: "text"} }

// Validate checks the section; prefix is its path in the daemon config.
func (c LogConfig) Validate(prefix string, errs *config.Errors) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(c.Level)); err != nil {
		errs.Add(prefix+".level", "must be debug, info, warn or error, got "+quote(c.Level))
	}
	if c.Format != "text" && c.Format != "json" {
		errs.Add(prefix+".format", "must be text or json, got "+quote(c.Format))
	}
}

// NewLogger builds the one logger the daemon injects everywhere.
func (c LogConfig) NewLogger(w io.Writer) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(c.Level)) // validated already
	opts := &slog.HandlerOptions{Level: l}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func quote(s string) string { return "\"" + s + "\"" }
