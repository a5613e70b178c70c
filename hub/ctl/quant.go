package ctl

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/outpost-edge/outpost/models/goengine"
	"github.com/outpost-edge/outpost/models/manifest"
	"github.com/outpost-edge/outpost/models/onnx"
	"github.com/outpost-edge/outpost/models/ort"
	"github.com/outpost-edge/outpost/models/validate"
	"github.com/outpost-edge/outpost/quant"
)

// quantCmd quantizes a package, prints the report and refuses a result
// that loses more accuracy than --max-drop (or --max-accuracy-drop), and,
// on request, one that is not faster or too large.
func quantCmd(fs *flag.FlagSet) runFunc {
	mode := fs.String("mode", quant.Static, "int8-static, int8-dynamic or fp16")
	calib := fs.String("calibration", quant.MinMax, "activation ranges for int8-static: minmax, percentile, mse or entropy (KL divergence)")
	pct := fs.Float64("percentile", 99.99, "with --calibration percentile")
	data := fs.String("data", "", "JSON lines of rows ([...] or {\"features\":[...],\"label\":k}) to calibrate on; without --eval-data the last --holdout of them evaluate instead (default: the golden inputs)")
	evalData := fs.String("eval-data", "", "JSON lines of rows, as --data, to evaluate on")
	holdout := fs.Float64("holdout", 0.2, "share of --data held out for evaluation when there is no --eval-data")
	maxDrop := fs.Float64("max-drop", 0.01, "largest accuracy drop accepted, as a fraction (0.01 = one point); --max-accuracy-drop says it in points")
	maxPoints := fs.Float64("max-accuracy-drop", -1, "largest accuracy drop accepted, in points (1 = one point); overrides --max-drop")
	requireFaster := fs.Bool("require-faster", false, "refuse a result that is not faster than float at batch 1 and 32 on the engine that decides (ONNX Runtime when it loads)")
	maxSize := fs.Float64("max-size-ratio", 0, "refuse a result larger than this share of the float model's size (0: no bound)")
	version := fs.Int64("version", 0, "version of the quantized package (default: input version + 1)")
	fullRange := fs.Bool("full-range", false, "8-bit weights instead of 7 (may saturate ONNX Runtime's x86 int8 kernels)")
	perTensor := fs.Bool("per-tensor", false, "one scale per weight tensor, Convs too")
	perChannel := fs.Bool("per-channel", false, "one scale per output channel, Gemm and MatMul too (by default they take one per tensor unless it would lose more than a bit)")
	symmetric := fs.Bool("symmetric", false, "int8-static: activation ranges centred on zero (zero point 0) instead of fitted")
	allConvs := fs.Bool("all-convs", false, "quantize Convs over fewer than 8 input channels too (they stay float by default, int8 being slower there on CPU, but for a 1-D one that feeds a quantized Conv in int8-static), for accelerators that take int8 graphs only")
	lib := fs.String("onnxruntime", "", "path of libonnxruntime.so.1 (default: found like the agent finds it)")
	goOnly := fs.Bool("go-only", false, "evaluate on the pure-Go engine only (no ONNX Runtime)")
	asJSON := fs.Bool("json", false, "print the report as JSON (same as -o json)")
	format := fs.String("o", "text", "output: text or json (the report alone, as one JSON object)")
	fs.StringVar(format, "output", "text", "same as -o")
	return func(_ context.Context, c *cli, args []string) error {
		pos, err := positional(fs, args, 2, "quant IN_DIR OUT_DIR [--mode ...]")
		if err != nil {
			return err
		}
		if *maxDrop < 0 || *maxDrop > 1 {
			return fmt.Errorf("%w: --max-drop is a fraction from 0 to 1, got %v", errUsage, *maxDrop)
		}
		if *maxPoints != -1 {
			if *maxPoints < 0 || *maxPoints > 100 {
				return fmt.Errorf("%w: --max-accuracy-drop is in points from 0 to 100, got %v", errUsage, *maxPoints)
			}
			*maxDrop = *maxPoints / 100
		}
		switch *format {
		case "json":
			*asJSON = true
		case "text":
		default:
			return fmt.Errorf("%w: -o must be text or json, got %q", errUsage, *format)
		}
		if *holdout <= 0 || *holdout >= 1 {
			return fmt.Errorf("%w: --holdout is a share between 0 and 1, got %v", errUsage, *holdout)
		}
		if *maxSize < 0 {
			return fmt.Errorf("%w: --max-size-ratio must be positive, got %v", errUsage, *maxSize)
		}
		m, model, err := manifest.Load(pos[0])
		if err != nil {
			return err
		}
		info, err := onnx.Inspect(model)
		if err != nil {
			return err
		}
		po := quant.PackageOptions{Options: quant.Options{Mode: *mode, Calibration: *calib, Percentile: *pct, FullRange: *fullRange, PerTensor: *perTensor, PerChannel: *perChannel, Symmetric: *symmetric, AllConvs: *allConvs},
			MaxDrop: *maxDrop, Version: *version, Holdout: *holdout, RequireFaster: *requireFaster, MaxSizeRatio: *maxSize}
		po.Engines, po.Order, po.Tracer, po.Unavailable = quantEngines(m, info, *lib, *goOnly)
		if *data != "" {
			if po.Rows, po.Labels, err = readRows(*data); err != nil {
				return err
			}
		}
		if *evalData != "" {
			if po.EvalRows, po.EvalLabels, err = readRows(*evalData); err != nil {
				return err
			}
		}
		rep, err := quant.QuantizePackage(pos[0], pos[1], po)
		if rep != nil {
			if *asJSON {
				if perr := printJSON(c.out, rep); perr != nil {
					return perr
				}
			} else {
				fmt.Fprint(c.out, rep)
			}
		}
		if err != nil {
			if quant.Refused(err) {
				return fmt.Errorf("%w; nothing written to %s", err, pos[1])
			}
			return err
		}
		if !*asJSON { // the JSON report says so in "written"
			fmt.Fprintf(c.out, "wrote %s\n", pos[1])
		}
		return nil
	}
}

