package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/agent/outbox"
	"github.com/outpost-edge/outpost/agent/store"
)

// crashingOutbox is the real SQLite outbox that stops persisting anything
// after `left` commits, as a process killed at that point would: what was
// committed is on disk, nothing after it.
type crashingOutbox struct {
	*outbox.Outbox
	mu   sync.Mutex
	left int
}

func (c *crashingOutbox) dead() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.left <= 0 {
		return true
	}
	c.left--
	return false
}

func (c *crashingOutbox) crashed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.left <= 0
}

var errCrashed = errors.New("crashed")

func (c *crashingOutbox) AppendCheckpoint(ctx context.Context, items []outbox.Item, name string, state []byte) ([]uint64, error) {
	if c.dead() {
		return nil, errCrashed
	}
	return c.Outbox.AppendCheckpoint(ctx, items, name, state)
}

func (c *crashingOutbox) AppendCheckpointDelta(ctx context.Context, items []outbox.Item, cp outbox.CheckpointDelta) ([]uint64, error) {
	if c.dead() {
		return nil, errCrashed
	}
	return c.Outbox.AppendCheckpointDelta(ctx, items, cp)
}

func openOutbox(t *testing.T, path string) (*store.Store, *outbox.Outbox) {
	t.Helper()
	st, err := store.Open(context.Background(), path, store.SyncNormal)
	if err != nil {
		t.Fatal(err)
	}
	ob, err := outbox.New(context.Background(), st.DB(), 0)
	if err != nil {
		t.Fatal(err)
	}
	return st, ob
}

// runStore runs a pipeline on ob until done holds (or 10 s pass), then
// stops it.
func runStore(t *testing.T, cfg Config, ob Store, done func() bool) {
	t.Helper()
	p, err := New(context.Background(), cfg, ob, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- p.Run(ctx) }()
	for deadline := time.Now().Add(10 * time.Second); !done() && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-errc; err != nil && !errors.Is(err, errCrashed) {
		t.Fatal(err)
	}
}

