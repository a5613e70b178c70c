package ctl

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"
)

// Config is outpostctl's config file, like a kubeconfig: named contexts,
// each a hub with its CA and token, and the one in use.
type Config struct {
	CurrentContext string    `yaml:"current-context,omitempty" json:"current_context,omitempty"`
	Contexts       []Context `yaml:"contexts" json:"contexts"`
}

// Context is one hub's connection settings.
type Context struct {
	Name   string `yaml:"name" json:"name"`
	Hub    string `yaml:"hub,omitempty" json:"hub,omitempty"`
	CAFile string `yaml:"ca-file,omitempty" json:"ca_file,omitempty"`
	Token  string `yaml:"token,omitempty" json:"-"`
}

// Find returns the named context, or nil.
func (c *Config) Find(name string) *Context {
	for i := range c.Contexts {
		if c.Contexts[i].Name == name {
			return &c.Contexts[i]
		}
	}
	return nil
}

// ConfigPath is $OUTPOST_CONFIG, else $XDG_CONFIG_HOME/outpost/config.yaml,
// else ~/.config/outpost/config.yaml.
func ConfigPath() string {
	if p := os.Getenv(EnvConfig); p != "" {
		return p
	}
	if x := os.Getenv("XDG_CONFIG_HOME"); x != "" {
		return filepath.Join(x, "outpost", "config.yaml")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return filepath.Join(".config", "outpost", "config.yaml")
	}
	return filepath.Join(home, ".config", "outpost", "config.yaml")
}

// LoadConfig reads the config file; a missing one is an empty config.
func LoadConfig(path string) (*Config, error) {
	var cfg Config
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &cfg, nil
	}
	if err != nil {
		return nil, err
	}
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &cfg, nil
}

// Save writes the config file, readable by its owner only (it holds
// tokens).
func (c *Config) Save(path string) error {
	b, err := yaml.Marshal(c)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}

// conn is a resolved connection.
type conn struct{ hub, token, ca string }

// resolve takes each setting from the first of: its flag, the --context
// context, the environment, the current context, the default.
func (g *globals) resolve() (conn, error) {
	path := ConfigPath()
	cfg, err := LoadConfig(path)
	if err != nil {
		return conn{}, fmt.Errorf("%w: config: %w", errUsage, err)
	}
	var named, current Context
	if g.context != "" {
		c := cfg.Find(g.context)
		if c == nil {
			return conn{}, fmt.Errorf("%w: --context %q: no such context in %s (outpostctl config get-contexts)", errUsage, g.context, path)
		}
		named = *c
	} else if cfg.CurrentContext != "" {
		c := cfg.Find(cfg.CurrentContext)
		if c == nil {
			return conn{}, fmt.Errorf("%w: current context %q is not among the contexts in %s", errUsage, cfg.CurrentContext, path)
		}
		current = *c
	}
	first := func(vs ...string) string {
		for _, v := range vs {
			if v != "" {
				return v
			}
		}
		return ""
	}
	return conn{
		hub:   first(g.hub, named.Hub, os.Getenv(EnvHub), os.Getenv(EnvHubURL), current.Hub, DefaultHub),
		token: first(g.token, named.Token, os.Getenv(EnvToken), os.Getenv(EnvHubToken), current.Token),
		ca:    first(g.ca, named.CAFile, os.Getenv(EnvCA), current.CAFile),
	}, nil
}

// NormalizeHub checks a hub URL: one without a scheme is http://; only
// http and https with a host are accepted.
func NormalizeHub(s string) (string, error) {
	raw := strings.TrimSpace(s)
	full := raw
	if !strings.Contains(full, "://") {
		full = "http://" + full
	}
	u, err := url.Parse(full)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") || u.RawQuery != "" {
		return "", fmt.Errorf("%w: hub URL %q: want http://HOST:PORT or https://HOST:PORT (a URL without a scheme means http://)", errUsage, raw)
	}
	return strings.TrimRight(full, "/"), nil
}

