package trainer

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/time/rate"

	"github.com/outpost-edge/outpost/hub/trainer/join"
)

// bridged marks records the hub's bridge wrote: devices' own `labels`,
// which the trainer already read from the ingest stream.
var bridged = []byte("/outpost/")

// ConsumeLabels reads cloud teams' labels from a Kafka topic (the
// `labels` topic, outpost.labels by default) as a consumer group and joins
// them like devices' labels. A record's value is a LabelRecord with its
// device: {"device","pipeline","key","window_start" or "event_time",
// "label"}. Records the bridge wrote (ce_source /outpost/...) are skipped;
// undecodable ones are counted and logged at a bounded rate.
func (t *Trainer) ConsumeLabels(ctx context.Context, opts []kgo.Opt, topic, group string) error {
	cl, err := kgo.NewClient(append(append([]kgo.Opt(nil), opts...),
		kgo.ConsumeTopics(topic), kgo.ConsumerGroup(group),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))...)
	if err != nil {
		return fmt.Errorf("trainer: labels consumer: %w", err)
	}
	defer cl.Close()
	badLog := rate.Sometimes{First: 10, Interval: 10 * time.Second}
	for {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil
		}
		fs.EachError(func(topic string, p int32, err error) {
			t.log.Warn("labels topic", "topic", topic, "partition", p, "err", err)
		})
		fs.EachRecord(func(r *kgo.Record) {
			for _, h := range r.Headers {
				if h.Key == "ce_source" && bytes.HasPrefix(h.Value, bridged) {
					return
				}
			}
			var l LabelRecord
			if err := json.Unmarshal(r.Value, &l); err != nil || l.Device == "" || l.Pipeline == "" || l.Key == "" || (l.WindowStart.IsZero() && l.EventTime.IsZero()) {
				t.mu.Lock()
				t.badLabels++
				n := t.badLabels
				t.mu.Unlock()
				badLog.Do(func() {
					t.log.Warn("undecodable label record: needs device, pipeline, key, window_start or event_time, label", "topic", r.Topic, "offset", r.Offset, "bad_labels", n, "err", err)
				})
				return
			}
			t.AddLabel(ctx, join.Label{Device: l.Device, Pipeline: l.Pipeline, Key: l.Key, WindowStart: l.WindowStart, EventTime: l.EventTime, Class: l.Label})
		})
	}
}

// JoinsLabels reports whether some model takes labels records (and so
// the Kafka labels topic is worth reading).
func (t *Trainer) JoinsLabels() bool {
	for _, m := range t.cfg.Models {
		if m.LabelField == "" {
			return true
		}
	}
	return false
}

// BadLabels counts label records from Kafka that could not be used.
func (t *Trainer) BadLabels() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.badLabels
}
