package store

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
)

func TestBootCounterSurvivesReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "agent.db")
	for want := int64(1); want <= 3; want++ {
		s, err := Open(ctx, path, SyncFull)
		if err != nil {
			t.Fatal(err)
		}
		got, err := s.NextBoot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Fatalf("boot = %d, want %d", got, want)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestPragmas(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		mode, want string
	}{
		{SyncFull, "2"},
		{SyncNormal, "1"},
	}
	for _, tt := range tests {
		s, err := Open(ctx, filepath.Join(t.TempDir(), "a.db"), tt.mode)
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := s.Pragma(ctx, "synchronous"); got != tt.want {
			t.Errorf("%s: synchronous = %s, want %s", tt.mode, got, tt.want)
		}
		if got, _ := s.Pragma(ctx, "journal_mode"); got != "wal" {
			t.Errorf("%s: journal_mode = %s, want wal", tt.mode, got)
		}
		s.Close()
	}
}

func TestRejectsUnknownSynchronous(t *testing.T) {
	_, err := Open(context.Background(), filepath.Join(t.TempDir(), "a.db"), "off")
	if !errors.Is(err, ErrConfig) {
		t.Fatalf("err = %v, want ErrConfig", err)
	}
}
