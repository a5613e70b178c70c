package ctl

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/outpost-edge/outpost/models/goengine"
	"github.com/outpost-edge/outpost/models/manifest"
	"github.com/outpost-edge/outpost/models/onnx"
	"github.com/outpost-edge/outpost/models/ort"
	"github.com/outpost-edge/outpost/models/validate"
)

// modelInspect prints what an ONNX file (or a package's model.onnx) holds.
// It reads any ONNX file, not only the hub's own.
func modelInspect(_ context.Context, c *cli, args []string) error {
	fs := flag.NewFlagSet("model inspect", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	asJSON := fs.Bool("json", false, "print JSON")
	path, err := oneArg(fs, args, "PATH (an .onnx file or a package directory)")
	if err != nil {
		return err
	}
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		path = filepath.Join(path, manifest.ModelFile)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	info, err := onnx.Inspect(data)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if *asJSON {
		return printJSON(c.out, info)
	}
	_, err = fmt.Fprint(c.out, info)
	return err
}

// modelValidate checks a package end to end, golden vectors included.
func modelValidate(_ context.Context, c *cli, args []string) error {
	fs := flag.NewFlagSet("model validate", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	engine := fs.String("engine", "onnxruntime", "engine for the golden vectors: onnxruntime or go")
	lib := fs.String("onnxruntime", "", "path of libonnxruntime.so.1 (default: $"+ort.EnvLibrary+", lib/ next to outpostctl, /usr/lib/outpost)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	dir, err := oneArg(fs, args, "DIR (a model package: model.onnx and manifest.json)")
	if err != nil {
		return err
	}
	var open func([]byte) (validate.Runner, error)
	switch *engine {
	case "onnxruntime":
		path, err := ort.FindLibrary(*lib)
		if err != nil {
			return fmt.Errorf("%w (or pass --engine go)", err)
		}
		if err := ort.Init(path); err != nil {
			return err
		}
		open = func(m []byte) (validate.Runner, error) { return ort.NewSession(m) }
	case "go":
		open = func(m []byte) (validate.Runner, error) { return goengine.Load(m) }
	default:
		return fmt.Errorf("%w: --engine must be onnxruntime or go, got %q", errUsage, *engine)
	}
	rep, err := validate.Package(dir, open)
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(c.out, rep)
	}
	m := rep.Manifest
	_, err = fmt.Fprintf(c.out, "valid: %s v%d (%s), %d features, %d golden vectors reproduced on %s (max abs error %.3g)\n%s",
		m.Name, m.Version, m.Task, len(m.Features), len(m.Golden), *engine, rep.MaxAbsError, rep.Model)
	return err
}

// oneArg parses flags that may come before or after one positional arg.
func oneArg(fs *flag.FlagSet, args []string, what string) (string, error) {
	if err := fs.Parse(args); err != nil {
		return "", fmt.Errorf("%w: %w", errUsage, err)
	}
	rest := fs.Args()
	if len(rest) == 0 {
		return "", fmt.Errorf("%w: want %s", errUsage, what)
	}
	arg := rest[0]
	if err := fs.Parse(rest[1:]); err != nil {
		return "", fmt.Errorf("%w: %w", errUsage, err)
	}
	if fs.NArg() > 0 {
		return "", fmt.Errorf("%w: want one %s, got %v", errUsage, what, rest)
	}
	return arg, nil
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
