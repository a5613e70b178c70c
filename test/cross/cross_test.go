// Package cross builds the agent for the device architectures with cgo and
// the Debian cross compilers, and runs the arm64 build under qemu.
package cross

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/outpost-edge/outpost/test/testenv"
)

type target struct {
	goarch, goarm, cc string
	machine           elf.Machine
}

var targets = map[string]target{
	"arm64": {goarch: "arm64", cc: "aarch64-linux-gnu-gcc", machine: elf.EM_AARCH64},
	"armv7": {goarch: "arm", goarm: "7", cc: "arm-linux-gnueabihf-gcc", machine: elf.EM_ARM},
}

func goCmd(t *testing.T, tg target, args ...string) *exec.Cmd {
	t.Helper()
	root, err := testenv.Root()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := exec.LookPath(tg.cc); err != nil {
		t.Fatalf("%s not installed; run `make deps`: %v", tg.cc, err)
	}
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1", "GOOS=linux", "GOARCH="+tg.goarch, "CC="+tg.cc)
	if tg.goarm != "" {
		cmd.Env = append(cmd.Env, "GOARM="+tg.goarm)
	}
	return cmd
}

func run(t *testing.T, cmd *exec.Cmd) string {
	t.Helper()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(cmd.Args, " "), err, out)
	}
	return string(out)
}

// buildAgent cross-compiles outpost-agent and checks the ELF machine.
func buildAgent(t *testing.T, name string) string {
	tg := targets[name]
	out := filepath.Join(t.TempDir(), "outpost-agent")
	run(t, goCmd(t, tg, "build", "-ldflags", "-X github.com/outpost-edge/outpost/deploy/version.Version=cross-test", "-o", out, "./agent/cmd/outpost-agent"))
	f, err := elf.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Machine != tg.machine {
		t.Fatalf("%s agent is %v, want %v", name, f.Machine, tg.machine)
	}
	// cgo (go-sqlite3) means a dynamically linked binary with an interpreter.
	if f.Section(".interp") == nil {
		t.Fatalf("%s agent is static: cgo was not used", name)
	}
	return out
}

func qemu(t *testing.T) string {
	t.Helper()
	q, err := exec.LookPath("qemu-aarch64-static")
	if err != nil {
		t.Fatalf("qemu-aarch64-static not installed; run `make deps`: %v", err)
	}
	return q
}

func TestArm64AgentRunsUnderQemu(t *testing.T) {
	bin := buildAgent(t, "arm64")
	out := run(t, exec.Command(qemu(t), "-L", "/usr/aarch64-linux-gnu", bin, "--version"))
	if !strings.HasPrefix(out, "outpost-agent cross-test") {
		t.Fatalf("arm64 --version printed %q", out)
	}
}

func TestArmv7AgentBuilds(t *testing.T) {
	buildAgent(t, "armv7")
}

// TestArm64StoreTestsUnderQemu runs the agent store's own tests (cgo SQLite,
// WAL, fsync modes) as an arm64 binary.
func TestArm64StoreTestsUnderQemu(t *testing.T) {
	testBin := filepath.Join(t.TempDir(), "store.test")
	run(t, goCmd(t, targets["arm64"], "test", "-c", "-o", testBin, "./agent/store"))
	cmd := exec.Command(qemu(t), "-L", "/usr/aarch64-linux-gnu", testBin, "-test.v", "-test.count=1")
	cmd.Dir = t.TempDir()
	out := run(t, cmd)
	if !strings.Contains(out, "--- PASS: TestBootCounterSurvivesReopen") || !strings.HasSuffix(strings.TrimSpace(out), "PASS") {
		t.Fatalf("arm64 store tests:\n%s", out)
	}
}