// storedWindows reads the committed window records of a database.
func storedWindows(t *testing.T, st *store.Store) []map[string]any {
	t.Helper()
	rows, err := st.DB().Query(`SELECT data FROM outbox WHERE stream = 'windows' ORDER BY seq`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []map[string]any
	for rows.Next() {
		var data []byte
		if err := rows.Scan(&data); err != nil {
			t.Fatal(err)
		}
		var v map[string]any
		_ = json.Unmarshal(data, &v)
		out = append(out, v)
	}
	return out
}

// manyKeys writes seconds × keys readings: 10 s tumbling windows close (and
// their keys are purged) every ten seconds, and every 20 s the keys are
// new ones, so purged keys stay gone.
func manyKeys(t *testing.T, path string, from, to, keys int) {
	t.Helper()
	var b strings.Builder
	for s := from; s < to; s++ {
		for k := 0; k < keys; k++ {
			fmt.Fprintf(&b, `{"sensor":"s%d-%d","ts":"2026-11-25T12:%02d:%02dZ","v":%d}`+"\n", k, s/20, s/60, s%60, k)
		}
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(b.String())
	f.Close()
}

// checkExactlyOnce: every closed window of every key, once, with all its
// events.
func checkExactlyOnce(t *testing.T, wins []map[string]any, keys, windows int) {
	t.Helper()
	seen := map[string]bool{}
	for _, w := range wins {
		id := fmt.Sprint(w["key"], w["start"])
		if seen[id] {
			t.Fatalf("window %s emitted twice", id)
		}
		seen[id] = true
		if c := w["fields"].(map[string]any)["v"].(map[string]any)["count"]; c != 10.0 {
			t.Fatalf("window %s counted %v events, want 10", id, c)
		}
	}
	if len(seen) != keys*windows {
		t.Fatalf("%d windows, want %d", len(seen), keys*windows)
	}
}

// TestDeltaCheckpointCrashRestoresLastCommit: with the real SQLite outbox
// (delta checkpoints: key rows), a crash after any number of commits
// resumes exactly at the last one: every window once, with all events,
// although keys were purged and created again between commits.
func TestDeltaCheckpointCrashRestoresLastCommit(t *testing.T) {
	const keys, seconds = 30, 95 // windows [0,10) … [80,90) close
	for _, commits := range []int{1, 2, 4} {
		t.Run(fmt.Sprint("after-", commits), func(t *testing.T) {
			dir := t.TempDir()
			in := filepath.Join(dir, "in.jsonl")
			// The file grows while the pipeline runs, so commits fall
			// between its writes.
			manyKeys(t, in, 0, 1, keys)
			wrote := make(chan struct{})
			go func() {
				defer close(wrote)
				for s := 1; s < seconds; s++ {
					time.Sleep(15 * time.Millisecond)
					manyKeys(t, in, s, s+1, keys)
				}
			}()
			cfg := fileConfig(in)
			st, ob := openOutbox(t, filepath.Join(dir, "agent.db"))
			crash := &crashingOutbox{Outbox: ob, left: commits}
			runStore(t, cfg, crash, crash.crashed)
			st.Close()
			<-wrote
			if !crash.crashed() {
				t.Fatalf("the input ended before commit %d", commits)
			}
			st, ob = openOutbox(t, filepath.Join(dir, "agent.db"))
			defer st.Close()
			var rows int
			st.DB().QueryRow(`SELECT count(*) FROM checkpoint_keys`).Scan(&rows)
			t.Logf("%d key rows after %d commits", rows, commits)
			runStore(t, cfg, ob, func() bool { return len(storedWindows(t, st)) >= keys*9 })
			checkExactlyOnce(t, storedWindows(t, st), keys, 9)
		})
	}
}

// TestMigrateFromFullCheckpoint: a database from before delta checkpoints
// (no checkpoint_keys table, a full gob snapshot in the checkpoint row)
// resumes exactly, and its first commit rewrites the state as key rows,
// from which a later restart resumes exactly too.
func TestMigrateFromFullCheckpoint(t *testing.T) {
	const keys = 5
	dir := t.TempDir()
	in := filepath.Join(dir, "in.jsonl")
	manyKeys(t, in, 0, 35, keys)
	cfg := fileConfig(in)
	// The old pipeline: every commit a full snapshot.
	old := &memOutbox{}
	runUntil(t, cfg, old, func() bool { return len(old.byStream("windows")) >= keys*3 }, 150*time.Millisecond)
	var full checkpoint
	if err := json.Unmarshal(old.cp["pipeline/vib"], &full); err != nil || full.Format != 0 || full.Offset == 0 {
		t.Fatalf("old checkpoint %+v: %v", full, err)
	}
	// An old database: its schema, its checkpoint row, its records.
	path := filepath.Join(dir, "agent.db")
	st, err := store.Open(context.Background(), path, store.SyncNormal)
	if err != nil {
		t.Fatal(err)
	}
	db := st.DB()
	for _, q := range []string{
		`CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, stream TEXT NOT NULL, event_time INTEGER NOT NULL, data BLOB NOT NULL, epoch TEXT NOT NULL DEFAULT '')`,
		`CREATE TABLE outbox_floors (epoch TEXT NOT NULL, stream TEXT NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (epoch, stream))`,
		`CREATE TABLE checkpoints (name TEXT PRIMARY KEY, state BLOB NOT NULL)`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.Exec(`INSERT INTO checkpoints(name, state) VALUES('pipeline/vib', ?)`, old.cp["pipeline/vib"]); err != nil {
		t.Fatal(err)
	}
	for _, it := range old.items {
		db.Exec(`INSERT INTO outbox(stream, event_time, data) VALUES(?, ?, ?)`, it.Stream, it.EventTime.UnixNano(), []byte(it.Data))
	}
	st.Close()

	manyKeys(t, in, 35, 65, keys)
	st, ob := openOutbox(t, path) // migrates
	runStore(t, cfg, ob, func() bool { return len(storedWindows(t, st)) >= keys*6 })
	var cp checkpoint
	data, _ := ob.Checkpoint(context.Background(), "pipeline/vib")
	if err := json.Unmarshal(data, &cp); err != nil || cp.Format != formatDelta {
		t.Fatalf("checkpoint after the first commit: format %d, %v", cp.Format, err)
	}
	var rows int
	st.DB().QueryRow(`SELECT count(*) FROM checkpoint_keys WHERE name = 'pipeline/vib'`).Scan(&rows)
	if rows != keys {
		t.Fatalf("%d key rows, want %d", rows, keys)
	}
	st.Close()

	manyKeys(t, in, 65, 95, keys)
	st, ob = openOutbox(t, path)
	defer st.Close()
	runStore(t, cfg, ob, func() bool { return len(storedWindows(t, st)) >= keys*9 })
	checkExactlyOnce(t, storedWindows(t, st), keys, 9)
}
