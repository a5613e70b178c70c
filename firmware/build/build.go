// Package build makes device bundles: it cross-compiles the agent with cgo
// and the Debian cross compilers, adds ONNX Runtime for the architecture,
// a config, the systemd unit, the TUF trusted root and initial models,
// and signs the lot (firmware/bundle).
package build

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"debug/elf"
	_ "embed"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/outpost-edge/outpost/firmware/bundle"
	"github.com/outpost-edge/outpost/firmware/files"
)

// ORTVersion is the ONNX Runtime that deploy/scripts/deps.sh caches.
const ORTVersion = "1.24.3"

//go:embed outpost-agent.service
var unit []byte

// Spec says what goes into a bundle.
type Spec struct {
	Arch        string // amd64, arm64, armv7
	Accelerator string // cpu (default), cuda, tensorrt, openvino, ...
	Version     string // agent version stamped into the binary
	Build       int64  // agent build number for self-update (default 1)

	Source string // module root to cross-compile from, when Agent is empty
	Agent  string // a prebuilt agent binary for Arch
	ORTDir string // ONNX Runtime libraries (empty: the deps cache, cpu only)

	HubURL      string // hub API, for enrolment and updates
	MQTTURL     string // hub MQTT listener
	HubCA       string // PEM CA of the hub's TLS certificates (optional)
	TrustedRoot string // TUF root.json
	Pipelines   string // YAML file: a list of pipelines for the default config
	Config      string // a complete agent config, used as is instead
	Models      []string

	Key ed25519.PrivateKey
	Out string
	Log io.Writer
}

// Build writes the signed bundle to s.Out.
func Build(ctx context.Context, s Spec) (bundle.Manifest, error) {
	target, ok := bundle.Architectures[s.Arch]
	if !ok {
		return bundle.Manifest{}, fmt.Errorf("build: arch %q: must be amd64, arm64 or armv7", s.Arch)
	}
	if s.Accelerator == "" {
		s.Accelerator = "cpu"
	}
	logf := func(format string, a ...any) {
		if s.Log != nil {
			fmt.Fprintf(s.Log, format+"\n", a...)
		}
	}
	work, err := os.MkdirTemp("", "outpost-build-")
	if err != nil {
		return bundle.Manifest{}, fmt.Errorf("build: %w", err)
	}
	defer os.RemoveAll(work)
	m := bundle.Manifest{AgentVersion: s.Version, Arch: s.Arch, Accelerator: s.Accelerator}
	add := func(path string, mode os.FileMode, src string) {
		m.Files = append(m.Files, bundle.File{Path: path, Mode: mode, Source: src})
	}

	agent := s.Agent
	if agent == "" {
		agent = filepath.Join(work, "outpost-agent")
		logf("cross-compiling outpost-agent %s for %s", s.Version, s.Arch)
		if err := compile(ctx, s, target.GOARCH, target.GOARM, agent); err != nil {
			return bundle.Manifest{}, err
		}
	}
	if err := checkELF(agent, s.Arch); err != nil {
		return bundle.Manifest{}, err
	}
	add(bundle.AgentPath, 0o755, agent)

	ortLib, err := ortLibraries(s)
	if err != nil {
		return bundle.Manifest{}, err
	}
	for _, lib := range ortLib {
		add(bundle.LibDir+"/"+filepath.Base(lib), 0o644, lib)
	}
	if len(ortLib) == 0 {
		logf("no ONNX Runtime for %s: pipelines with a model must use engine: go", s.Arch)
	}

	cfgPath := s.Config
	if cfgPath == "" {
		cfgPath = filepath.Join(work, "agent.yaml")
		data, err := defaultConfig(s, len(ortLib) > 0)
		if err != nil {
			return bundle.Manifest{}, err
		}
		if err := os.WriteFile(cfgPath, data, 0o644); err != nil {
			return bundle.Manifest{}, fmt.Errorf("build: %w", err)
		}
	}
	add(bundle.ConfigPath, 0o644, cfgPath)
	unitPath := filepath.Join(work, "outpost-agent.service")
	if err := os.WriteFile(unitPath, unit, 0o644); err != nil {
		return bundle.Manifest{}, fmt.Errorf("build: %w", err)
	}
	add(bundle.UnitPath, 0o644, unitPath)
	if s.TrustedRoot == "" {
		return bundle.Manifest{}, fmt.Errorf("build: the TUF trusted root is required (the root.json of outpostctl keys init)")
	}
	add(bundle.RootPath, 0o644, s.TrustedRoot)
	if s.HubCA != "" {
		add(bundle.HubCAPath, 0o644, s.HubCA)
	}
	for _, dir := range s.Models {
		for _, name := range []string{"manifest.json", "model.onnx"} {
			src := filepath.Join(dir, name)
			if _, err := os.Stat(src); err != nil {
				return bundle.Manifest{}, fmt.Errorf("build: model %s: %w", dir, err)
			}
			add(bundle.ModelsDir+"/"+filepath.Base(filepath.Clean(dir))+"/"+name, 0o644, src)
		}
	}

	if err := os.MkdirAll(filepath.Dir(s.Out), 0o755); err != nil {
		return bundle.Manifest{}, fmt.Errorf("build: %w", err)
	}
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(bundle.Write(pw, m, s.Key)) }()
	if err := files.Write(s.Out, pr, 0o644); err != nil {
		return bundle.Manifest{}, fmt.Errorf("build: %w", err)
	}
	logf("wrote %s: %d files, signed by key %s", s.Out, len(m.Files), bundle.KeyID(s.Key.Public().(ed25519.PublicKey)))
	return m, nil
}

