// Package build makes device bundles: it takes the agent from a release
// (make dist), a prebuilt binary, or cross-compiles it with cgo and the
// Debian cross compilers; adds ONNX Runtime for the architecture, a config,
// the systemd unit, the TUF trusted root and initial models, and signs the
// lot (firmware/bundle).
package build

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"debug/elf"
	_ "embed"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/outpost-edge/outpost/firmware/bundle"
	"github.com/outpost-edge/outpost/firmware/files"
	"github.com/outpost-edge/outpost/models/manifest"
	"github.com/outpost-edge/outpost/models/validate"
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

	Source string // module root to cross-compile from, when Agent and Dist are empty
	Agent  string // a prebuilt agent binary for Arch
	Dist   string // make dist's output: the agent is Dist/linux-<Arch>/outpost-agent
	ORTDir string // ONNX Runtime libraries (empty: Dist's lib/, else the deps cache; cpu only)

	HubURL      string // hub API, for enrolment and updates
	MQTTURL     string // hub MQTT listener
	HubCA       string // PEM CA of the hub's TLS certificates (optional)
	TrustedRoot string // TUF root.json
	Pipelines   string // YAML file: a list of pipelines for the default config
	Config      string // a complete agent config, used as is instead
	// Models are initial model package dirs, each installed under its
	// manifest's name: ModelsDir/<name>/, where a pipeline names it.
	Models []string

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

	if s.Agent != "" && s.Dist != "" {
		return bundle.Manifest{}, fmt.Errorf("build: an agent binary and a dist directory: give one")
	}
	ortLib, err := ortLibraries(s)
	if err != nil {
		return bundle.Manifest{}, err
	}
	cfgPath, cfgName := s.Config, s.Config
	if cfgPath == "" {
		cfgPath, cfgName = filepath.Join(work, "agent.yaml"), "the default config"
		data, err := defaultConfig(s, len(ortLib) > 0)
		if err != nil {
			return bundle.Manifest{}, err
		}
		if err := os.WriteFile(cfgPath, data, 0o644); err != nil {
			return bundle.Manifest{}, fmt.Errorf("build: %w", err)
		}
	}
	models, err := loadModels(s.Models)
	if err != nil {
		return bundle.Manifest{}, err
	}
	// Before the agent is compiled: a device whose pipeline cannot load
	// its model crash-loops after enrolment, its token spent.
	if err := checkModels(cfgPath, cfgName, models); err != nil {
		return bundle.Manifest{}, err
	}

	agent := s.Agent
	switch {
	case agent != "":
	case s.Dist != "":
		agent = filepath.Join(s.Dist, "linux-"+s.Arch, "outpost-agent")
		if _, err := os.Stat(agent); err != nil {
			return bundle.Manifest{}, fmt.Errorf("build: no agent for %s in %s (make dist writes %s): %w", s.Arch, s.Dist, agent, err)
		}
	default:
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
	for _, lib := range ortLib {
		add(bundle.LibDir+"/"+filepath.Base(lib), 0o644, lib)
	}
	if len(ortLib) == 0 {
		logf("no ONNX Runtime for %s: pipelines with a model must use engine: go", s.Arch)
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
	for _, name := range slices.Sorted(maps.Keys(models)) {
		for _, file := range []string{manifest.ManifestFile, manifest.ModelFile} {
			add(bundle.ModelsDir+"/"+name+"/"+file, 0o644, filepath.Join(models[name].dir, file))
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
// CPU build the deps script cached from npm (there is none for armv7),
// which make dist copies beside a release's agent.
func ortLibraries(s Spec) ([]string, error) {
	dir, hint := s.ORTDir, "make deps fetches it"
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
		// A release builds bundles without the deps cache.
		if lib := filepath.Join(s.Dist, "linux-"+s.Arch, "lib"); s.Dist != "" {
			if hasORT(lib) {
				dir = lib
			}
			hint = "make dist copies it into " + lib + ", or give --ort-dir"
		}
	}
	libs, _ := filepath.Glob(filepath.Join(dir, ortGlob))
	if len(libs) == 0 {
		return nil, fmt.Errorf("build: no %s in %s (%s)", ortGlob, dir, hint)
	}
	for _, l := range libs {
		if err := checkELF(l, s.Arch); err != nil {
			return nil, err
		}
	}
	return libs, nil
}

const ortGlob = "libonnxruntime*.so*"

func hasORT(dir string) bool {
	libs, _ := filepath.Glob(filepath.Join(dir, ortGlob))
	return len(libs) > 0
}

// model is an initial model package.
type model struct {
	dir      string
	manifest *manifest.Manifest
}

// loadModels reads the packages by their manifests' names: the device
// finds a model under the name its pipelines and the hub's rollouts use,
// whatever the directory it was built from is called.
func loadModels(dirs []string) (map[string]model, error) {
	out := map[string]model{}
	for _, dir := range dirs {
		m, _, err := manifest.Load(dir)
		if err != nil {
			return nil, fmt.Errorf("build: model %s: %w", dir, err)
		}
		if m.Name != path.Base(m.Name) || m.Name == "." || m.Name == ".." || strings.Contains(m.Name, `\`) {
			return nil, fmt.Errorf("build: model %s: name %q cannot name a directory", dir, m.Name)
		}
		if prev, ok := out[m.Name]; ok {
			return nil, fmt.Errorf("build: models %s and %s are both named %q; a device holds one model of a name", prev.dir, dir, m.Name)
		}
		out[m.Name] = model{dir: dir, manifest: m}
	}
	return out, nil
}

// shipped is what the build reads of the agent config it ships: enough
// for the agent's own model rule (validate.Pipeline), without linking the
// agent.
type shipped struct {
	Pipelines []struct {
		Source struct {
			Type string `yaml:"type"`
		} `yaml:"source"`
		Decode struct {
			Fields []string `yaml:"fields"`
		} `yaml:"decode"`
		Aggregations []string `yaml:"aggregations"`
		Model        *struct {
			Dir string `yaml:"dir"`
		} `yaml:"model"`
	} `yaml:"pipelines"`
}

// checkModels refuses a config whose pipeline names a model the bundle
// does not install, or one the pipeline does not compute the features of.
func checkModels(cfgPath, cfgName string, models map[string]model) error {
	data, err := os.ReadFile(cfgPath)
	if err != nil {
		return fmt.Errorf("build: config: %w", err)
	}
	var cfg shipped
	if err := yaml.Unmarshal(data, &cfg); err != nil {
		return fmt.Errorf("build: config %s: %w", cfgName, err)
	}
	for i, p := range cfg.Pipelines {
		if p.Model == nil {
			continue
		}
		at := fmt.Sprintf("build: %s: pipelines[%d].model", cfgName, i)
		name, ok := strings.CutPrefix(path.Clean(p.Model.Dir), "/"+bundle.ModelsDir+"/")
		mod, found := models[name]
		if !ok || !found {
			return fmt.Errorf("%s.dir: %s is no model this bundle installs (%s)", at, p.Model.Dir, installed(models))
		}
		// A model at start gets the raw samples it needs: the agent keeps
		// them by itself.
		pc := validate.Pipeline{Images: p.Source.Type == "image", Fields: p.Decode.Fields, Aggregations: p.Aggregations, RawSamples: true}
		if err := pc.Feeds(mod.manifest); err != nil {
			return fmt.Errorf("%s: %w", at, err)
		}
	}
	return nil
}

func installed(models map[string]model) string {
	if len(models) == 0 {
		return "it installs none; add packages with --model"
	}
	var dirs []string
	for _, name := range slices.Sorted(maps.Keys(models)) {
		dirs = append(dirs, "/"+bundle.ModelsDir+"/"+name)
	}
	return "it installs " + strings.Join(dirs, ", ")
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
