// Package e2e runs the built binaries the way an operator does.
package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/sync/state"
	"github.com/outpost-edge/outpost/test/service"
	"github.com/outpost-edge/outpost/test/testenv"
)

// build compiles one main package into dir with version information.
func build(t *testing.T, dir, pkg, name string) string {
	t.Helper()
	root, err := testenv.Root()
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-ldflags",
		"-X github.com/outpost-edge/outpost/deploy/version.Version=9.9.9-test -X github.com/outpost-edge/outpost/deploy/version.Commit=abc123",
		"-o", out, "./"+pkg)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", pkg, err, b)
	}
	return out
}

func freePort(t *testing.T) int {
	t.Helper()
	p, err := service.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// start runs a binary with its combined output in a file.
func start(t *testing.T, bin string, args ...string) (*exec.Cmd, string) {
	t.Helper()
	return startEnv(t, nil, bin, args...)
}

// envLines keeps the KEY=VALUE lines of an environment file.
func envLines(file string) []string {
	var out []string
	for _, l := range strings.Split(file, "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return out
}

func startEnv(t *testing.T, env []string, bin string, args ...string) (*exec.Cmd, string) {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), filepath.Base(bin)+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = f, f
	service.DiesWithTest(cmd)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		f.Close()
	})
	return cmd, logPath
}

// stop sends sig and requires a clean exit within 15s.
func stop(t *testing.T, cmd *exec.Cmd, sig syscall.Signal, logPath string) {
	t.Helper()
	if err := cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			b, _ := os.ReadFile(logPath)
			t.Fatalf("%s exited with %v after %s\n%s", cmd.Path, err, sig, b)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("%s did not stop within 15s of %s", cmd.Path, sig)
	}
}

func devices(url string) ([]state.Device, error) {
	resp, err := http.Get(url + "/v1/devices")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var d []state.Device
	return d, json.NewDecoder(resp.Body).Decode(&d)
}

// TestHubAndAgent is `make demo` under test: the hub with its embedded
// broker and development Kafka, one agent connected over MQTT, the agent's
// reported state visible through the hub API and outpostctl, and a clean
// shutdown of both on SIGINT and SIGTERM.
func TestHubAndAgent(t *testing.T) {
	bins := t.TempDir()
	hubBin := build(t, bins, "hub/cmd/outpost-hub", "outpost-hub")
	agentBin := build(t, bins, "agent/cmd/outpost-agent", "outpost-agent")
	ctlBin := build(t, bins, "hub/cmd/outpostctl", "outpostctl")

	mqttPort, httpPort := freePort(t), freePort(t)
	api := "http://127.0.0.1:" + strconv.Itoa(httpPort)
	hub, hubLog := start(t, hubBin, "--data_dir", t.TempDir(), "--broker.nats_port", "-1",
		"--broker.mqtt_port", strconv.Itoa(mqttPort), "--http.listen", "127.0.0.1:"+strconv.Itoa(httpPort))
	waitFor(t, hubLog, "hub ready", 30*time.Second)
	if b, _ := os.ReadFile(hubLog); !strings.Contains(string(b), "embedded development Kafka") {
		t.Fatalf("hub did not say it runs the development Kafka:\n%s", b)
	}

	// Enrolment: outpostctl prints an environment file the agent reads.
	envFile, err := exec.Command(ctlBin, "--hub", api, "device", "add", "e2e-dev-1", "--label", "site=lab").Output()
	if err != nil {
		t.Fatalf("outpostctl device add: %v", err)
	}
	agent, agentLog := startEnv(t, envLines(string(envFile)), agentBin, "--data_dir", t.TempDir(), "--metrics.listen", "",
		"--hub.url", fmt.Sprintf("tcp://127.0.0.1:%d", mqttPort), "--report.interval", "1s")
	var got []state.Device
	deadline := time.Now().Add(20 * time.Second)
	for len(got) == 0 || got[0].Reported == nil || got[0].Reported.Status != state.StatusRunning {
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(agentLog)
			t.Fatalf("agent never reported; devices = %+v\nagent log:\n%s", got, b)
		}
		time.Sleep(200 * time.Millisecond)
		got, _ = devices(api)
	}
	if r := got[0].Reported; got[0].ID != "e2e-dev-1" || got[0].Labels["site"] != "lab" || r.AgentVersion != "9.9.9-test" || r.Boot != 1 {
		t.Fatalf("device = %+v, reported = %+v", got[0], r)
	}

	out, err := exec.Command(ctlBin, "--hub", api, "device", "list").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "e2e-dev-1") || !strings.Contains(string(out), "active") {
		t.Fatalf("outpostctl device list: %v\n%s", err, out)
	}

	stop(t, agent, syscall.SIGINT, agentLog)
	got, err = devices(api)
	if err != nil || len(got) != 1 || got[0].Reported.Status != state.StatusStopping {
		t.Fatalf("after agent stop, devices = %+v, %v", got, err)
	}
	if out, err := exec.Command(ctlBin, "--hub", api, "device", "revoke", "e2e-dev-1").CombinedOutput(); err != nil {
		t.Fatalf("outpostctl device revoke: %v\n%s", err, out)
	}
	out, _ = exec.Command(ctlBin, "--hub", api, "device", "list").CombinedOutput()
	if !strings.Contains(string(out), "revoked") {
		t.Fatalf("device list after revoke:\n%s", out)
	}
	stop(t, hub, syscall.SIGTERM, hubLog)
}

func TestVersionAndHelp(t *testing.T) {
	bins := t.TempDir()
	for _, b := range []struct{ pkg, name string }{
		{"hub/cmd/outpost-hub", "outpost-hub"},
		{"agent/cmd/outpost-agent", "outpost-agent"},
		{"hub/cmd/outpostctl", "outpostctl"},
	} {
		bin := build(t, bins, b.pkg, b.name)
		out, err := exec.Command(bin, "--version").CombinedOutput()
		if want := b.name + " 9.9.9-test (commit abc123)"; err != nil || strings.TrimSpace(string(out)) != want {
			t.Errorf("%s --version = %q, %v; want %q", b.name, out, err, want)
		}
		out, err = exec.Command(bin, "--help").CombinedOutput()
		// The daemons print "Usage: NAME ..."; outpostctl, on cobra, "Usage:\n  NAME ...".
		if u := strings.Index(string(out), "Usage:"); err != nil || u < 0 || !strings.HasPrefix(strings.TrimSpace(string(out)[u+len("Usage:"):]), b.name) {
			t.Errorf("%s --help: %v\n%s", b.name, err, out)
		}
	}
}

func waitFor(t *testing.T, logPath, text string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if f, err := os.Open(logPath); err == nil {
			found := scan(f, text)
			f.Close()
			if found {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	b, _ := os.ReadFile(logPath)
	t.Fatalf("%q not in %s after %s:\n%s", text, logPath, timeout, b)
}

func scan(r io.Reader, text string) bool {
	s := bufio.NewScanner(r)
	for s.Scan() {
		if strings.Contains(s.Text(), text) {
			return true
		}
	}
	return false
}
