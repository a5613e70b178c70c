package ctl

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"
)

// Reference writes the CLI reference, in Markdown, from the command tree:
// each command's help as `outpostctl ... --help` prints it. docs/outpostctl.md
// is this output (go test ./hub/ctl -run Reference -update rewrites it).
func Reference(w io.Writer) error {
	root := newRoot(context.Background(), io.Discard, io.Discard, new(bool))
	root.InitDefaultCompletionCmd()
	root.InitDefaultHelpCmd()
	root.InitDefaultVersionFlag()
	fmt.Fprintf(w, "# outpostctl reference\n\nGenerated from the command tree (`go test ./hub/ctl -run Reference -update`); do not edit.\n\n")
	fmt.Fprintf(w, "```\n%s\n```\n", root.Long)
	var walk func(c *cobra.Command) error
	walk = func(c *cobra.Command) error {
		if c.Hidden || c.Name() == "help" {
			return nil
		}
		c.InitDefaultHelpFlag()
		fmt.Fprintf(w, "\n## %s\n\n%s\n\n```\n%s```\n", c.CommandPath(), c.Short, c.UsageString())
		for _, sub := range c.Commands() {
			if err := walk(sub); err != nil {
				return err
			}
		}
		return nil
	}
	return walk(root)
}
