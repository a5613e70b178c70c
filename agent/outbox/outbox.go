// Package outbox is the agent's durable queue of everything it sends
// upstream. A record is in the outbox (fsync'd, with its seq) before
// anything else happens to it, and leaves only when the hub acknowledges
// that it stored it (DESIGN §3.1–3.2).
package outbox

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
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
	epoch  string // this run's epoch: every record appended now carries it
	notify chan struct{}
	budget int64 // bytes of record data the outbox may hold; 0: unbounded
	mu     sync.Mutex
	bytes  int64 // record data held now, kept in step with every commit
	// logged is each delta checkpoint's log and key rows, in bytes (see
	// delta.go), counted at its first commit; under mu.
	logged map[string]logSize
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
// newest rows were acked and deleted. Each row keeps the epoch of the run
// that appended it: (epoch, seq) is what the hub deduplicates on, so a
// restored copy of this database, or a new board under the same device id,
// never has its new records taken for old ones.
const schema = `
CREATE TABLE IF NOT EXISTS outbox (
	seq        INTEGER PRIMARY KEY AUTOINCREMENT,
	stream     TEXT    NOT NULL,
	event_time INTEGER NOT NULL,
	data       BLOB    NOT NULL,
	epoch      TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS outbox_stream_seq ON outbox(stream, seq);
CREATE TABLE IF NOT EXISTS outbox_floors (
	epoch  TEXT    NOT NULL,
	stream TEXT    NOT NULL,
	seq    INTEGER NOT NULL,
	PRIMARY KEY (epoch, stream)
);
CREATE TABLE IF NOT EXISTS checkpoints (
	name  TEXT PRIMARY KEY,
	state BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoint_keys (
	name  TEXT NOT NULL,
	key   TEXT NOT NULL,
	state BLOB NOT NULL,
	PRIMARY KEY (name, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoint_deltas (
	id   INTEGER PRIMARY KEY,
	name TEXT NOT NULL,
	data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS checkpoint_deltas_name ON checkpoint_deltas(name, id);`

// migrate brings a database from before epochs up to date: its rows and
// floors belong to epoch "".
func migrate(ctx context.Context, tx *sql.Tx) error {
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM pragma_table_info('outbox') WHERE name = 'epoch'`).Scan(&n); err != nil {
		return err
	}
	if n == 0 {
		if _, err := tx.ExecContext(ctx, `ALTER TABLE outbox ADD COLUMN epoch TEXT NOT NULL DEFAULT ''`); err != nil {
			return err
		}
	}
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'outbox_acked'`).Scan(&n); err != nil {
		return err
	}
	if n > 0 {
		if _, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO outbox_floors(epoch, stream, seq) SELECT '', stream, seq FROM outbox_acked`); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DROP TABLE outbox_acked`); err != nil {
			return err
		}
	}
	return nil
}

