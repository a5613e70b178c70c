package pipeline

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/agent/outbox"
	"github.com/outpost-edge/outpost/agent/store"
	"github.com/outpost-edge/outpost/agent/window"
)

// BenchmarkCheckpoint: one commit of window state into the SQLite outbox
// (synchronous=normal, so the figure is the encoding and SQLite work, not
// the disk) after a share of the keys was touched, the old way (a gob
// snapshot of every key in the checkpoint row) beside the delta way (key
// rows for the touched keys only). Touching the keys is not timed.
//
//	go test -run '^$' -bench Checkpoint ./agent/pipeline/
func BenchmarkCheckpoint(b *testing.B) {
	for _, keys := range []int{1000, 10000} {
		for _, pct := range []int{1, 10} {
			for _, mode := range []string{"full", "delta"} {
				b.Run(fmt.Sprintf("keys=%d/touched=%d%%/%s", keys, pct, mode), func(b *testing.B) {
					benchCheckpoint(b, keys, keys*pct/100, mode == "delta")
				})
			}
		}
	}
}

func benchCheckpoint(b *testing.B, keys, touched int, delta bool) {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "ckpt-bench") // b.TempDir's name holds '%', which SQLite URIs refuse
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)
	st, err := store.Open(ctx, filepath.Join(dir, "agent.db"), store.SyncNormal)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	ob, err := outbox.New(ctx, st.DB(), 0)
	if err != nil {
		b.Fatal(err)
	}
	op, err := window.New(window.Spec{Kind: window.Tumbling, Size: time.Hour, Fields: []string{"a", "b", "c"}, Watermark: window.Bounded})
	if err != nil {
		b.Fatal(err)
	}
	t0 := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	names := make([]string, keys)
	for k := range names {
		names[k] = fmt.Sprint("sensor-", k)
	}
	vals := []float64{1, 2, 3}
	touch := func(from, n int) {
		for i := 0; i < n; i++ {
			op.Process(window.Event{Key: names[(from+i)%keys], Time: t0.Add(time.Duration(from+i) * time.Millisecond), Values: vals}, t0, nil)
		}
	}
	var rows []outbox.KeyState
	var written int64
	commit := func() {
		if !delta {
			snap, err := op.Snapshot()
			if err != nil {
				b.Fatal(err)
			}
			state, _ := json.Marshal(checkpoint{Offset: 1, Window: snap})
			written += int64(len(state))
			if _, err := ob.AppendCheckpoint(ctx, nil, "pipeline/bench", state); err != nil {
				b.Fatal(err)
			}
			return
		}
		d := op.Delta()
		state, _ := json.Marshal(checkpoint{Offset: 1, Window: d.Global, Format: formatDelta})
		written += int64(len(state))
		rows = rows[:0]
		for _, k := range d.Keys {
			rows = append(rows, outbox.KeyState{Key: k.Key, State: k.State})
			written += int64(len(k.Key) + len(k.State))
		}
		if _, err := ob.AppendCheckpointDelta(ctx, nil, outbox.CheckpointDelta{Name: "pipeline/bench", State: state, Full: d.Full, Keys: rows}); err != nil {
			b.Fatal(err)
		}
		op.Committed()
	}
	touch(0, keys)
	commit() // every key is stored once before timing
	written = 0
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		touch(keys+i*touched, touched)
		b.StartTimer()
		commit()
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "µs/commit")
	b.ReportMetric(float64(written)/float64(b.N), "bytes/commit")
}
