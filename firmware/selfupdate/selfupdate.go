// Package selfupdate keeps the agent binary in two slots beside the one
// the bundle installed (the factory build), and launches the right one.
//
// The binary systemd starts is the factory build. Before anything else it
// calls Start, which reads the slot state and execs the current slot's
// binary. During a new build's probation every start is counted here, in
// the factory build, before the new build runs; a build that crashes on
// start is therefore rolled back after max_boots starts even though it
// never gets far enough to do anything itself. The switch between builds
// is one atomic rename of the state file, fsync'd with its directory.
package selfupdate

import (
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"

	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/outpost-edge/outpost/firmware/bundle"
	"github.com/outpost-edge/outpost/firmware/files"
)

// Names under the slots directory, and the environment the launcher
// passes to the build it starts.
const (
	StateFile = "state.json"
	Binary    = "outpost-agent"
	// EnvLaunched tells a slot build that the launcher has counted this start.
	EnvLaunched = "OUTPOST_AGENT_LAUNCHED"
	// EnvLauncher is the factory binary to restart through.
	EnvLauncher = "OUTPOST_AGENT_LAUNCHER"
)

// Phases of the slot state.
const (
	PhaseProbation  = "probation"
	PhaseCommitted  = "committed"
	PhaseRolledBack = "rolled_back"
)

// State is what the slot directory records.
type State struct {
	Current       string    `json:"current"` // "a", "b", or "" for the factory build
	CurrentBuild  int64     `json:"current_build"`
	Previous      string    `json:"previous"`
	PreviousBuild int64     `json:"previous_build"`
	Phase         string    `json:"phase,omitempty"`
	Boots         int64     `json:"boots"` // starts of Current during probation
	MaxBoots      int64     `json:"max_boots"`
	Reason        string    `json:"reason,omitempty"`
	At            time.Time `json:"at"`
}

// Slots is the slot directory, with the factory build's number.
type Slots struct {
	Dir     string
	Factory int64
	Log     *slog.Logger
}

// Load reads the state; a device that never updated runs the factory build.
func (s Slots) Load() (State, error) {
	data, err := os.ReadFile(filepath.Join(s.Dir, StateFile))
	if errors.Is(err, fs.ErrNotExist) {
		return State{CurrentBuild: s.Factory, PreviousBuild: s.Factory}, nil
	}
	if err != nil {
		return State{}, fmt.Errorf("selfupdate: %w", err)
	}
	var st State
	if err := json.Unmarshal(data, &st); err != nil {
		return State{}, fmt.Errorf("selfupdate: %s: %w", StateFile, err)
	}
	return st, nil
}

func (s Slots) save(st State) error {
	st.At = time.Now().UTC()
	data, _ := json.MarshalIndent(st, "", "  ")
	if err := os.MkdirAll(s.Dir, 0o750); err != nil {
		return fmt.Errorf("selfupdate: %w", err)
	}
	return files.WriteBytes(filepath.Join(s.Dir, StateFile), data, 0o600)
}

// Running is the build and slot the state says run now.
func (s Slots) Running() (int64, string, error) {
	st, err := s.Load()
	return st.CurrentBuild, st.Current, err
}

func (s Slots) binary(slot string) string { return filepath.Join(s.Dir, slot, Binary) }

// launch counts this start and returns the binary that should run, or ""
// for this one. It runs in the factory build only.
func (s Slots) launch() (string, State, error) {
	st, err := s.Load()
	if err != nil {
		return "", st, err
	}
	if st.Phase == PhaseProbation {
		st.Boots++
		if st.Boots > st.MaxBoots {
			st = rolledBack(st, fmt.Sprintf("crash loop: build %d started %d times during probation (max_boots %d)", st.CurrentBuild, st.Boots-1, st.MaxBoots))
		}
		if err := s.save(st); err != nil {
			return "", st, err
		}
	}
	if st.Current == "" {
		return "", st, nil
	}
	return s.binary(st.Current), st, nil
}

func rolledBack(st State, reason string) State {
	st.Current, st.CurrentBuild = st.Previous, st.PreviousBuild
	st.Phase, st.Reason, st.Boots = PhaseRolledBack, reason, 0
	return st
}