// quantEngines opens the engines that may run the package's models, ONNX
// Runtime first (it decides accuracy and the golden outputs, and
// calibrates); each engine runs rows laid out as golden vectors are, so
// multi-input (v2) manifests work too. An engine that cannot start is
// returned in unavailable; one that cannot load a model is named by the
// report.
func quantEngines(m *manifest.Manifest, info *onnx.Info, lib string, goOnly bool) (map[string]func([]byte) (quant.Runner, error), []string, quant.Tracer, map[string]string) {
	scores := scoresName(m, info)
	engines := map[string]func([]byte) (quant.Runner, error){}
	unavailable := map[string]string{}
	var order []string
	var tracer quant.Tracer
	if goOnly {
		unavailable["onnxruntime"] = "--go-only"
	} else if path, err := ort.FindLibrary(lib); err != nil {
		unavailable["onnxruntime"] = err.Error()
	} else if err := ort.Init(path); err != nil {
		unavailable["onnxruntime"] = err.Error()
	} else {
		engines["onnxruntime"] = func(b []byte) (quant.Runner, error) {
			s, err := ort.NewSessionWith(b, ort.Options{Output: scores})
			if err != nil {
				return nil, err
			}
			return rowRunner{s, validate.Rows(m, info, s)}, nil
		}
		order = append(order, "onnxruntime")
		tracer = func(b []byte, names []string, x []float32, width int) (map[string][]float32, error) {
			var c feedCapture
			if _, err := validate.Rows(m, info, &c)(x, width); err != nil {
				return nil, err
			}
			return ort.TraceFeeds(b, names, c.feeds)
		}
	}
	engines["go"] = func(b []byte) (quant.Runner, error) {
		e, err := goengine.LoadWith(b, goengine.Options{Output: scores})
		if err != nil {
			return nil, err
		}
		return rowRunner{e, validate.Rows(m, info, e)}, nil
	}
	order = append(order, "go")
	if tracer == nil {
		tracer = func(b []byte, _ []string, x []float32, width int) (map[string][]float32, error) {
			e, err := goengine.LoadWith(b, goengine.Options{Output: scores})
			if err != nil {
				return nil, fmt.Errorf("calibration on the pure-Go engine (ONNX Runtime is unavailable): %w", err)
			}
			var c feedCapture
			if _, err := validate.Rows(m, info, &c)(x, width); err != nil {
				return nil, err
			}
			return e.TraceFeeds(c.feeds)
		}
	}
	return engines, order, tracer, unavailable
}

// rowRunner runs golden-vector rows on an engine through validate.Rows.
type rowRunner struct {
	validate.Runner
	rows func(x []float32, width int) ([]float32, error)
}

func (r rowRunner) Run(x []float32, width int) ([]float32, error) { return r.rows(x, width) }

// feedCapture keeps the feeds validate.Rows makes of rows, for a trace.
type feedCapture struct{ feeds []onnx.Feed }

func (c *feedCapture) RunFeeds(feeds []onnx.Feed) ([]float32, error) {
	c.feeds = feeds
	return nil, nil
}

// readRows reads feature vectors, with labels if every row has one.
func readRows(path string) ([][]float32, []int, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	var rows [][]float32
	var labels []int
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		var row struct {
			Features []float32 `json:"features"`
			Label    *int      `json:"label"`
		}
		if strings.HasPrefix(line, "[") {
			err = json.Unmarshal([]byte(line), &row.Features)
		} else {
			err = json.Unmarshal([]byte(line), &row)
		}
		if err != nil || len(row.Features) == 0 {
			return nil, nil, fmt.Errorf("%s:%d: want [numbers] or {\"features\":[...],\"label\":k}: %v", path, n, err)
		}
		rows = append(rows, row.Features)
		if row.Label != nil {
			labels = append(labels, *row.Label)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, nil, err
	}
	if len(labels) != 0 && len(labels) != len(rows) {
		return nil, nil, fmt.Errorf("%s: %d of %d rows have a label; label all or none", path, len(labels), len(rows))
	}
	if len(labels) == 0 {
		labels = nil
	}
	return rows, labels, nil
}

// positional parses flags around exactly n positional args.
func positional(fs *flag.FlagSet, args []string, n int, usage string) ([]string, error) {
	var pos []string
	for len(args) > 0 {
		if err := fs.Parse(args); err != nil {
			return nil, fmt.Errorf("%w: %s: %w", errUsage, usage, err)
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(pos) != n {
		return nil, fmt.Errorf("%w: %s", errUsage, usage)
	}
	return pos, nil
}
