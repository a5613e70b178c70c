// Package store is the agent's SQLite database: device metadata now, the
// outbox, window checkpoints and update state as they arrive. One file, so
// that a single fsync'd transaction can cover several of them.
package store

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"

	_ "github.com/mattn/go-sqlite3" // the cgo driver, so builds must enable cgo
)

// Synchronous modes the agent accepts (DESIGN §3.1).
const (
	SyncFull   = "full"   // every commit reaches the disk: no loss on power failure
	SyncNormal = "normal" // WAL + NORMAL: the last commits may be lost on power failure
)

// Store is an open agent database.
type Store struct {
	db *sql.DB
}

// Open opens (creating if needed) the database at path in WAL mode.
func Open(ctx context.Context, path, synchronous string) (*Store, error) {
	if synchronous != SyncFull && synchronous != SyncNormal {
		return nil, fmt.Errorf("store: %w: synchronous %q", ErrConfig, synchronous)
	}
	q := url.Values{}
	q.Set("_journal_mode", "WAL")
	q.Set("_synchronous", synchronous)
	q.Set("_busy_timeout", "5000")
	q.Set("_txlock", "immediate")
	db, err := sql.Open("sqlite3", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	// One writer connection: SQLite serialises writers anyway, and a single
	// connection keeps the pragmas above in force for every statement.
	db.SetMaxOpenConns(1)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)`); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: migrate %s: %w", path, err)
	}
	return &Store{db: db}, nil
}

// NextBoot increments and returns the persisted boot counter. The update
// state machine reads it to catch crash loops.
func (s *Store) NextBoot(ctx context.Context) (int64, error) {
	var n int64
	err := s.db.QueryRowContext(ctx,
		`INSERT INTO meta(key, value) VALUES('boot', 1)
		 ON CONFLICT(key) DO UPDATE SET value = value + 1
		 RETURNING value`).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("store: boot counter: %w", err)
	}
	return n, nil
}

// Pragma reads one PRAGMA value, for tests and diagnostics.
func (s *Store) Pragma(ctx context.Context, name string) (string, error) {
	var v string
	if err := s.db.QueryRowContext(ctx, "PRAGMA "+name).Scan(&v); err != nil {
		return "", fmt.Errorf("store: pragma %s: %w", name, err)
	}
	return v, nil
}

// DB is the shared handle the outbox, checkpoints and update state use, so
// one transaction can span them.
func (s *Store) DB() *sql.DB { return s.db }

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }
