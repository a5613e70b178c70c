package outbox

import (
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
)

// A delta checkpoint is kept in two parts: key rows (checkpoint_keys, one
// per key) as of the last fold, and a log of what changed since
// (checkpoint_deltas, one row per commit holding every changed key). A
// commit appends one log row, whatever the number of keys it changed:
// upserting each key's row cost about 6 µs a key, which at 1,000 sensor
// keys was a fifth of the agent's CPU per event. Once the log holds
// foldFactor times the key rows' size (and at least foldBytes), a commit
// folds it into the key rows, writing each key once for many commits. A
// restore reads the key rows and replays the log: at most about five
// times the state it restores.

// foldBytes is the least log of one checkpoint that is folded (a var:
// tests fold often).
var foldBytes int64 = 4 << 20

const foldFactor = 4

// CheckpointDelta is a checkpoint written as what changed: the named
// checkpoint row (State) is replaced, and only the listed keys change.
// Full first drops every key of the name.
type CheckpointDelta struct {
	Name  string
	State []byte
	Full  bool
	Keys  []KeyState
}

// AppendCheckpointDelta stores items and, in the same transaction, a delta
// checkpoint: its cost is O(changed keys), whatever the number held.
func (o *Outbox) AppendCheckpointDelta(ctx context.Context, items []Item, cp CheckpointDelta) ([]uint64, error) {
	return o.appendTx(ctx, items, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO checkpoints(name, state) VALUES(?, ?)
			ON CONFLICT(name) DO UPDATE SET state = excluded.state`, cp.Name, cp.State); err != nil {
			return fmt.Errorf("outbox: checkpoint %s: %w", cp.Name, err)
		}
		if cp.Full {
			for _, q := range []string{`DELETE FROM checkpoint_keys WHERE name = ?`, `DELETE FROM checkpoint_deltas WHERE name = ?`} {
				if _, err := tx.ExecContext(ctx, q, cp.Name); err != nil {
					return fmt.Errorf("outbox: checkpoint %s: %w", cp.Name, err)
				}
			}
			var base int64
			for _, k := range cp.Keys {
				if k.State != nil {
					base += int64(len(k.Key) + len(k.State))
				}
			}
			o.logged[cp.Name] = logSize{base: base}
			return writeKeys(ctx, tx, cp.Name, cp.Keys, true)
		}
		if len(cp.Keys) == 0 {
			return nil
		}
		lg, ok := o.logged[cp.Name]
		if !ok {
			if err := tx.QueryRowContext(ctx, `SELECT coalesce(sum(length(data)), 0) FROM checkpoint_deltas WHERE name = ?`, cp.Name).Scan(&lg.log); err != nil {
				return fmt.Errorf("outbox: checkpoint %s: %w", cp.Name, err)
			}
			if err := tx.QueryRowContext(ctx, `SELECT coalesce(sum(length(key) + length(state)), 0) FROM checkpoint_keys WHERE name = ?`, cp.Name).Scan(&lg.base); err != nil {
				return fmt.Errorf("outbox: checkpoint %s: %w", cp.Name, err)
			}
		}
		data := encodeDelta(cp.Keys)
		if _, err := tx.ExecContext(ctx, `INSERT INTO checkpoint_deltas(name, data) VALUES(?, ?)`, cp.Name, data); err != nil {
			return fmt.Errorf("outbox: checkpoint %s: %w", cp.Name, err)
		}
		// Counted before the commit: a rolled-back one only folds a little
		// early.
		lg.log += int64(len(data))
		if lg.log < max(foldBytes, foldFactor*lg.base) {
			o.logged[cp.Name] = lg
			return nil
		}
		base, err := fold(ctx, tx, cp.Name)
		if err != nil {
			return err
		}
		o.logged[cp.Name] = logSize{base: base}
		return nil
	})
}

// logSize is what one checkpoint holds: its log since the last fold and
// its key rows, in bytes.
type logSize struct{ log, base int64 }

// fold writes the log into the key rows, each changed key once, and
// empties it; it returns the key rows' size.
func fold(ctx context.Context, tx *sql.Tx, name string) (base int64, err error) {
	latest, order, err := replay(ctx, tx, name, nil, nil)
	if err != nil {
		return 0, err
	}
	keys := make([]KeyState, 0, len(order))
	for _, k := range order {
		keys = append(keys, KeyState{Key: k, State: latest[k]})
	}
	if err := writeKeys(ctx, tx, name, keys, false); err != nil {
		return 0, err
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM checkpoint_deltas WHERE name = ?`, name); err != nil {
		return 0, fmt.Errorf("outbox: checkpoint %s: fold: %w", name, err)
	}
	if err := tx.QueryRowContext(ctx, `SELECT coalesce(sum(length(key) + length(state)), 0) FROM checkpoint_keys WHERE name = ?`, name).Scan(&base); err != nil {
		return 0, fmt.Errorf("outbox: checkpoint %s: fold: %w", name, err)
	}
	return base, nil
}