// configCommand is `outpostctl config`: the contexts in the config file.
func configCommand(stdout io.Writer, ran *bool) *cobra.Command {
	cfgCmd := &cobra.Command{Use: "config", Short: "connection contexts in the config file ($" + EnvConfig + ", default ~/.config/outpost/config.yaml)",
		RunE: groupRun, Args: cobra.ArbitraryArgs}
	load := func() (*Config, string, error) {
		*ran = true
		p := ConfigPath()
		c, err := LoadConfig(p)
		return c, p, err
	}
	var format string
	get := &cobra.Command{Use: "get-contexts", Short: "list the contexts; * marks the current one", Args: cobra.NoArgs,
		Example: "  outpostctl config get-contexts\n  outpostctl config get-contexts -o json",
		RunE: func(*cobra.Command, []string) error {
			cfg, _, err := load()
			if err != nil {
				return err
			}
			switch format {
			case "table", "wide", "json", "yaml":
			default:
				return fmt.Errorf("%w: -o must be table, wide, json or yaml, got %q", errUsage, format)
			}
			return render(stdout, format, cfg, func(tw io.Writer, cfg *Config, _ bool) {
				fmt.Fprintln(tw, "CURRENT\tNAME\tHUB\tCA FILE\tTOKEN")
				for _, c := range cfg.Contexts {
					cur, tok := "", "-"
					if c.Name == cfg.CurrentContext {
						cur = "*"
					}
					if c.Token != "" {
						tok = "set"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", cur, c.Name, c.Hub, dash(c.CAFile), tok)
				}
			})
		}}
	get.Flags().StringVarP(&format, "output", "o", "table", "output format: table, json or yaml (tokens are never printed)")
	use := &cobra.Command{Use: "use-context NAME", Short: "make NAME the current context", Args: exactArgs(1),
		Example: "  outpostctl config use-context prod",
		RunE: func(_ *cobra.Command, args []string) error {
			cfg, p, err := load()
			if err != nil {
				return err
			}
			if cfg.Find(args[0]) == nil {
				return fmt.Errorf("no context %q in %s (outpostctl config set-context %s --hub URL)", args[0], p, args[0])
			}
			cfg.CurrentContext = args[0]
			if err := cfg.Save(p); err != nil {
				return err
			}
			_, err = fmt.Fprintf(stdout, "switched to context %q\n", args[0])
			return err
		}}
	current := &cobra.Command{Use: "current-context", Short: "print the current context's name", Args: cobra.NoArgs,
		Example: "  outpostctl config current-context",
		RunE: func(*cobra.Command, []string) error {
			cfg, p, err := load()
			if err != nil {
				return err
			}
			if cfg.CurrentContext == "" {
				return fmt.Errorf("no current context in %s", p)
			}
			_, err = fmt.Fprintln(stdout, cfg.CurrentContext)
			return err
		}}
	var hub, ca, token string
	var makeCurrent bool
	set := &cobra.Command{Use: "set-context NAME", Short: "add a context, or change the settings given of an existing one", Args: exactArgs(1),
		Example: "  outpostctl config set-context prod --hub https://hub.example:8443 --ca-file ca.pem --token $TOKEN --current\n  outpostctl config set-context lab --hub 127.0.0.1:8080",
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, p, err := load()
			if err != nil {
				return err
			}
			if hub != "" {
				if hub, err = NormalizeHub(hub); err != nil {
					return err
				}
			}
			c := cfg.Find(args[0])
			verb := "changed"
			if c == nil {
				cfg.Contexts = append(cfg.Contexts, Context{Name: args[0]})
				c, verb = &cfg.Contexts[len(cfg.Contexts)-1], "added"
			}
			if cmd.Flags().Changed("hub") {
				c.Hub = hub
			}
			if cmd.Flags().Changed("ca-file") {
				c.CAFile = ca
			}
			if cmd.Flags().Changed("token") {
				c.Token = token
			}
			if makeCurrent || cfg.CurrentContext == "" {
				cfg.CurrentContext = c.Name
			}
			if err := cfg.Save(p); err != nil {
				return err
			}
			_, err = fmt.Fprintf(stdout, "%s context %q in %s\n", verb, c.Name, p)
			return err
		}}
	set.Flags().StringVar(&hub, "hub", "", "the context's hub API URL")
	set.Flags().StringVar(&ca, "ca-file", "", "the context's PEM CA bundle")
	set.Flags().StringVar(&token, "token", "", "the context's admin bearer token")
	set.Flags().BoolVar(&makeCurrent, "current", false, "also make it the current context (the first context always is)")
	del := &cobra.Command{Use: "delete-context NAME", Short: "remove a context", Args: exactArgs(1),
		Example: "  outpostctl config delete-context lab",
		RunE: func(_ *cobra.Command, args []string) error {
			cfg, p, err := load()
			if err != nil {
				return err
			}
			kept := cfg.Contexts[:0]
			for _, c := range cfg.Contexts {
				if c.Name != args[0] {
					kept = append(kept, c)
				}
			}
			if len(kept) == len(cfg.Contexts) {
				return fmt.Errorf("no context %q in %s", args[0], p)
			}
			cfg.Contexts = kept
			if cfg.CurrentContext == args[0] {
				cfg.CurrentContext = ""
			}
			if err := cfg.Save(p); err != nil {
				return err
			}
			_, err = fmt.Fprintf(stdout, "deleted context %q\n", args[0])
			return err
		}}
	cfgCmd.AddCommand(get, use, current, set, del)
	return cfgCmd
}

// exactArgs is cobra.ExactArgs as a usage error.
func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return fmt.Errorf("%w: %s takes %d argument(s), got %d", errUsage, cmd.Name(), n, len(args))
		}
		return nil
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
