package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"text/tabwriter"
	"time"

	"go.yaml.in/yaml/v3"
)

// render writes v as -o asks: JSON, YAML, or a table (wide: more columns).
func render[T any](w io.Writer, format string, v T, table func(w io.Writer, v T, wide bool)) error {
	switch format {
	case "json":
		return printJSON(w, v)
	case "yaml":
		return printYAML(w, v)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	table(tw, v, format == "wide")
	return tw.Flush()
}

// printYAML writes v as YAML under its JSON keys.
func printYAML(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	var generic any
	if err := json.Unmarshal(b, &generic); err != nil {
		return err
	}
	out, err := yaml.Marshal(generic)
	if err != nil {
		return err
	}
	_, err = w.Write(out)
	return err
}

// show GETs path and renders the answer; with --watch it polls and
// renders again whenever the answer changes, until done says so (nil:
// until interrupted).
func show[T any](ctx context.Context, c *cli, path string, done func(T) bool, table func(w io.Writer, v T, wide bool)) error {
	last := ""
	for {
		var v T
		if err := c.call(ctx, http.MethodGet, path, nil, &v); err != nil {
			if c.watch && ctx.Err() != nil {
				return nil // interrupted mid-poll: as clean as between polls
			}
			return err
		}
		var b bytes.Buffer
		if err := render(&b, c.format, v, table); err != nil {
			return err
		}
		if !c.watch {
			_, err := c.out.Write(b.Bytes())
			return err
		}
		if s := b.String(); s != last {
			switch {
			case last != "" && c.format == "yaml":
				fmt.Fprintln(c.out, "---")
			case c.format != "json" && c.format != "yaml":
				if last != "" {
					fmt.Fprintln(c.out)
				}
				fmt.Fprintf(c.out, "# %s\n", time.Now().Format("15:04:05"))
			}
			if _, err := io.WriteString(c.out, s); err != nil {
				return err
			}
			last = s
		}
		if done != nil && done(v) {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(c.interval):
		}
	}
}