var crossCC = map[string]string{"arm64": "aarch64-linux-gnu-gcc", "arm": "arm-linux-gnueabihf-gcc"}

func compile(ctx context.Context, s Spec, goarch, goarm, out string) error {
	if s.Source == "" {
		return fmt.Errorf("build: neither an agent binary nor a source tree to compile one from")
	}
	env := append(os.Environ(), "CGO_ENABLED=1", "GOOS=linux", "GOARCH="+goarch)
	if goarm != "" {
		env = append(env, "GOARM="+goarm)
	}
	if cc, ok := crossCC[goarch]; ok && goarch != runtime.GOARCH {
		if _, err := exec.LookPath(cc); err != nil {
			return fmt.Errorf("build: %s not installed (make deps installs it): %w", cc, err)
		}
		env = append(env, "CC="+cc)
	}
	const mod = "github.com/outpost-edge/outpost"
	ldflags := fmt.Sprintf("-s -w -X %s/deploy/version.Version=%s -X %s/deploy/version.Build=%d", mod, s.Version, mod, max(s.Build, 1))
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", ldflags, "-o", out, "./agent/cmd/outpost-agent")
	cmd.Dir, cmd.Env = s.Source, env
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build: go build for %s: %w\n%s", s.Arch, err, b)
	}
	return nil
}

func checkELF(path, arch string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("build: agent %s: %w", path, err)
	}
	defer f.Close()
	if f.Machine != bundle.Architectures[arch].Machine {
		return fmt.Errorf("build: agent %s is %v, not %s", path, f.Machine, arch)
	}
	return nil
}

// ortLibraries picks ONNX Runtime: every shared library in ORTDir, or the
// CPU build the deps script cached from npm (there is none for armv7).
func ortLibraries(s Spec) ([]string, error) {
	dir := s.ORTDir
	if dir == "" {
		if s.Accelerator != "cpu" {
			return nil, fmt.Errorf("build: accelerator %s needs --ort-dir with an ONNX Runtime build for it (the npm package is CPU only)", s.Accelerator)
		}
		npmArch := map[string]string{"amd64": "x64", "arm64": "arm64"}[s.Arch]
		if npmArch == "" {
			return nil, nil
		}
		cache := os.Getenv("OUTPOST_CACHE")
		if cache == "" {
			cache = filepath.Join(s.Source, ".cache")
		}
		dir = filepath.Join(cache, "onnxruntime", ORTVersion, "linux-"+npmArch)
	}
	libs, _ := filepath.Glob(filepath.Join(dir, "libonnxruntime*.so*"))
	if len(libs) == 0 {
		return nil, fmt.Errorf("build: no libonnxruntime*.so* in %s (make deps fetches it)", dir)
	}
	for _, l := range libs {
		if err := checkELF(l, s.Arch); err != nil {
			return nil, err
		}
	}
	return libs, nil
}

