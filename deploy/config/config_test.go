package config

import (
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

type inner struct {
	Port    int           `yaml:"port"`
	Enabled bool          `yaml:"enabled"`
	Wait    time.Duration `yaml:"wait"`
}

type sample struct {
	Name  string   `yaml:"name"`
	Tags  []string `yaml:"tags"`
	Ratio float64  `yaml:"ratio"`
	Net   inner    `yaml:"net"`
	List  []inner  `yaml:"list"` // file only
}

func newSample() *sample { return &sample{Name: "default", Net: inner{Port: 1}} }

func load(t *testing.T, file string, env []string, args ...string) (*sample, error) {
	t.Helper()
	cfg := newSample()
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	l := NewLoader("T", cfg, fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	path := ""
	if file != "" {
		path = filepath.Join(t.TempDir(), "c.yaml")
		if err := os.WriteFile(path, []byte(file), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return cfg, l.Load(cfg, path, env)
}

func TestPrecedence(t *testing.T) {
	file := "name: from-file\nnet:\n  port: 2\n  wait: 3s\nlist:\n  - port: 9\n"
	tests := []struct {
		name string
		env  []string
		args []string
		want sample
	}{
		{"file over defaults", nil, nil,
			sample{Name: "from-file", Net: inner{Port: 2, Wait: 3 * time.Second}, List: []inner{{Port: 9}}}},
		{"env over file", []string{"T_NET_PORT=3", "T_TAGS=a, b", "T_NET_ENABLED=true"}, nil,
			sample{Name: "from-file", Tags: []string{"a", "b"}, Net: inner{Port: 3, Enabled: true, Wait: 3 * time.Second}, List: []inner{{Port: 9}}}},
		{"flag over env", []string{"T_NET_PORT=3"}, []string{"--net.port", "4", "--net.enabled", "--ratio=0.5"},
			sample{Name: "from-file", Ratio: 0.5, Net: inner{Port: 4, Enabled: true, Wait: 3 * time.Second}, List: []inner{{Port: 9}}}},
	}
	for _, tt := range tests {
		got, err := load(t, file, tt.env, tt.args...)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if !reflect.DeepEqual(*got, tt.want) {
			t.Errorf("%s: got %+v, want %+v", tt.name, *got, tt.want)
		}
	}
}

func TestErrorsNameTheField(t *testing.T) {
	_, err := load(t, "", []string{"T_NET_PORT=eighty"}, "--net.wait", "soon")
	var es Errors
	if !errors.As(err, &es) || len(es) != 2 {
		t.Fatalf("err = %v, want two field errors", err)
	}
	if es[0].Path != "net.port" || es[1].Path != "net.wait" {
		t.Fatalf("paths = %q, %q", es[0].Path, es[1].Path)
	}
	if !errors.Is(err, ErrInvalid) {
		t.Fatal("field errors must wrap ErrInvalid")
	}
}

func TestUnknownKeyInFileIsAnError(t *testing.T) {
	_, err := load(t, "net:\n  prot: 8\n", nil)
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("err = %v, want ErrInvalid for a misspelt key", err)
	}
}

func TestPathsAndEnvNames(t *testing.T) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	l := NewLoader("OUTPOST_X", newSample(), fs)
	want := []string{"name", "net.enabled", "net.port", "net.wait", "ratio", "tags"}
	if got := l.Paths(); !reflect.DeepEqual(got, want) {
		t.Fatalf("paths = %v, want %v", got, want)
	}
	if got := l.EnvName("net.port"); got != "OUTPOST_X_NET_PORT" {
		t.Fatalf("env name = %s", got)
	}
}

// YAML mistakes are named by their dotted path, all of them at once, and
// the rest of the file is still read.
func TestYAMLErrorsNameTheFieldPath(t *testing.T) {
	cfg, err := load(t, "name: ok\nnet:\n  prot: 8\n  wait: soon\nratio: lots\ntags: [a, [b]]\nlist:\n  - port: 1\n  - port: eighty\n    enabeld: true\n", nil)
	var es Errors
	if !errors.As(err, &es) || !errors.Is(err, ErrInvalid) {
		t.Fatalf("err = %v, want field errors", err)
	}
	got := map[string]string{}
	for _, e := range es {
		got[e.Path] = e.Reason
	}
	want := map[string]string{
		"net.prot":        "unknown field (line 3)",
		"net.wait":        "cannot read `soon` (!!str) as time.Duration (line 4)",
		"ratio":           "cannot read `lots` (!!str) as float64 (line 5)",
		"tags[1]":         "cannot read !!seq as string (line 6)",
		"list[1].port":    "cannot read `eighty` (!!str) as int (line 9)",
		"list[1].enabeld": "unknown field (line 10)",
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("errors:\n%v\nwant:\n%v", es, want)
	}
	if cfg.Name != "ok" || len(cfg.List) != 2 || cfg.List[0].Port != 1 {
		t.Fatalf("the rest of the file was not read: %+v", cfg)
	}
}

// Field errors from the file and from the environment come back together.
func TestFileAndEnvErrorsTogether(t *testing.T) {
	_, err := load(t, "net:\n  prot: 8\n", []string{"T_NET_PORT=eighty"})
	var es Errors
	if !errors.As(err, &es) || len(es) != 2 || es[0].Path != "net.prot" || es[1].Path != "net.port" {
		t.Fatalf("err = %v, want net.prot then net.port", err)
	}
}
