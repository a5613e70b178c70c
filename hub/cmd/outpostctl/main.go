// Command outpostctl is the Outpost operator CLI.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/outpost-edge/outpost/hub/ctl"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := ctl.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
