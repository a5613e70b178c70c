package ctl

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"flag"
	"fmt"
	"strconv"

	"github.com/outpost-edge/outpost/models/goengine"
	"github.com/outpost-edge/outpost/models/manifest"
	"github.com/outpost-edge/outpost/models/onnx"
	"github.com/outpost-edge/outpost/models/ort"
	"github.com/outpost-edge/outpost/models/validate"
)

const runLine = "model run DIR --data X.csv [--engine onnxruntime|go] [--onnxruntime LIB] [-o csv|json]"

// runBatch bounds the rows one engine call takes.
const runBatch = 512

// runRow is one row's result as -o json prints it.
type runRow struct {
	Row    int       `json:"row"`
	Scores []float32 `json:"scores"`
	// Label and Flagged are what the agent would report (manifest
	// Outputs.Interpret); regression has neither.
	Label   *string `json:"label,omitempty"`
	Flagged *bool   `json:"flagged,omitempty"`
	// GraphLabel is the exporter's own label output (--engine go).
	GraphLabel *string `json:"graph_label,omitempty"`
}

// modelRun runs a package over CSV rows offline and prints each row's
// scores, the label the manifest derives and, on the pure-Go engine, the
// graph's own label: a data scientist's check that the package answers as
// the notebook did.
func modelRun(fs *flag.FlagSet) runFunc {
	data := fs.String("data", "", "CSV with a header; each row is one model input row (every input's values in order)")
	engine := fs.String("engine", "onnxruntime", "onnxruntime or go (go also runs the graph's label output)")
	lib := fs.String("onnxruntime", "", "path of libonnxruntime.so.1 (default: $"+ort.EnvLibrary+", lib/ next to outpostctl, /usr/lib/outpost)")
	format := fs.String("o", "csv", "output: csv (a header, then one line per row) or json (one object per line)")
	fs.StringVar(format, "output", "csv", "same as -o")
	return func(_ context.Context, c *cli, args []string) error {
		dir, err := oneArg(fs, args, "DIR (a model package)")
		if err != nil {
			return helpOr(c, fs, runLine, err)
		}
		switch {
		case *data == "":
			return fmt.Errorf("%w: --data X.csv is required", errUsage)
		case *format != "csv" && *format != "json":
			return fmt.Errorf("%w: -o must be csv or json, got %q", errUsage, *format)
		}
		m, model, err := manifest.Load(dir)
		if err != nil {
			return err
		}
		info, err := onnx.Inspect(model)
		if err != nil {
			return err
		}
		if err := validate.Fits(m, info); err != nil {
			return err
		}
		width := m.RowWidth()
		x, _, err := readCSV(*data, width, m)
		if err != nil {
			return err
		}
		scores := scoresName(m, info)
		var r validate.Runner
		var labeler *goengine.Engine
		// RunLabels takes one input's rows: a multi-input graph gets no
		// graph_label column.
		if *engine == "go" && m.Outputs.Label != "" && len(info.Inputs) == 1 {
			if labeler, err = goengine.LoadWith(model, goengine.Options{Output: scores, Label: m.Outputs.Label}); err != nil {
				return err
			}
			r = labeler
		} else {
			open, err := engineOpener(*engine, *lib)
			if err != nil {
				return err
			}
			if r, err = open(model, scores); err != nil {
				return err
			}
		}
		defer r.Close()
		run := validate.Rows(m, info, r)

		rows := len(x) / width
		var out []float32
		var graphLabels []string
		for at := 0; at < rows; at += runBatch {
			n := min(runBatch, rows-at)
			chunk := x[at*width : (at+n)*width]
			y, err := run(chunk, width)
			if err != nil {
				return fmt.Errorf("rows %d to %d: %w", at+1, at+n, err)
			}
			out = append(out, y...)
			if labeler != nil {
				l, err := labeler.RunLabels(chunk, width)
				if err != nil {
					return fmt.Errorf("rows %d to %d: label output %s: %w", at+1, at+n, m.Outputs.Label, err)
				}
				graphLabels = append(graphLabels, l...)
			}
		}
		k := len(out) / rows
		if k == 0 || len(out) != rows*k || labeler != nil && len(graphLabels) != rows {
			return fmt.Errorf("%d rows gave %d scores and %d labels", rows, len(out), len(graphLabels))
		}
		results := make([]runRow, rows)
		for i := range rows {
			res := runRow{Row: i + 1, Scores: out[i*k : (i+1)*k]}
			if m.Task != "regression" {
				l, pos := m.Outputs.Interpret(m.Task, res.Scores)
				res.Label, res.Flagged = &l, &pos
			}
			if labeler != nil {
				res.GraphLabel = &graphLabels[i]
			}
			results[i] = res
		}
		if *format == "json" {
			enc := json.NewEncoder(c.out)
			for _, res := range results {
				if err := enc.Encode(res); err != nil {
					return err
				}
			}
			return nil
		}
		w := csv.NewWriter(c.out)
		head := []string{"row"}
		for j := range k {
			head = append(head, fmt.Sprintf("%s[%d]", scores, j))
		}
		if m.Task != "regression" {
			head = append(head, "label", "flagged")
		}
		if labeler != nil {
			head = append(head, "graph_label")
		}
		w.Write(head)
		for _, res := range results {
			line := []string{strconv.Itoa(res.Row)}
			for _, v := range res.Scores {
				line = append(line, strconv.FormatFloat(float64(v), 'g', -1, 32))
			}
			if res.Label != nil {
				line = append(line, *res.Label, strconv.FormatBool(*res.Flagged))
			}
			if res.GraphLabel != nil {
				line = append(line, *res.GraphLabel)
			}
			w.Write(line)
		}
		w.Flush()
		return w.Error()
	}
}
