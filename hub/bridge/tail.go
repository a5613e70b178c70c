package bridge

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TailDeadLetters reads the latest n committed dead letters of topic
// across its partitions, newest first. It reads from Kafka, not from this
// process, so every hub of a cluster answers the same, and after a
// restart. A record that is not a DeadLetter is skipped. cl (the hub's
// long-lived client) lists the offsets; a consumer made from opts for this
// call reads the partitions it assigns itself.
//
// Each partition is read from 2n offsets before its last stable offset:
// every transaction leaves a commit marker that takes an offset, so that
// holds n dead letters even if each came in its own transaction (fewer if
// aborted transactions sit among them).
func TailDeadLetters(ctx context.Context, cl *kgo.Client, opts []kgo.Opt, topic string, n int) ([]DeadLetter, error) {
	adm := kadm.NewClient(cl)
	starts, err := adm.ListStartOffsets(ctx, topic)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("bridge: dead letters: start offsets of %s: %w", topic, err)
	}
	ends, err := adm.ListCommittedOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("bridge: dead letters: end offsets of %s: %w", topic, err)
	}
	from, until := map[int32]kgo.Offset{}, map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		start := int64(0)
		if s, ok := starts.Lookup(o.Topic, o.Partition); ok {
			start = s.Offset
		}
		if o.Offset > start {
			from[o.Partition] = kgo.NewOffset().At(max(start, o.Offset-2*int64(n)))
			until[o.Partition] = o.Offset
		}
	})
	if len(from) == 0 {
		return nil, nil
	}
	rd, err := kgo.NewClient(append(slices.Clone(opts),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: from}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		// The markers tell when a partition is read to its end: the
		// last offset before the stable end is often one.
		kgo.KeepControlRecords())...)
	if err != nil {
		return nil, fmt.Errorf("bridge: dead letters: %w", err)
	}
	defer rd.Close()
	var out []DeadLetter
	for len(until) > 0 {
		fs := rd.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return newest(out, n), fmt.Errorf("bridge: dead letters: %d partitions of %s not read: %w", len(until), topic, err)
		}
		var ferr error
		fs.EachError(func(_ string, _ int32, err error) { ferr = err })
		if ferr != nil {
			return newest(out, n), fmt.Errorf("bridge: dead letters: read %s: %w", topic, ferr)
		}
		fs.EachRecord(func(r *kgo.Record) {
			end, ok := until[r.Partition]
			if !ok || r.Offset >= end {
				return // past the end listed: newer than this read
			}
			if r.Offset == end-1 {
				delete(until, r.Partition)
			}
			var dl DeadLetter
			if r.Attrs.IsControl() || json.Unmarshal(r.Value, &dl) != nil {
				return
			}
			out = append(out, dl)
		})
	}
	return newest(out, n), nil
}

// newest sorts dead letters newest first and keeps n.
func newest(dls []DeadLetter, n int) []DeadLetter {
	slices.SortStableFunc(dls, func(a, b DeadLetter) int { return b.Time.Compare(a.Time) })
	return dls[:min(len(dls), n)]
}