// newEpoch draws this run's epoch: 64 random bits, so that no two runs,
// on any board, share one.
func newEpoch() (string, error) {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("outbox: epoch: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// New migrates the schema on db and starts a new epoch. budget bounds the
// bytes of record data held (0: unbounded); past it, whole oldest records
// are evicted in EvictionOrder, counted, and reported by an `events` record.
func New(ctx context.Context, db *sql.DB, budget int64) (*Outbox, error) {
	epoch, err := newEpoch()
	if err != nil {
		return nil, err
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("outbox: migrate: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, schema); err != nil {
		return nil, fmt.Errorf("outbox: migrate: %w", err)
	}
	if err := migrate(ctx, tx); err != nil {
		return nil, fmt.Errorf("outbox: migrate: %w", err)
	}
	// Earlier epochs never get new records: the floor of one with no
	// records left in a stream is never needed again.
	if _, err := tx.ExecContext(ctx, `DELETE FROM outbox_floors WHERE NOT EXISTS
		(SELECT 1 FROM outbox WHERE outbox.epoch = outbox_floors.epoch AND outbox.stream = outbox_floors.stream)`); err != nil {
		return nil, fmt.Errorf("outbox: prune floors: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("outbox: migrate: %w", err)
	}
	o := &Outbox{db: db, epoch: epoch, notify: make(chan struct{}, 1), budget: budget, logged: map[string]logSize{}}
	if _, b, err := o.Depth(ctx); err != nil {
		return nil, err
	} else {
		o.bytes = b
	}
	return o, nil
}

// Epoch is this run's epoch, carried by every record appended now.
func (o *Outbox) Epoch() string { return o.epoch }

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
	if name == "" {
		return o.appendTx(ctx, items, nil)
	}
	return o.appendTx(ctx, items, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO checkpoints(name, state) VALUES(?, ?)
			ON CONFLICT(name) DO UPDATE SET state = excluded.state`, name, state); err != nil {
			return fmt.Errorf("outbox: checkpoint %s: %w", name, err)
		}
		return nil
	})
}

// KeyState is one key's row of a delta checkpoint; a nil State deletes
// the row.
type KeyState struct {
	Key   string
	State []byte
}

// appendTx stores items and runs checkpoint, if any, in the same
// transaction.
func (o *Outbox) appendTx(ctx context.Context, items []Item, checkpoint func(*sql.Tx) error) ([]uint64, error) {
	o.mu.Lock() // one writer at a time keeps o.bytes exact
	defer o.mu.Unlock()
	tx, err := o.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("outbox: append: %w", err)
	}
	defer tx.Rollback()
	stmt, err := tx.PrepareContext(ctx, `INSERT INTO outbox(stream, event_time, data, epoch) VALUES(?, ?, ?, ?) RETURNING seq`)
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
		if err := stmt.QueryRowContext(ctx, it.Stream, it.EventTime.UnixNano(), []byte(it.Data), o.epoch).Scan(&seqs[i]); err != nil {
			return nil, fmt.Errorf("outbox: append: %w", err)
		}
		added += int64(len(it.Data))
	}
	evicted, evictedBytes, eventBytes, err := o.evict(ctx, tx, o.bytes+added)
	if err != nil {
		return nil, err
	}
	if checkpoint != nil {
		if err := checkpoint(tx); err != nil {
			return nil, err
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
	if _, err := tx.ExecContext(ctx, `INSERT INTO outbox(stream, event_time, data, epoch) VALUES('events', ?, ?, ?)`, time.Now().UnixNano(), data, o.epoch); err != nil {
		return 0, 0, 0, fmt.Errorf("outbox: eviction event: %w", err)
	}
	return records, bytes, int64(len(data)), nil
}

// Notify fires (coalesced) after every Append.
func (o *Outbox) Notify() <-chan struct{} { return o.notify }

// Batch is a run of one stream's records that share an epoch.
type Batch struct {
	Epoch   string
	Records []envelope.Record
}

// Next returns up to limit records of stream with seq above after, in seq
// order, stopping where the epoch changes: one envelope holds one epoch.
func (o *Outbox) Next(ctx context.Context, stream string, after uint64, limit int) (Batch, error) {
	rows, err := o.db.QueryContext(ctx,
		`SELECT seq, epoch, event_time, data FROM outbox WHERE stream = ? AND seq > ? ORDER BY seq LIMIT ?`, stream, after, limit)
	if err != nil {
		return Batch{}, fmt.Errorf("outbox: next: %w", err)
	}
	defer rows.Close()
	var b Batch
	for rows.Next() {
		var r envelope.Record
		var epoch string
		var et int64
		var data []byte
		if err := rows.Scan(&r.Seq, &epoch, &et, &data); err != nil {
			return Batch{}, fmt.Errorf("outbox: next: %w", err)
		}
		if len(b.Records) == 0 {
			b.Epoch = epoch
		} else if epoch != b.Epoch {
			break
		}
		r.EventTime = time.Unix(0, et).UTC()
		r.Data = data
		b.Records = append(b.Records, r)
	}
	return b, rows.Err()
}

// Pending returns up to limit records of stream with seq above after, in
// seq order, whatever their epoch.
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

// Ack deletes the epoch's records of stream up to seq and remembers seq as
// the floor. Acks are cumulative and may repeat; a lower one changes
// nothing.
func (o *Outbox) Ack(ctx context.Context, epoch, stream string, seq uint64) error {
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
	if err := tx.QueryRowContext(ctx, `SELECT coalesce(sum(length(data)), 0) FROM outbox WHERE stream = ? AND seq <= ? AND epoch = ?`, stream, seq, epoch).Scan(&freed); err != nil {
		return fmt.Errorf("outbox: ack: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM outbox WHERE stream = ? AND seq <= ? AND epoch = ?`, stream, seq, epoch); err != nil {
		return fmt.Errorf("outbox: ack: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO outbox_floors(epoch, stream, seq) VALUES(?, ?, ?)
		ON CONFLICT(epoch, stream) DO UPDATE SET seq = max(seq, excluded.seq)`, epoch, stream, seq); err != nil {
		return fmt.Errorf("outbox: ack: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("outbox: ack commit: %w", err)
	}
	o.bytes -= freed
	return nil
}

// Key names one epoch's stream.
type Key struct{ Epoch, Stream string }

// Floors returns, per epoch and stream, the highest seq the hub has
// acknowledged.
func (o *Outbox) Floors(ctx context.Context) (map[Key]uint64, error) {
	rows, err := o.db.QueryContext(ctx, `SELECT epoch, stream, seq FROM outbox_floors`)
	if err != nil {
		return nil, fmt.Errorf("outbox: floors: %w", err)
	}
	defer rows.Close()
	out := map[Key]uint64{}
	for rows.Next() {
		var k Key
		var n uint64
		if err := rows.Scan(&k.Epoch, &k.Stream, &n); err != nil {
			return nil, fmt.Errorf("outbox: floors: %w", err)
		}
		out[k] = n
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
