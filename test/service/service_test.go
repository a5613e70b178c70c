package service

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestExitBeforeReadyReportsLog(t *testing.T) {
	_, err := Start(context.Background(), Spec{
		Name:    "dies",
		Path:    "/bin/sh",
		Args:    []string{"-c", "echo cannot bind port; exit 3"},
		LogPath: filepath.Join(t.TempDir(), "dies.log"),
		Ready:   func(context.Context) error { return errors.New("not yet") },
		Timeout: 10 * time.Second,
	})
	if !errors.Is(err, ErrExited) {
		t.Fatalf("err = %v, want ErrExited", err)
	}
	if !strings.Contains(err.Error(), "cannot bind port") {
		t.Fatalf("error lacks the service log: %v", err)
	}
}

func TestNeverReadyTimesOutAndStops(t *testing.T) {
	_, err := Start(context.Background(), Spec{
		Name:    "silent",
		Path:    "/bin/sleep",
		Args:    []string{"60"},
		LogPath: filepath.Join(t.TempDir(), "silent.log"),
		Ready:   func(context.Context) error { return errors.New("no answer") },
		Timeout: 500 * time.Millisecond,
	})
	if !errors.Is(err, ErrNotReady) {
		t.Fatalf("err = %v, want ErrNotReady", err)
	}
}

func TestReadyThenStop(t *testing.T) {
	p, err := Start(context.Background(), Spec{
		Name:    "sleeper",
		Path:    "/bin/sleep",
		Args:    []string{"60"},
		LogPath: filepath.Join(t.TempDir(), "sleeper.log"),
		Ready:   func(context.Context) error { return nil },
		Timeout: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	p.Stop()
	select {
	case <-p.done:
	default:
		t.Fatal("process still running after Stop")
	}
}