// Start hands the process to the build that should run: it returns only
// when that is this binary. A slot binary that cannot be executed is
// rolled back at once.
func (s Slots) Start() error {
	if os.Getenv(EnvLaunched) != "" {
		return nil // a slot build, started by the launcher: counted already
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("selfupdate: %w", err)
	}
	for range 3 {
		bin, st, err := s.launch()
		if err != nil || bin == "" {
			return err
		}
		if s.Log != nil {
			s.Log.Info("starting agent build", "build", st.CurrentBuild, "slot", st.Current, "phase", st.Phase, "boots", st.Boots)
		}
		env := append(os.Environ(), EnvLaunched+"=1", EnvLauncher+"="+self)
		err = syscall.Exec(bin, append([]string{bin}, os.Args[1:]...), env)
		// Exec returns only on failure.
		if err := s.save(rolledBack(st, fmt.Sprintf("exec build %d: %v", st.CurrentBuild, err))); err != nil {
			return err
		}
	}
	return errors.New("selfupdate: no build of the agent can be started")
}

// Relaunch restarts the agent through the launcher, so that the build the
// state now names runs (after a switch or a rollback).
func Relaunch() error {
	bin := os.Getenv(EnvLauncher)
	if bin == "" {
		var err error
		if bin, err = os.Executable(); err != nil {
			return fmt.Errorf("selfupdate: %w", err)
		}
	}
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, EnvLaunched+"=") && !strings.HasPrefix(e, EnvLauncher+"=") {
			env = append(env, e)
		}
	}
	return fmt.Errorf("selfupdate: relaunch %s: %w", bin, syscall.Exec(bin, append([]string{bin}, os.Args[1:]...), env))
}

// Install copies a verified binary into the slot that does not run now
// and returns that slot.
func (s Slots) Install(src string) (string, error) {
	st, err := s.Load()
	if err != nil {
		return "", err
	}
	slot := "a"
	if st.Current == "a" {
		slot = "b"
	}
	if err := CheckArch(src); err != nil {
		return "", err
	}
	in, err := os.Open(src)
	if err != nil {
		return "", fmt.Errorf("selfupdate: %w", err)
	}
	defer in.Close()
	if err := files.Write(s.binary(slot), in, 0o755); err != nil {
		return "", fmt.Errorf("selfupdate: install: %w", err)
	}
	return slot, nil
}

// CheckArch refuses a binary this device cannot run.
func CheckArch(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("selfupdate: %w: not an ELF binary: %w", ErrBuild, err)
	}
	defer f.Close()
	if want, ok := bundle.MachineOf(runtime.GOARCH); ok && f.Machine != want {
		return fmt.Errorf("selfupdate: %w: binary is %v, this device is %s", ErrBuild, f.Machine, runtime.GOARCH)
	}
	return nil
}

// SelfTest runs the installed build with --version, and with
// --check-config on the arguments this agent runs with: a build that
// cannot read the device's configuration never gets switched to.
func (s Slots) SelfTest(ctx context.Context, slot string, args []string) error {
	bin := s.binary(slot)
	for _, argv := range [][]string{{"--version"}, append([]string{"--check-config"}, args...)} {
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		out, err := exec.CommandContext(ctx, bin, argv...).CombinedOutput()
		cancel()
		if err != nil {
			return fmt.Errorf("selfupdate: %w: %s %s: %w: %s", ErrBuild, filepath.Base(bin), argv[0], err, tail(out))
		}
		if argv[0] == "--version" && !strings.HasPrefix(string(out), "outpost-agent ") {
			return fmt.Errorf("selfupdate: %w: --version printed %q", ErrBuild, tail(out))
		}
	}
	return nil
}

func tail(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 300 {
		s = s[len(s)-300:]
	}
	return s
}

// Switch makes slot (holding build) the one that starts next, on
// probation: maxBoots starts to come up and commit.
func (s Slots) Switch(slot string, build, maxBoots int64) error {
	st, err := s.Load()
	if err != nil {
		return err
	}
	if st.Current == slot && st.CurrentBuild == build && st.Phase == PhaseProbation {
		return nil // done before a restart
	}
	st.Previous, st.PreviousBuild = st.Current, st.CurrentBuild
	st.Current, st.CurrentBuild = slot, build
	st.Phase, st.Boots, st.MaxBoots, st.Reason = PhaseProbation, 0, maxBoots, ""
	return s.save(st)
}

// Commit ends probation: the current build stays.
func (s Slots) Commit() error {
	st, err := s.Load()
	if err != nil {
		return err
	}
	st.Phase, st.Boots = PhaseCommitted, 0
	return s.save(st)
}

// Rollback makes the previous build start next.
func (s Slots) Rollback(reason string) error {
	st, err := s.Load()
	if err != nil {
		return err
	}
	if st.Phase != PhaseProbation {
		return nil // rolled back already (by the launcher, say)
	}
	return s.save(rolledBack(st, reason))
}
