package ctl

import (
	"context"
	"crypto/ed25519"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/outpost-edge/outpost/deploy/version"
	"github.com/outpost-edge/outpost/firmware/build"
	"github.com/outpost-edge/outpost/firmware/bundle"
	"github.com/outpost-edge/outpost/firmware/flash"
	"github.com/outpost-edge/outpost/hub/api"
	"github.com/outpost-edge/outpost/sync/tuf"
)

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }
func (s *stringList) Type() string       { return "strings" }

func firmwareKeygen(fs *flag.FlagSet) runFunc {
	dir := fs.String("dir", "", "directory for bundle.key (keep it offline) and bundle.pub (give it to installers)")
	return func(_ context.Context, c *cli, args []string) error {
		if err := fs.Parse(args); err != nil || *dir == "" || fs.NArg() > 0 {
			return fmt.Errorf("%w: firmware keygen --dir DIR", errUsage)
		}
		if err := os.MkdirAll(*dir, 0o700); err != nil {
			return err
		}
		k, err := tuf.GenerateKey()
		if err != nil {
			return err
		}
		if err := tuf.WriteKey(filepath.Join(*dir, "bundle.key"), k); err != nil {
			return err
		}
		pub := k.Public().(ed25519.PublicKey)
		if err := os.WriteFile(filepath.Join(*dir, "bundle.pub"), []byte(bundle.PublicKeyText(pub)), 0o644); err != nil {
			return err
		}
		fmt.Fprintf(c.out, "bundle signing key %s in %s\n", bundle.KeyID(pub), *dir)
		return nil
	}
}

func firmwareBuild(fs *flag.FlagSet) runFunc {
	var s build.Spec
	var models stringList
	keyFile := fs.String("key", "", "bundle signing key (firmware keygen)")
	fs.StringVar(&s.Arch, "arch", "", "arm64, armv7 or amd64")
	fs.StringVar(&s.Accelerator, "accelerator", "cpu", "cpu, cuda, tensorrt, openvino, ... (non-cpu needs --ort-dir)")
	fs.StringVar(&s.Version, "version", version.Version, "agent version stamped into the binary")
	fs.Int64Var(&s.Build, "build", 1, "agent build number stamped into the binary (self-update moves devices between builds)")
	fs.StringVar(&s.Dist, "dist", "", "a release: make dist's output, whose linux-ARCH/outpost-agent goes in (no source tree or Go needed)")
	fs.StringVar(&s.Agent, "agent", "", "a prebuilt agent binary for --arch")
	fs.StringVar(&s.Source, "source", ".", "the Outpost source tree to cross-compile the agent from, without --dist or --agent")
	fs.StringVar(&s.ORTDir, "ort-dir", "", "ONNX Runtime libraries for the target (default: the --dist release's linux-ARCH/lib, else the CPU build make deps cached)")
	fs.StringVar(&s.HubURL, "hub-url", "", "hub API URL the device enrols with and takes updates from")
	fs.StringVar(&s.MQTTURL, "mqtt-url", "", "hub MQTT URL the device sends to (tcp:// or ssl://)")
	fs.StringVar(&s.HubCA, "hub-ca", "", "PEM CA of the hub's TLS certificate, installed for the agent")
	fs.StringVar(&s.TrustedRoot, "root", "", "TUF trusted root (root.json of keys init)")
	fs.StringVar(&s.Pipelines, "pipelines", "", "YAML list of pipelines for the default config")
	fs.StringVar(&s.Config, "config", "", "a complete agent config to ship instead of the default one")
	fs.Var(&models, "model", "initial model package directory, installed as models/NAME of its manifest (repeatable)")
	fs.StringVar(&s.Out, "out", "", "bundle file to write")
	usage := fmt.Errorf("%w: firmware build --arch arm64|armv7|amd64 --key K --root ROOT.json --hub-url URL --mqtt-url URL --out FILE [--dist DIR|--agent BIN|--source DIR] [--accelerator cpu] [--pipelines F|--config F] [--model DIR]", errUsage)
	return func(ctx context.Context, c *cli, args []string) error {
		if err := fs.Parse(args); err != nil || fs.NArg() > 0 || *keyFile == "" || s.Out == "" {
			return usage
		}
		key, err := tuf.ReadKey(*keyFile)
		if err != nil {
			return err
		}
		s.Key, s.Models, s.Log = key, models, c.out
		_, err = build.Build(ctx, s)
		return err
	}
}

