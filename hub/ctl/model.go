package ctl

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/outpost-edge/outpost/hub/api"
	"github.com/outpost-edge/outpost/models/manifest"
	"github.com/outpost-edge/outpost/models/onnx"
	"github.com/outpost-edge/outpost/models/ort"
	"github.com/outpost-edge/outpost/models/validate"
)

// modelInspect prints what an ONNX file (or a package's model.onnx) holds.
// It reads any ONNX file, not only the hub's own.
func modelInspect(fs *flag.FlagSet) runFunc {
	asJSON := fs.Bool("json", false, "print JSON (same as -o json)")
	format := formatFlag(fs)
	return func(_ context.Context, c *cli, args []string) error {
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
		if done, err := printAs(c.out, *format, *asJSON, info); done {
			return err
		}
		_, err = fmt.Fprint(c.out, info)
		return err
	}
}

// modelValidate checks a package end to end, golden vectors included.
func modelValidate(fs *flag.FlagSet) runFunc {
	engine := fs.String("engine", "onnxruntime", "engine for the golden vectors: onnxruntime or go")
	lib := fs.String("onnxruntime", "", "path of libonnxruntime.so.1 (default: $"+ort.EnvLibrary+", lib/ next to outpostctl, /usr/lib/outpost)")
	asJSON := fs.Bool("json", false, "print the report as JSON (same as -o json)")
	format := formatFlag(fs)
	return func(_ context.Context, c *cli, args []string) error {
		dir, err := oneArg(fs, args, "DIR (a model package: model.onnx and manifest.json)")
		if err != nil {
			return err
		}
		// The engine serves the scores output the manifest names (an
		// exporter's probabilities beside its label), not only the default.
		open, err := engineOpener(*engine, *lib)
		if err != nil {
			return err
		}
		rep, err := validate.PackageFor(dir, open)
		if err != nil {
			return err
		}
		if done, err := printAs(c.out, *format, *asJSON, rep); done {
			return err
		}
		m := rep.Manifest
		spec := fmt.Sprintf("%d features", len(m.Features))
		if len(m.Inputs) > 0 {
			spec = fmt.Sprintf("%d inputs (%d values a row)", len(m.Inputs), m.RowWidth())
		}
		_, err = fmt.Fprintf(c.out, "valid: %s v%d (%s), %s, %d golden vectors reproduced on %s (max abs error %.3g)\n%s",
			m.Name, m.Version, m.Task, spec, len(m.Golden), *engine, rep.MaxAbsError, rep.Model)
		return err
	}
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

// formatFlag declares -o/--output text|json|yaml for an offline command.
func formatFlag(fs *flag.FlagSet) *string {
	format := fs.String("o", "text", "output format: text, json or yaml")
	fs.StringVar(format, "output", "text", "same as -o")
	return format
}

// printAs prints v as JSON or YAML when -o (or --json) asks for it, and
// says whether it did; a format it does not know is a usage error.
func printAs(w io.Writer, format string, asJSON bool, v any) (bool, error) {
	if asJSON {
		format = "json"
	}
	switch format {
	case "json":
		return true, printJSON(w, v)
	case "yaml":
		return true, printYAML(w, v)
	case "text", "table", "":
		return false, nil
	}
	return true, fmt.Errorf("%w: -o must be text, json or yaml, got %q", errUsage, format)
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// modelPush uploads a package directory to the hub's registry.
func modelPush(ctx context.Context, c *cli, args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("%w: model push DIR", errUsage)
	}
	mj, err := os.ReadFile(filepath.Join(args[0], manifest.ManifestFile))
	if err != nil {
		return err
	}
	model, err := os.ReadFile(filepath.Join(args[0], manifest.ModelFile))
	if err != nil {
		return err
	}
	var v api.ModelVersion
	if err := c.call(ctx, http.MethodPost, "/v1/models", api.PushRequest{Manifest: mj, Model: model}, &v); err != nil {
		return err
	}
	_, err = fmt.Fprintf(c.out, "registered %s v%d as %s (%d parameters; golden vectors: %s)\n", v.Name, v.Version, v.Stage, v.Parameters, v.Golden)
	return err
}

func modelList(ctx context.Context, c *cli, _ []string) error {
	return show(ctx, c, "/v1/models", nil, func(tw io.Writer, list []api.ModelSummary, _ bool) {
		fmt.Fprintln(tw, "MODEL\tLATEST\tPRODUCTION\tCANARY\tVERSIONS")
		dash := func(v int64) string {
			if v == 0 {
				return "-"
			}
			return "v" + strconv.FormatInt(v, 10)
		}
		for _, m := range list {
			fmt.Fprintf(tw, "%s\tv%d\t%s\t%s\t%d\n", m.Name, m.Latest, dash(m.Production), dash(m.Canary), m.Versions)
		}
	})
}

func modelShow(ctx context.Context, c *cli, args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("%w: model show NAME", errUsage)
	}
	return show(ctx, c, "/v1/models/"+url.PathEscape(args[0]), nil, func(tw io.Writer, vs []api.ModelVersion, _ bool) {
		fmt.Fprintln(tw, "VERSION\tPARENT\tSTAGE\tTASK\tPARAMS\tMETRICS\tCREATED\tLAST MOVE")
		for _, v := range vs {
			parent := "-"
			if v.Parent != 0 {
				parent = "v" + strconv.FormatInt(v.Parent, 10)
			}
			var metrics []string
			for k, x := range v.Metrics {
				metrics = append(metrics, fmt.Sprintf("%s=%.4g", k, x))
			}
			sort.Strings(metrics)
			last := "-"
			if n := len(v.History); n > 0 {
				last = v.History[n-1].At.Format(time.RFC3339) + " " + v.History[n-1].Why
			}
			fmt.Fprintf(tw, "v%d\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", v.Version, parent, v.Stage, v.Task, v.Parameters,
				strings.Join(metrics, " "), v.Created.Format(time.RFC3339), last)
		}
	})
}

