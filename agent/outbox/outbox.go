// Package outbox is the agent's durable queue of everything it sends
// upstream. A record is in the outbox (fsync'd, with its seq) before
// anything else happens to it, and leaves only when the hub acknowledges
// that it stored it (DESIGN §3.1–3.2).
package outbox

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/outpost-edge/outpost/sync/envelope"
	"github.com/outpost-edge/outpost/sync/topics"
)

// Item is one record to append; the outbox assigns its seq.
type Item struct {
	Stream    string
	EventTime time.Time
	Data      json.RawMessage
}

// Outbox is the queue over the agent database.
type Outbox struct {
	db     *sql.DB
	notify chan struct{}
	budget int64 // bytes of record data the outbox may hold; 0: unbounded
	mu     sync.Mutex
	bytes  int64 // record data held now, kept in step with every commit
	Stats  Stats
}

// Stats count what the byte budget evicted.
type Stats struct {
	EvictedRecords, EvictedBytes atomic.Int64
}

// EvictionOrder is the order in which streams lose their oldest records
// when the outbox is over its byte budget: telemetry first, events last.
var EvictionOrder = []string{"telemetry", "dead", "late", "drift", "windows", "inferences", "labels", "events"}

// AUTOINCREMENT makes seq strictly rising and never reused, even after the
// newest rows were acked and deleted: that is the per-device seq the whole
// pipeline deduplicates on.
const schema = `
CREATE TABLE IF NOT EXISTS outbox (
	seq        INTEGER PRIMARY KEY AUTOINCREMENT,
	stream     TEXT    NOT NULL,
	event_time INTEGER NOT NULL,
	data       BLOB    NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_stream_seq ON outbox(stream, seq);
CREATE TABLE IF NOT EXISTS outbox_acked (
	stream TEXT PRIMARY KEY,
	seq    INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoints (
	name  TEXT PRIMARY KEY,
	state BLOB NOT NULL
);`

// New migrates the schema on db. budget bounds the bytes of record data
// held (0: unbounded); past it, whole oldest records are evicted in
// EvictionOrder, counted, and reported by an `events` record.
func New(ctx context.Context, db *sql.DB, budget int64) (*Outbox, error) {
	if _, err := db.ExecContext(ctx, schema); err != nil {
		return nil, fmt.Errorf("outbox: migrate: %w", err)
	}
	o := &Outbox{db: db, notify: make(chan struct{}, 1), budget: budget}
	if _, b, err := o.Depth(ctx); err != nil {
		return nil, err
	} else {
		o.bytes = b
	}
	return o, nil
}

// Append stores items in one transaction and returns their seqs. When it
// returns nil the records survive a crash (and, with synchronous=FULL, a
// power loss).
func (o *Outbox) Append(ctx context.Context, items []Item) ([]uint64, error) {
	return o.AppendCheckpoint(ctx, items, "", nil)
}

