package daemon

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/outpost-edge/outpost/deploy/config"
)

type testConfig struct {
	Name string    `yaml:"name"`
	Log  LogConfig `yaml:"log"`
}

func (c *testConfig) Validate() error {
	var errs config.Errors
	if c.Name == "" {
		errs.Add("name", "must not be empty")
	}
	c.Log.Validate("log", &errs)
	return errs.Err()
}

func (c *testConfig) Logging() LogConfig { return c.Log }

func spec(run func(context.Context, *testConfig, *slog.Logger) error) Spec[*testConfig] {
	return Spec[*testConfig]{
		Name: "testd", EnvPrefix: "TESTD", Summary: "test daemon",
		Defaults: func() *testConfig { return &testConfig{Name: "x", Log: DefaultLog()} },
		Run:      run,
	}
}

func noRun(t *testing.T) func(context.Context, *testConfig, *slog.Logger) error {
	return func(context.Context, *testConfig, *slog.Logger) error {
		t.Error("Run must not be called")
		return nil
	}
}

func TestMainModes(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("name: \"\"\nlog:\n  level: loud\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	typo := filepath.Join(t.TempDir(), "typo.yaml")
	if err := os.WriteFile(typo, []byte("name: \"\"\nlog:\n  levle: debug\n  format: [text]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		args   []string
		env    []string
		code   int
		outHas string
		errHas []string
	}{
		{"version", []string{"--version"}, nil, ExitOK, "testd dev (commit unknown)", nil},
		{"help", []string{"--help"}, nil, ExitOK, "Usage: testd", nil},
		{"check ok", []string{"--check-config"}, nil, ExitOK, "configuration OK", nil},
		{"check bad file names fields", []string{"--check-config", "--config", bad}, nil, ExitConfig, "",
			[]string{"name: must not be empty", "log.level: must be debug"}},
		{"yaml and value errors together", []string{"--check-config", "--config", typo}, nil, ExitConfig, "",
			[]string{"log.levle: unknown field (line 3)", "log.format: cannot read !!seq as string (line 4)", "name: must not be empty"}},
		{"config from env", []string{"--check-config"}, []string{"TESTD_CONFIG=" + bad}, ExitConfig, "", []string{"name: must not be empty"}},
		{"missing file", []string{"--config", "/nonexistent.yaml"}, nil, ExitConfig, "", []string{"/nonexistent.yaml"}},
		{"unknown flag", []string{"--nope"}, nil, ExitConfig, "", []string{"nope"}},
		{"stray argument", []string{"extra"}, nil, ExitConfig, "", []string{"unexpected arguments: extra"}},
	}
	for _, tt := range tests {
		var out, errb bytes.Buffer
		code := Main(spec(noRun(t)), tt.args, tt.env, &out, &errb)
		if code != tt.code {
			t.Errorf("%s: code %d, want %d (stderr %s)", tt.name, code, tt.code, errb.String())
		}
		if !strings.Contains(out.String(), tt.outHas) {
			t.Errorf("%s: stdout %q lacks %q", tt.name, out.String(), tt.outHas)
		}
		for _, h := range tt.errHas {
			if !strings.Contains(errb.String(), h) {
				t.Errorf("%s: stderr %q lacks %q", tt.name, errb.String(), h)
			}
		}
	}
}

func TestRunErrorsMapToExitCodes(t *testing.T) {
	tests := []struct {
		err  error
		code int
	}{
		{nil, ExitOK},
		{context.Canceled, ExitOK},
		{errors.New("disk on fire"), ExitFailed},
		{config.Errors{{Path: "a", Reason: "b"}}, ExitConfig},
	}
	for _, tt := range tests {
		var seen *testConfig
		var out, errb bytes.Buffer
		code := Main(spec(func(_ context.Context, c *testConfig, _ *slog.Logger) error {
			seen = c
			return tt.err
		}), []string{"--name", "flagged"}, nil, &out, &errb)
		if code != tt.code {
			t.Errorf("Run error %v: code %d, want %d", tt.err, code, tt.code)
		}
		if seen == nil || seen.Name != "flagged" {
			t.Errorf("Run got config %+v, want name from flag", seen)
		}
	}
}

func TestFlagAlias(t *testing.T) {
	sp := spec(func(_ context.Context, c *testConfig, _ *slog.Logger) error {
		if c.Name != "from-alias" {
			t.Errorf("name = %q, want from-alias", c.Name)
		}
		return nil
	})
	sp.Aliases = map[string]string{"the-name": "name"}
	var out, errb bytes.Buffer
	if code := Main(sp, []string{"--the-name", "from-alias", "--check-config"}, nil, &out, &errb); code != ExitOK {
		t.Fatalf("code %d: %s", code, errb.String())
	}
	// --check-config does not run: check the value through a failing validation instead.
	errb.Reset()
	if code := Main(sp, []string{"--the-name="}, nil, &out, &errb); code != ExitConfig || !strings.Contains(errb.String(), "name: must not be empty") {
		t.Fatalf("alias did not reach the config: code %d, stderr %q", code, errb.String())
	}
}

// TestCheckRunsBeforeCheckConfigAndRun: Spec.Check judges what the config
// names on the machine, at --check-config and before Run, and only once
// Validate passed.
func TestCheckRunsBeforeCheckConfigAndRun(t *testing.T) {
	sp := spec(noRun(t))
	checked := 0
	sp.Check = func(c *testConfig) error {
		checked++
		return config.Errors{{Path: "name", Reason: "no package named " + c.Name}}
	}
	for _, args := range [][]string{{"--check-config"}, {}} {
		var out, errb bytes.Buffer
		if code := Main(sp, args, nil, &out, &errb); code != ExitConfig || !strings.Contains(errb.String(), "name: no package named x") {
			t.Errorf("%v: code %d, stderr %q", args, code, errb.String())
		}
	}
	var out, errb bytes.Buffer
	if code := Main(sp, []string{"--check-config", "--name="}, nil, &out, &errb); code != ExitConfig || checked != 2 {
		t.Errorf("an invalid config: code %d, checked %d times, want 2 (not after a failed Validate)", code, checked)
	}
	sp.Check = func(*testConfig) error { return nil }
	if code := Main(sp, []string{"--check-config"}, nil, &out, &errb); code != ExitOK || !strings.Contains(out.String(), "configuration OK") {
		t.Errorf("a passing check: code %d, stdout %q", code, out.String())
	}
}