// modelPromote moves a version to canary or production.
func modelPromote(fs *flag.FlagSet) runFunc {
	stage := fs.String("stage", "production", "canary or production")
	why := fs.String("why", "", "reason, kept in the version's history")
	return func(ctx context.Context, c *cli, args []string) error {
		name, version, err := nameVersion(fs, args, "model promote NAME VERSION [--stage canary|production] [--why TEXT]")
		if err != nil {
			return err
		}
		if *stage != "canary" && *stage != "production" {
			return fmt.Errorf("%w: --stage must be canary or production, got %q", errUsage, *stage)
		}
		return moveModel(ctx, c, name, version, *stage, *why)
	}
}

func modelArchive(fs *flag.FlagSet) runFunc {
	why := fs.String("why", "", "reason, kept in the version's history")
	return func(ctx context.Context, c *cli, args []string) error {
		name, version, err := nameVersion(fs, args, "model archive NAME VERSION [--why TEXT]")
		if err != nil {
			return err
		}
		return moveModel(ctx, c, name, version, "archived", *why)
	}
}

func moveModel(ctx context.Context, c *cli, name, version, stage, why string) error {
	var v api.ModelVersion
	path := "/v1/models/" + url.PathEscape(name) + "/versions/" + url.PathEscape(version) + "/stage"
	if err := c.call(ctx, http.MethodPost, path, api.StageRequest{Stage: stage, Why: why}, &v); err != nil {
		return err
	}
	_, err := fmt.Fprintf(c.out, "%s v%d is now %s\n", v.Name, v.Version, v.Stage)
	return err
}

// nameVersion parses NAME VERSION with flags before, between or after.
func nameVersion(fs *flag.FlagSet, args []string, usage string) (string, string, error) {
	pos, err := positional(fs, args, 2, usage)
	if err != nil {
		return "", "", err
	}
	v := strings.TrimPrefix(pos[1], "v")
	if _, err := strconv.ParseInt(v, 10, 64); err != nil {
		return "", "", fmt.Errorf("%w: version %q is not a number", errUsage, pos[1])
	}
	return pos[0], v, nil
}