// AppendCheckpoint stores items and, in the same transaction, the named
// checkpoint (a pipeline's source position and window state). After a
// crash the pipeline resumes exactly where its last stored records end:
// nothing is lost, and no result is produced twice.
func (o *Outbox) AppendCheckpoint(ctx context.Context, items []Item, name string, state []byte) ([]uint64, error) {
	o.mu.Lock() // one writer at a time keeps o.bytes exact
	defer o.mu.Unlock()
	tx, err := o.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("outbox: append: %w", err)
	}
	defer tx.Rollback()
	stmt, err := tx.PrepareContext(ctx, `INSERT INTO outbox(stream, event_time, data) VALUES(?, ?, ?) RETURNING seq`)
	if err != nil {
		return nil, fmt.Errorf("outbox: append: %w", err)
	}
	defer stmt.Close()
	seqs := make([]uint64, len(items))
	added := int64(0)
	for i, it := range items {
		if !slices.Contains(topics.Streams, it.Stream) {
			return nil, fmt.Errorf("outbox: %w: item %d has unknown stream %q", ErrInvalid, i, it.Stream)
		}
		if !json.Valid(it.Data) {
			return nil, fmt.Errorf("outbox: %w: item %d data is not JSON", ErrInvalid, i)
		}
		if err := stmt.QueryRowContext(ctx, it.Stream, it.EventTime.UnixNano(), []byte(it.Data)).Scan(&seqs[i]); err != nil {
			return nil, fmt.Errorf("outbox: append: %w", err)
		}
		added += int64(len(it.Data))
	}
	evicted, evictedBytes, eventBytes, err := o.evict(ctx, tx, o.bytes+added)
	if err != nil {
		return nil, err
	}
	if name != "" {
		if _, err := tx.ExecContext(ctx, `INSERT INTO checkpoints(name, state) VALUES(?, ?)
			ON CONFLICT(name) DO UPDATE SET state = excluded.state`, name, state); err != nil {
			return nil, fmt.Errorf("outbox: checkpoint %s: %w", name, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("outbox: append commit: %w", err)
	}
	o.bytes += added + eventBytes - evictedBytes
	o.Stats.EvictedRecords.Add(evicted)
	o.Stats.EvictedBytes.Add(evictedBytes)
	select {
	case o.notify <- struct{}{}:
	default:
	}
	return seqs, nil
}

// evict deletes the oldest records of the lowest-priority streams until the
// data fits the budget, and records what it did as an `events` record in
// the same transaction. held is the data size including this batch.
func (o *Outbox) evict(ctx context.Context, tx *sql.Tx, held int64) (records, bytes, eventBytes int64, err error) {
	if o.budget <= 0 || held <= o.budget {
		return 0, 0, 0, nil
	}
	// Room for the eviction event itself, so the budget holds after it.
	const eventReserve = 512
	perStream := map[string][2]int64{}
	for _, stream := range EvictionOrder {
		for held-bytes+eventReserve > o.budget {
			var seq, size int64
			err := tx.QueryRowContext(ctx, `SELECT seq, length(data) FROM outbox WHERE stream = ? ORDER BY seq LIMIT 1`, stream).Scan(&seq, &size)
			if errors.Is(err, sql.ErrNoRows) {
				break
			}
			if err != nil {
				return 0, 0, 0, fmt.Errorf("outbox: evict: %w", err)
			}
			if _, err := tx.ExecContext(ctx, `DELETE FROM outbox WHERE seq = ?`, seq); err != nil {
				return 0, 0, 0, fmt.Errorf("outbox: evict: %w", err)
			}
			records++
			bytes += size
			c := perStream[stream]
			perStream[stream] = [2]int64{c[0] + 1, c[1] + size}
		}
	}
	if records == 0 {
		return 0, 0, 0, nil
	}
	detail := map[string]any{}
	for s, c := range perStream {
		detail[s] = map[string]int64{"records": c[0], "bytes": c[1]}
	}
	data, _ := json.Marshal(map[string]any{"kind": "outbox_eviction", "budget_bytes": o.budget, "evicted_records": records,
		"evicted_bytes": bytes, "streams": detail})
	if _, err := tx.ExecContext(ctx, `INSERT INTO outbox(stream, event_time, data) VALUES('events', ?, ?)`, time.Now().UnixNano(), data); err != nil {
		return 0, 0, 0, fmt.Errorf("outbox: eviction event: %w", err)
	}
	return records, bytes, int64(len(data)), nil
}

// Notify fires (coalesced) after every Append.
func (o *Outbox) Notify() <-chan struct{} { return o.notify }

// Pending returns up to limit records of stream with seq above after, in
// seq order.
func (o *Outbox) Pending(ctx context.Context, stream string, after uint64, limit int) ([]envelope.Record, error) {
	rows, err := o.db.QueryContext(ctx,
		`SELECT seq, event_time, data FROM outbox WHERE stream = ? AND seq > ? ORDER BY seq LIMIT ?`, stream, after, limit)
	if err != nil {
		return nil, fmt.Errorf("outbox: pending: %w", err)
	}
	defer rows.Close()
	var out []envelope.Record
	for rows.Next() {
		var r envelope.Record
		var et int64
		var data []byte
		if err := rows.Scan(&r.Seq, &et, &data); err != nil {
			return nil, fmt.Errorf("outbox: pending: %w", err)
		}
		r.EventTime = time.Unix(0, et).UTC()
		r.Data = data
		out = append(out, r)
	}
	return out, rows.Err()
}

// Streams lists the streams that have unacked records.
func (o *Outbox) Streams(ctx context.Context) ([]string, error) {
	rows, err := o.db.QueryContext(ctx, `SELECT DISTINCT stream FROM outbox`)
	if err != nil {
		return nil, fmt.Errorf("outbox: streams: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, fmt.Errorf("outbox: streams: %w", err)
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

// Ack deletes stream's records up to seq and remembers seq as the floor.
// Acks are cumulative and may repeat; a lower one changes nothing.
func (o *Outbox) Ack(ctx context.Context, stream string, seq uint64) error {
	// Lock before taking the (single) connection, in the same order as
	// AppendCheckpoint, or the two deadlock.
	o.mu.Lock()
	defer o.mu.Unlock()
	tx, err := o.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("outbox: ack: %w", err)
	}
	defer tx.Rollback()
	var freed int64
	if err := tx.QueryRowContext(ctx, `SELECT coalesce(sum(length(data)), 0) FROM outbox WHERE stream = ? AND seq <= ?`, stream, seq).Scan(&freed); err != nil {
		return fmt.Errorf("outbox: ack: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM outbox WHERE stream = ? AND seq <= ?`, stream, seq); err != nil {
		return fmt.Errorf("outbox: ack: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO outbox_acked(stream, seq) VALUES(?, ?)
		ON CONFLICT(stream) DO UPDATE SET seq = max(seq, excluded.seq)`, stream, seq); err != nil {
		return fmt.Errorf("outbox: ack: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("outbox: ack commit: %w", err)
	}
	o.bytes -= freed
	return nil
}

// Floors returns, per stream, the highest seq the hub has acknowledged.
func (o *Outbox) Floors(ctx context.Context) (map[string]uint64, error) {
	rows, err := o.db.QueryContext(ctx, `SELECT stream, seq FROM outbox_acked`)
	if err != nil {
		return nil, fmt.Errorf("outbox: floors: %w", err)
	}
	defer rows.Close()
	out := map[string]uint64{}
	for rows.Next() {
		var s string
		var n uint64
		if err := rows.Scan(&s, &n); err != nil {
			return nil, fmt.Errorf("outbox: floors: %w", err)
		}
		out[s] = n
	}
	return out, rows.Err()
}

// Depth is the number of unacked records and their data bytes.
func (o *Outbox) Depth(ctx context.Context) (records, bytes int64, err error) {
	err = o.db.QueryRowContext(ctx, `SELECT count(*), coalesce(sum(length(data)), 0) FROM outbox`).Scan(&records, &bytes)
	if err != nil {
		return 0, 0, fmt.Errorf("outbox: depth: %w", err)
	}
	return records, bytes, nil
}

// Checkpoint returns the named checkpoint, or nil if there is none.
func (o *Outbox) Checkpoint(ctx context.Context, name string) ([]byte, error) {
	var state []byte
	err := o.db.QueryRowContext(ctx, `SELECT state FROM checkpoints WHERE name = ?`, name).Scan(&state)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("outbox: checkpoint %s: %w", name, err)
	}
	return state, nil
}