// writeKeys upserts or deletes key rows; after a drop (full) there is
// nothing to delete.
func writeKeys(ctx context.Context, tx *sql.Tx, name string, keys []KeyState, full bool) error {
	if len(keys) == 0 {
		return nil
	}
	up, err := tx.PrepareContext(ctx, `INSERT INTO checkpoint_keys(name, key, state) VALUES(?, ?, ?)
		ON CONFLICT(name, key) DO UPDATE SET state = excluded.state`)
	if err != nil {
		return fmt.Errorf("outbox: checkpoint %s: %w", name, err)
	}
	defer up.Close()
	var del *sql.Stmt
	for _, k := range keys {
		if k.State != nil {
			if _, err := up.ExecContext(ctx, name, k.Key, k.State); err != nil {
				return fmt.Errorf("outbox: checkpoint %s key %q: %w", name, k.Key, err)
			}
			continue
		}
		if full {
			continue // gone already
		}
		if del == nil {
			if del, err = tx.PrepareContext(ctx, `DELETE FROM checkpoint_keys WHERE name = ? AND key = ?`); err != nil {
				return fmt.Errorf("outbox: checkpoint %s: %w", name, err)
			}
			defer del.Close()
		}
		if _, err := del.ExecContext(ctx, name, k.Key); err != nil {
			return fmt.Errorf("outbox: checkpoint %s key %q: %w", name, k.Key, err)
		}
	}
	return nil
}

// querier is what replay reads through: the database or a transaction.
type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// replay applies the log of name, in commit order, to latest (key → state,
// nil for deleted), appending keys it meets for the first time to order.
func replay(ctx context.Context, q querier, name string, latest map[string][]byte, order []string) (map[string][]byte, []string, error) {
	if latest == nil {
		latest = map[string][]byte{}
	}
	rows, err := q.QueryContext(ctx, `SELECT id, data FROM checkpoint_deltas WHERE name = ? ORDER BY id`, name)
	if err != nil {
		return nil, nil, fmt.Errorf("outbox: checkpoint %s log: %w", name, err)
	}
	defer rows.Close()
	for rows.Next() {
		var id int64
		var data []byte
		if err := rows.Scan(&id, &data); err != nil {
			return nil, nil, fmt.Errorf("outbox: checkpoint %s log: %w", name, err)
		}
		keys, err := decodeDelta(data)
		if err != nil {
			return nil, nil, fmt.Errorf("outbox: checkpoint %s log row %d: %w", name, id, err)
		}
		for _, k := range keys {
			if _, seen := latest[k.Key]; !seen {
				order = append(order, k.Key)
			}
			latest[k.Key] = k.State
		}
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("outbox: checkpoint %s log: %w", name, err)
	}
	return latest, order, nil
}

// CheckpointKeys returns every key of the named delta checkpoint: the key
// rows with the log replayed over them.
func (o *Outbox) CheckpointKeys(ctx context.Context, name string) ([]KeyState, error) {
	tx, err := o.db.BeginTx(ctx, nil) // one snapshot of rows and log
	if err != nil {
		return nil, fmt.Errorf("outbox: checkpoint %s keys: %w", name, err)
	}
	defer tx.Rollback()
	rows, err := tx.QueryContext(ctx, `SELECT key, state FROM checkpoint_keys WHERE name = ?`, name)
	if err != nil {
		return nil, fmt.Errorf("outbox: checkpoint %s keys: %w", name, err)
	}
	latest := map[string][]byte{}
	var order []string
	for rows.Next() {
		var k KeyState
		if err := rows.Scan(&k.Key, &k.State); err != nil {
			rows.Close()
			return nil, fmt.Errorf("outbox: checkpoint %s keys: %w", name, err)
		}
		if k.State == nil {
			k.State = []byte{}
		}
		latest[k.Key] = k.State
		order = append(order, k.Key)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("outbox: checkpoint %s keys: %w", name, err)
	}
	if latest, order, err = replay(ctx, tx, name, latest, order); err != nil {
		return nil, err
	}
	out := make([]KeyState, 0, len(order))
	for _, k := range order {
		if st := latest[k]; st != nil {
			out = append(out, KeyState{Key: k, State: st})
		}
	}
	return out, nil
}

// encodeDelta writes keys as a log row: per key the key's length and
// bytes, then 0 for a deleted key or 1 + the state's length and bytes.
func encodeDelta(keys []KeyState) []byte {
	n := 0
	for _, k := range keys {
		n += 2*binary.MaxVarintLen32 + len(k.Key) + len(k.State)
	}
	b := make([]byte, 0, n)
	for _, k := range keys {
		b = binary.AppendUvarint(b, uint64(len(k.Key)))
		b = append(b, k.Key...)
		if k.State == nil {
			b = append(b, 0)
			continue
		}
		b = binary.AppendUvarint(b, uint64(len(k.State))+1)
		b = append(b, k.State...)
	}
	return b
}

var errBadDelta = errors.New("corrupt delta row")

func decodeDelta(b []byte) ([]KeyState, error) {
	var out []KeyState
	for len(b) > 0 {
		n, w := binary.Uvarint(b)
		if w <= 0 || n > uint64(len(b)-w) {
			return nil, errBadDelta
		}
		key := b[w : w+int(n)]
		b = b[w+int(n):]
		n, w = binary.Uvarint(b)
		if w <= 0 {
			return nil, errBadDelta
		}
		b = b[w:]
		if n == 0 {
			out = append(out, KeyState{Key: string(key)})
			continue
		}
		if n-1 > uint64(len(b)) {
			return nil, errBadDelta
		}
		st := make([]byte, n-1)
		copy(st, b[:n-1])
		b = b[n-1:]
		out = append(out, KeyState{Key: string(key), State: st})
	}
	return out, nil
}