func firmwareFlash(fs *flag.FlagSet) runFunc {
	var o flash.Options
	var pubs stringList
	var size sizeFlag
	tokenFile := fs.String("token-file", "", "file holding the enrolment token")
	fs.StringVar(&o.Bundle, "bundle", "", "bundle file")
	fs.StringVar(&o.Target, "target", "", "root filesystem: a directory, or an ext4 image file ending in .img")
	fs.Var(&pubs, "pubkey", "trusted bundle signing public key (repeatable)")
	fs.StringVar(&o.Token, "token", "", "one-time enrolment token (outpostctl device token)")
	fs.StringVar(&o.Device, "device", "", "device id (default: the hub names it at enrolment)")
	fs.Var(&size, "image-size", "size of a new image, e.g. 512M (default: fitted)")
	return func(ctx context.Context, c *cli, args []string) error {
		if err := fs.Parse(args); err != nil || fs.NArg() > 0 || o.Bundle == "" || o.Target == "" || len(pubs) == 0 {
			return fmt.Errorf("%w: firmware flash --bundle B --pubkey bundle.pub --target DIR|IMAGE.img [--token T|--token-file F] [--device ID] [--image-size 512M]", errUsage)
		}
		if *tokenFile != "" {
			b, err := os.ReadFile(*tokenFile)
			if err != nil {
				return err
			}
			o.Token = strings.TrimSpace(string(b))
		}
		for _, p := range pubs {
			k, err := bundle.ReadPublicKey(p)
			if err != nil {
				return err
			}
			o.Trusted = append(o.Trusted, k)
		}
		o.ImageSize, o.Progress = int64(size), c.out
		_, err := flash.Flash(ctx, o)
		return err
	}
}

// sizeFlag parses 512M, 2G, 4096K or plain bytes.
type sizeFlag int64

func (s *sizeFlag) String() string { return fmt.Sprint(int64(*s)) }
func (s *sizeFlag) Type() string   { return "size" }
func (s *sizeFlag) Set(v string) error {
	mult := int64(1)
	switch {
	case strings.HasSuffix(v, "K"):
		mult, v = 1<<10, strings.TrimSuffix(v, "K")
	case strings.HasSuffix(v, "M"):
		mult, v = 1<<20, strings.TrimSuffix(v, "M")
	case strings.HasSuffix(v, "G"):
		mult, v = 1<<30, strings.TrimSuffix(v, "G")
	}
	var n int64
	if _, err := fmt.Sscan(v, &n); err != nil || n <= 0 {
		return errors.New("size must be a positive number with an optional K, M or G")
	}
	*s = sizeFlag(n * mult)
	return nil
}

func agentPublish(fs *flag.FlagSet) runFunc {
	build := fs.Int64("build", 0, "build number (≥ 1, rising): what rollouts and reported state call this agent")
	ver := fs.String("version", "", "the binary's version string, for people")
	arch := fs.String("arch", "", "amd64, arm64 or arm (default: read from the binary)")
	usage := fmt.Errorf("%w: agent publish --build N [--version V] [--arch A] BINARY", errUsage)
	return func(ctx context.Context, c *cli, args []string) error {
		if len(args) == 0 || strings.HasPrefix(args[0], "-") {
			return usage
		}
		bin := args[0]
		if err := fs.Parse(args[1:]); err != nil || fs.NArg() > 0 || *build < 1 {
			return usage
		}
		data, err := os.ReadFile(bin)
		if err != nil {
			return err
		}
		q := fmt.Sprintf("/v1/agents?build=%d&version=%s&arch=%s", *build, url.QueryEscape(*ver), url.QueryEscape(*arch))
		// A binary, not JSON, as the hub's OpenAPI document says.
		var out api.AgentPublished
		if err := c.once(ctx, "POST", q, data, "application/octet-stream", &out); err != nil {
			return err
		}
		fmt.Fprintf(c.out, "published agent build %d for %s as %s; roll it out with: outpostctl rollout start %s %d\n", *build, out.Arch, out.Target, tuf.AgentModel, *build)
		return nil
	}
}
