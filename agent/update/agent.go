package update

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"time"

	"github.com/outpost-edge/outpost/firmware/selfupdate"
	"github.com/outpost-edge/outpost/sync/state"
	"github.com/outpost-edge/outpost/sync/tuf"
)

// The agent's own binary is one more job of the same machine, under the
// model name tuf.AgentModel: download and verify through TUF, install into
// the inactive binary slot, self-test the build, switch (the slot state
// file), restart through the launcher, probation, commit or roll back.

const agentSlot = "agent" // the FromSlot/ToSlot key of an agent job

func isAgent(j *job) bool { return j.Model == tuf.AgentModel }

// stepAgent runs the work of an agent job's phase.
func (m *Manager) stepAgent(ctx context.Context, j *job) {
	self := m.o.Self
	switch j.Phase {
	case state.PhaseDownloading:
		if j.To == self.Factory {
			// Back to the bundle's own build: it is on the device already.
			_, cur, err := self.Running()
			if err != nil {
				m.retry(ctx, j, err)
				return
			}
			m.mu.Lock()
			j.FromSlot, j.ToSlot, j.SwitchBoot = map[string]string{agentSlot: cur}, map[string]string{agentSlot: ""}, m.o.Boot
			m.mu.Unlock()
			m.transition(ctx, j, state.PhaseSwitching, "")
			return
		}
		done, err := m.download(ctx, j)
		if !done {
			return
		}
		if err != nil {
			m.retry(ctx, j, err)
			return
		}
		m.transition(ctx, j, state.PhaseVerifying, "")
	case state.PhaseVerifying:
		_, _, err := m.signedTarget(j)
		if err == nil {
			err = selfupdate.CheckArch(m.staged(j) + ".tar")
		}
		if err != nil {
			m.verifyFailed(ctx, j, err)
			return
		}
		m.transition(ctx, j, state.PhaseInstalling, "")
	case state.PhaseInstalling:
		_, cur, err := self.Running()
		var slot string
		if err == nil {
			slot, err = self.Install(m.staged(j) + ".tar")
		}
		if err != nil {
			m.transition(ctx, j, state.PhaseFailed, err.Error())
			return
		}
		m.mu.Lock()
		j.FromSlot, j.ToSlot = map[string]string{agentSlot: cur}, map[string]string{agentSlot: slot}
		m.mu.Unlock()
		m.transition(ctx, j, state.PhaseSelfTest, "")
	case state.PhaseSelfTest:
		if err := self.SelfTest(ctx, j.ToSlot[agentSlot], m.o.Args); err != nil {
			m.transition(ctx, j, state.PhaseFailed, "self-test: "+err.Error())
			return
		}
		m.mu.Lock()
		j.SwitchBoot = m.o.Boot
		m.mu.Unlock()
		m.transition(ctx, j, state.PhaseSwitching, "")
	case state.PhaseShadow: // builds have no shadow phase
		m.transition(ctx, j, state.PhaseSwitching, "")
	case state.PhaseSwitching:
		if err := self.Switch(j.ToSlot[agentSlot], j.To, m.cfg.MaxBoots); err != nil {
			m.transition(ctx, j, state.PhaseFailed, "switch: "+err.Error())
			return
		}
		m.transition(ctx, j, state.PhaseProbation, "")
		m.restartInto(j.To)
	case state.PhaseProbation:
		if m.o.SelfBuild != j.To {
			return // this is the old build, about to restart into the new one
		}
		until, ok := m.until[j.Model]
		if !ok {
			until = time.Now().Add(m.cfg.Probation)
			m.until[j.Model] = until
		}
		if time.Now().Before(until) {
			return
		}
		if m.o.Connected != nil && !m.o.Connected() {
			m.transition(ctx, j, state.PhaseRollingBack, "no hub connection at the end of probation")
			return
		}
		delete(m.until, j.Model)
		if err := self.Commit(); err != nil {
			m.log.Error("update: commit the agent build; retrying", "err", err)
			return
		}
		m.transition(ctx, j, state.PhaseCommitted, "")
		os.Remove(m.staged(j) + ".tar")
	case state.PhaseRollingBack:
		if err := self.Rollback(j.Reason); err != nil {
			m.log.Error("update: agent rollback failed; retrying", "err", err)
			return
		}
		m.transition(ctx, j, state.PhaseRolledBack, j.Reason)
		m.restartInto(j.From)
	}
}

// restartInto asks the agent to start again through the launcher, unless
// this process already runs build.
func (m *Manager) restartInto(build int64) {
	if m.o.SelfBuild == build || m.o.Restart == nil {
		return
	}
	m.log.Warn("restarting into agent build", "build", build, "running", m.o.SelfBuild)
	m.o.Restart()
}

// agentStatus is the agent build among the reported models.
func (m *Manager) agentStatus() (state.ModelStatus, bool) {
	if m.o.Self == nil {
		return state.ModelStatus{}, false
	}
	_, slot, _ := m.o.Self.Running()
	return state.ModelStatus{Model: tuf.AgentModel, Version: m.o.SelfBuild, Slot: slot}, true
}

// RecoverAgent reconciles an agent job with the slot state after a
// restart: the launcher may have rolled a crash-looping build back, a
// switch may have been cut short. It reports whether this process is not
// the build that should run (the caller then relaunches).
func RecoverAgent(ctx context.Context, st Store, self selfupdate.Slots, running int64, log *slog.Logger) (relaunch bool, err error) {
	dc, err := load(ctx, st)
	if err != nil {
		return false, err
	}
	ls, err := self.Load()
	if err != nil {
		return false, err
	}
	if j := dc.Jobs[tuf.AgentModel]; j != nil && !state.Terminal(j.Phase) {
		before := j.Phase
		switch j.Phase {
		case state.PhaseSwitching:
			if err := self.Switch(j.ToSlot[agentSlot], j.To, ls.MaxBoots); err != nil {
				return false, err
			}
			j.Phase = state.PhaseProbation
		case state.PhaseProbation:
			switch {
			case ls.Phase == selfupdate.PhaseRolledBack && ls.CurrentBuild != j.To:
				j.Phase, j.Reason = state.PhaseRolledBack, ls.Reason
			case ls.Phase == selfupdate.PhaseCommitted && ls.CurrentBuild == j.To:
				j.Phase = state.PhaseCommitted
			}
		case state.PhaseRollingBack:
			if err := self.Rollback(j.Reason); err != nil {
				return false, err
			}
			j.Phase = state.PhaseRolledBack
		}
		if j.Phase != before {
			j.At = time.Now().UTC()
			log.Warn("agent update recovered after a restart", "to", j.To, "phase", j.Phase, "reason", j.Reason)
			if err := save(ctx, st, dc, j); err != nil {
				return false, err
			}
		}
	}
	if ls, err = self.Load(); err != nil {
		return false, err
	}
	return ls.CurrentBuild != running, nil
}

// agentTarget checks an agent target's signed metadata against the job.
func agentTargetOK(a tuf.AgentTarget, j *job) error {
	if a.Build != j.To || a.Arch != runtime.GOARCH {
		return fmt.Errorf("%w: target %s is agent build %d for %s, desired state asks for build %d for %s", errRefused, j.Target, a.Build, a.Arch, j.To, runtime.GOARCH)
	}
	return nil
}