// The default config: enrol with the token, send to the hub, take signed
// updates; pipelines from the installer, or one local MQTT pipeline.
func defaultConfig(s Spec, ort bool) ([]byte, error) {
	tls := func() map[string]string {
		if s.HubCA == "" {
			return nil
		}
		return map[string]string{"ca_file": "/" + bundle.HubCAPath}
	}
	type section = map[string]any
	var pipelines []any
	if s.Pipelines != "" {
		data, err := os.ReadFile(s.Pipelines)
		if err != nil {
			return nil, fmt.Errorf("build: pipelines: %w", err)
		}
		if err := yaml.Unmarshal(data, &pipelines); err != nil || len(pipelines) == 0 {
			return nil, fmt.Errorf("build: %s must hold a YAML list of pipelines: %v", s.Pipelines, err)
		}
	} else {
		pipelines = []any{section{
			"name":         "sensors",
			"source":       section{"type": "mqtt", "mqtt": section{"url": "tcp://127.0.0.1:1883", "topic": "sensors/#"}},
			"decode":       section{"key_field": "sensor", "time_field": "ts", "fields": []string{"value"}, "max_skew": "10m"},
			"window":       section{"kind": "tumbling", "size": "1m", "max_out_of_order": "5s", "allowed_lateness": "30s", "idle_timeout": "2m"},
			"aggregations": []string{"count", "mean", "min", "max", "stddev"},
		}}
	}
	if s.HubURL == "" || s.MQTTURL == "" {
		return nil, fmt.Errorf("build: the default config needs the hub's API and MQTT URLs (or give a complete config)")
	}
	hubURL := strings.TrimRight(s.HubURL, "/")
	cfg := yaml.Node{}
	doc := []struct {
		key string
		val any
	}{
		// No id: the installer's --device (device.env) or the hub names it.
		{"device", section{"id": "", "accelerator": s.Accelerator}},
		{"data_dir", "/" + bundle.DataDir},
		{"enrolment", section{"url": hubURL, "token_file": "/" + bundle.TokenPath, "tls": tls()}},
		{"hub", section{"url": s.MQTTURL, "tls": tls()}},
		{"updates", section{"url": hubURL + "/tuf", "trusted_root": "/" + bundle.RootPath, "self_update": true, "tls": tls()}},
		{"log", section{"level": "info", "format": "json"}},
		{"pipelines", pipelines},
	}
	if ort {
		doc = append(doc[:len(doc)-1], struct {
			key string
			val any
		}{"runtime", section{"onnxruntime_library": "/" + bundle.LibDir + "/libonnxruntime.so.1"}}, doc[len(doc)-1])
	}
	cfg.Kind = yaml.MappingNode
	for _, kv := range doc {
		var v yaml.Node
		if err := v.Encode(dropNil(kv.val)); err != nil {
			return nil, fmt.Errorf("build: config: %w", err)
		}
		cfg.Content = append(cfg.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: kv.key}, &v)
	}
	var out bytes.Buffer
	enc := yaml.NewEncoder(&out)
	enc.SetIndent(2)
	if err := enc.Encode(&cfg); err != nil {
		return nil, fmt.Errorf("build: config: %w", err)
	}
	head := fmt.Sprintf("# outpost-agent %s for %s (%s), from an Outpost bundle.\n# Environment variables (OUTPOST_AGENT_...) and flags override this file.\n", s.Version, s.Arch, s.Accelerator)
	return append([]byte(head), out.Bytes()...), nil
}

// dropNil leaves out empty optional sections (tls without a CA).
func dropNil(v any) any {
	m, ok := v.(map[string]any)
	if !ok {
		return v
	}
	out := map[string]any{}
	for k, x := range m {
		if mm, ok := x.(map[string]string); ok && mm == nil {
			continue
		}
		out[k] = x
	}
	return out
}
