package selfupdate

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLaunchCountsStartsAndRollsBackACrashLoop(t *testing.T) {
	s := Slots{Dir: t.TempDir(), Factory: 1}
	if bin, st, err := s.launch(); err != nil || bin != "" || st.CurrentBuild != 1 {
		t.Fatalf("fresh device: %q %+v %v, want the factory build", bin, st, err)
	}
	if err := s.Switch("a", 7, 2); err != nil {
		t.Fatal(err)
	}
	for start := 1; start <= 2; start++ {
		bin, st, err := s.launch()
		if err != nil || bin != filepath.Join(s.Dir, "a", Binary) || st.Boots != int64(start) {
			t.Fatalf("start %d: %q %+v %v", start, bin, st, err)
		}
	}
	bin, st, err := s.launch()
	if err != nil || bin != "" || st.Phase != PhaseRolledBack || st.CurrentBuild != 1 || !strings.Contains(st.Reason, "crash loop") {
		t.Fatalf("third start: %q %+v %v, want the factory build after a rollback", bin, st, err)
	}
	// Later starts run the previous build without counting.
	if bin, st, _ := s.launch(); bin != "" || st.Boots != 0 {
		t.Fatalf("after the rollback: %q %+v", bin, st)
	}
}

func TestSwitchCommitRollback(t *testing.T) {
	s := Slots{Dir: t.TempDir(), Factory: 1}
	s.Switch("a", 2, 3)
	s.Switch("a", 2, 3) // again after a restart: no change
	if st, _ := s.Load(); st.PreviousBuild != 1 || st.Previous != "" || st.Boots != 0 {
		t.Fatalf("after switch %+v", st)
	}
	s.launch()
	if err := s.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := s.Rollback("late"); err != nil { // nothing on probation: no-op
		t.Fatal(err)
	}
	if st, _ := s.Load(); st.CurrentBuild != 2 || st.Phase != PhaseCommitted {
		t.Fatalf("after commit %+v", st)
	}
	s.Switch("b", 3, 3)
	if err := s.Rollback("unhealthy"); err != nil {
		t.Fatal(err)
	}
	if st, _ := s.Load(); st.Current != "a" || st.CurrentBuild != 2 || st.Reason != "unhealthy" {
		t.Fatalf("after rollback %+v", st)
	}
}

func TestInstallUsesTheOtherSlotAndChecksTheBuild(t *testing.T) {
	s := Slots{Dir: t.TempDir(), Factory: 1}
	self, err := os.Executable() // an ELF for this machine
	if err != nil {
		t.Fatal(err)
	}
	slot, err := s.Install(self)
	if err != nil || slot != "a" {
		t.Fatalf("first install %q %v", slot, err)
	}
	s.Switch("a", 2, 1)
	if slot, _ := s.Install(self); slot != "b" {
		t.Fatalf("install while a runs went to %q", slot)
	}
	junk := filepath.Join(t.TempDir(), "junk")
	os.WriteFile(junk, []byte("#!/bin/sh\n"), 0o755)
	if _, err := s.Install(junk); !errors.Is(err, ErrBuild) {
		t.Fatalf("a script: %v, want ErrBuild", err)
	}
	// The test binary is no agent: the self-test says so.
	if err := s.SelfTest(context.Background(), "b", nil); !errors.Is(err, ErrBuild) {
		t.Fatalf("self-test of a non-agent: %v", err)
	}
}
