// Command withservices starts the services a whole test run shares (one
// Kafka broker), runs the given command with their addresses in the
// environment, then stops them. `make test` wraps `go test` in it so that
// every package talks to the same broker.
//
//	withservices [--dir DIR] -- go test ./...
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"

	"github.com/outpost-edge/outpost/test/kafkatest"
)

func main() { os.Exit(run()) }

func run() int {
	dir := flag.String("dir", "", "directory for service data and logs (default: a temp dir, removed afterwards)")
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: withservices [--dir DIR] -- command [args...]")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	d := *dir
	if d == "" {
		tmp, err := os.MkdirTemp("", "outpost-services-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "withservices:", err)
			return 1
		}
		defer os.RemoveAll(tmp)
		d = tmp
	} else if err := os.MkdirAll(d, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "withservices:", err)
		return 1
	}
	start := time.Now()
	k, err := kafkatest.Start(ctx, d)
	if err != nil {
		fmt.Fprintln(os.Stderr, "withservices:", err)
		return 1
	}
	defer k.Stop()
	fmt.Fprintf(os.Stderr, "withservices: kafka %s ready in %s (pid %d, log %s/kafka.log)\n", k.Addr, time.Since(start).Round(time.Millisecond), k.PID(), d)

	cmd := exec.CommandContext(ctx, flag.Arg(0), flag.Args()[1:]...)
	cmd.Env = append(os.Environ(), k.Env()...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.ExitCode() > 0 {
			return ee.ExitCode()
		}
		fmt.Fprintln(os.Stderr, "withservices:", err)
		return 1
	}
	return 0
}
