// Package service runs an external server (Kafka, Mosquitto) for tests: it
// starts the process with its output in a log file, waits until the server
// answers, and stops exactly that process again. A server that does not come
// up is an error carrying the tail of its log, never a skip.
package service

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Spec describes one server process.
type Spec struct {
	Name    string
	Path    string
	Args    []string
	Env     []string // added to the environment
	LogPath string
	// Ready is polled until it returns nil, the process exits or Timeout passes.
	Ready   func(ctx context.Context) error
	Timeout time.Duration
}

// Process is a running server.
type Process struct {
	spec Spec
	cmd  *exec.Cmd
	done chan struct{}
	err  error // exit status, valid once done is closed
}

// Start launches the process and waits for it to be ready.
func Start(ctx context.Context, spec Spec) (*Process, error) {
	logf, err := os.Create(spec.LogPath)
	if err != nil {
		return nil, fmt.Errorf("%s: log file: %w", spec.Name, err)
	}
	cmd := exec.Command(spec.Path, spec.Args...)
	cmd.Env = append(os.Environ(), spec.Env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Own process group, so Stop reaches the server and only the server.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("%s: start %s: %w", spec.Name, spec.Path, err)
	}
	p := &Process{spec: spec, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	if err := p.wait(ctx); err != nil {
		p.Stop()
		return nil, fmt.Errorf("%s: %w\n--- %s log (%s) ---\n%s", spec.Name, err, spec.Name, spec.LogPath, p.LogTail(60))
	}
	return p, nil
}

func (p *Process) wait(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, p.spec.Timeout)
	defer cancel()
	var last error
	for {
		rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
		last = p.spec.Ready(rctx)
		rcancel()
		if last == nil {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("%w: %v", ErrExited, p.err)
		case <-ctx.Done():
			return fmt.Errorf("%w after %s: %w", ErrNotReady, p.spec.Timeout, last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// PID is the server's process id.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Stop sends SIGTERM to the server's process group, then SIGKILL after 20s.
func (p *Process) Stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

// Kill sends SIGKILL to the server's process group and waits for it: a
// crash, with no chance to clean up.
func (p *Process) Kill() {
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

// LogTail returns the last n lines of the server's log.
func (p *Process) LogTail(n int) string {
	data, err := os.ReadFile(p.spec.LogPath)
	if err != nil {
		return err.Error()
	}
	lines := bytes.Split(bytes.TrimRight(data, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// FreePort finds a free loopback TCP port.
func FreePort() (int, error) {
	// Below the kernel's ephemeral range: a port from there (what
	// listening on :0 gives) can be taken by any outgoing connection
	// between this check and the server's bind, and was, under load.
	lo := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil && n > 12000 {
				lo = n
			}
		}
	}
	for range 200 {
		p := 10000 + rand.IntN(lo-10000)
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err == nil {
			l.Close()
			return p, nil
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// DialReady is a Ready check that succeeds once addr accepts TCP.
func DialReady(addr string) func(context.Context) error {
	return func(ctx context.Context) error {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		return c.Close()
	}
}

// Addr joins a loopback address.
func Addr(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

var (
	// ErrExited means the server died before it was ready.
	ErrExited = errors.New("exited before ready")
	// ErrNotReady means the server did not answer in time.
	ErrNotReady = errors.New("not ready")
)

// DiesWithTest makes cmd's process be killed when the test binary dies: a
// test timeout panics without running cleanups, and an agent it started
// kept running (and taking CPU) into the tests after it.
func DiesWithTest(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
}
