package bridge

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// fakeStream answers Info with a fixed state.
type fakeStream struct {
	jetstream.Stream
	info jetstream.StreamInfo
}

func (f fakeStream) Info(context.Context, ...jetstream.StreamInfoOpt) (*jetstream.StreamInfo, error) {
	return &f.info, nil
}

// The checkpoint decides where the bridge resumes, unless the stream no
// longer reaches it: a store restored from a backup, or a tail a power
// loss took, hands its sequences out again, and those messages must be
// read, not skipped as committed.
func TestCheckpointBeyondTheStreamsEndResumesAtItsEnd(t *testing.T) {
	created := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	info := jetstream.StreamInfo{Config: jetstream.StreamConfig{Name: "OUTPOST_UP"}, Created: created}
	id := streamIdentity(&info)
	for _, c := range []struct {
		name         string
		checkpoint   uint64
		checkpointID string
		streamLast   uint64
		want         uint64
	}{
		{"same stream, ahead of the checkpoint", 100, id, 250, 100},
		{"same stream, its tail lost", 300, id, 250, 250},
		{"another stream", 300, "OUTPOST_UP@2020-01-01T00:00:00Z", 250, 0},
		{"no checkpoint", 0, "", 250, 0},
	} {
		info.State.LastSeq = c.streamLast
		b := New(Config{}, Options{Log: slog.New(slog.DiscardHandler), Stream: fakeStream{info: info}})
		b.lastSeq, b.streamID = c.checkpoint, c.checkpointID
		if err := b.checkStream(context.Background()); err != nil {
			t.Fatal(err)
		}
		if b.lastSeq != c.want || b.streamID != id {
			t.Errorf("%s: resumes after %d in %q, want after %d in %q", c.name, b.lastSeq, b.streamID, c.want, id)
		}
	}
}
