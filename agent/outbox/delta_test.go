package outbox

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"
)

// TestDeltaCheckpointMatchesAModel commits random deltas (upserts,
// deletes, keys deleted and created again, now and then a full
// checkpoint) and checks after each commit, and after reopening the
// database, that CheckpointKeys is exactly what a map of the same writes
// holds, with folds both small and never.
func TestDeltaCheckpointMatchesAModel(t *testing.T) {
	for _, fb := range []int64{1 << 10, 1 << 40} {
		t.Run(fmt.Sprintf("fold=%d", fb), func(t *testing.T) {
			old := foldBytes
			foldBytes = fb
			defer func() { foldBytes = old }()
			ctx := context.Background()
			path := filepath.Join(t.TempDir(), "a.db")
			o, closeDB := open(t, path)
			model := map[string]string{}
			check := func(o *Outbox, when string) {
				t.Helper()
				got, err := o.CheckpointKeys(ctx, "p")
				if err != nil {
					t.Fatal(err)
				}
				if len(got) != len(model) {
					t.Fatalf("%s: %d keys, want %d", when, len(got), len(model))
				}
				for _, k := range got {
					if want, ok := model[k.Key]; !ok || want != string(k.State) {
						t.Fatalf("%s: key %s = %q, want %q (held: %v)", when, k.Key, k.State, want, ok)
					}
				}
			}
			rng := rand.New(rand.NewPCG(1, 2))
			sinceFull := 0 // log rows since the last full checkpoint
			for commit := range 300 {
				full := commit%97 == 0
				var keys []KeyState
				for range rng.IntN(40) {
					k := fmt.Sprintf("k%d", rng.IntN(200))
					if !full && rng.IntN(4) == 0 {
						keys = append(keys, KeyState{Key: k}) // deleted
						continue
					}
					st := []byte(fmt.Sprintf("s%d-%d", commit, rng.IntN(1000)))
					if rng.IntN(20) == 0 {
						st = []byte{} // empty, not deleted
					}
					keys = append(keys, KeyState{Key: k, State: st})
				}
				if _, err := o.AppendCheckpointDelta(ctx, nil, CheckpointDelta{Name: "p", State: []byte("{}"), Full: full, Keys: keys}); err != nil {
					t.Fatal(err)
				}
				if full {
					clear(model)
					sinceFull = 0
				} else if len(keys) > 0 {
					sinceFull++
				}
				for _, k := range keys {
					if k.State == nil {
						delete(model, k.Key)
					} else {
						model[k.Key] = string(k.State)
					}
				}
				check(o, fmt.Sprintf("commit %d", commit))
			}
			// Another checkpoint name is never mixed in.
			if _, err := o.AppendCheckpointDelta(ctx, nil, CheckpointDelta{Name: "q", State: []byte("{}"), Keys: []KeyState{{Key: "k1", State: []byte("other")}}}); err != nil {
				t.Fatal(err)
			}
			check(o, "after another name")
			closeDB()
			o, closeDB = open(t, path)
			defer closeDB()
			check(o, "reopened")
			var logged int
			if err := o.db.QueryRowContext(ctx, `SELECT count(*) FROM checkpoint_deltas WHERE name = 'p'`).Scan(&logged); err != nil {
				t.Fatal(err)
			}
			// Without folds every commit since the last full one is a log
			// row; folding at 1 KiB (about 20 commits) leaves fewer.
			if fb == 1<<40 && logged != sinceFull {
				t.Fatalf("%d log rows, want %d", logged, sinceFull)
			}
			if fb == 1<<10 && logged >= sinceFull {
				t.Fatalf("%d log rows of %d commits: never folded", logged, sinceFull)
			}
		})
	}
}

func TestCorruptDeltaRowIsAnError(t *testing.T) {
	ctx := context.Background()
	o, closeDB := open(t, filepath.Join(t.TempDir(), "a.db"))
	defer closeDB()
	if _, err := o.db.ExecContext(ctx, `INSERT INTO checkpoint_deltas(name, data) VALUES('p', x'05616263')`); err != nil {
		t.Fatal(err)
	}
	if _, err := o.CheckpointKeys(ctx, "p"); err == nil {
		t.Fatal("a truncated log row restored without error")
	}
}
