package bridge_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outpost-edge/outpost/hub/bridge"
	"github.com/outpost-edge/outpost/test/kafkatest"
)

func TestMain(m *testing.M) { os.Exit(kafkatest.Main(m)) }

// The tail is the newest committed dead letters across partitions, newest
// first: an aborted transaction's are not among them, nor is a record that
// is not a dead letter, and a topic with fewer holds what it has.
func TestTailDeadLetters(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	opts := []kgo.Opt{kgo.SeedBrokers(kafkatest.Brokers(t)...)}
	topic := fmt.Sprintf("tail%d.deadletter", time.Now().UnixNano())
	adm, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	if _, err := kadm.NewClient(adm).CreateTopic(ctx, 3, 1, nil, topic); err != nil {
		t.Fatal(err)
	}
	if got, err := bridge.TailDeadLetters(ctx, adm, opts, topic, 20); err != nil || len(got) != 0 {
		t.Fatalf("empty topic: %v, %v", got, err)
	}
	p, err := kgo.NewClient(append(opts, kgo.TransactionalID(topic), kgo.DefaultProduceTopic(topic))...)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	txn := func(commit bool, first, n int, reason string) {
		t.Helper()
		if err := p.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		for i := first; i < first+n; i++ {
			v, _ := json.Marshal(bridge.DeadLetter{Subject: "outpost.v1.pump-7.up.windows", Device: "pump-7", Reason: reason,
				StreamSeq: uint64(i), PayloadSize: i, Time: t0.Add(time.Duration(i) * time.Second)})
			// Keys spread the records over the partitions.
			if err := p.ProduceSync(ctx, &kgo.Record{Key: []byte(fmt.Sprint(i)), Value: v}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
		if err := p.EndTransaction(ctx, kgo.TransactionEndTry(commit)); err != nil {
			t.Fatal(err)
		}
	}
	// Kafka writes a transaction's markers after EndTransaction returns;
	// read_committed sees its records once it has, when every partition's
	// stable offset has reached its end.
	settle := func() {
		t.Helper()
		for {
			stable, err := kadm.NewClient(adm).ListCommittedOffsets(ctx, topic)
			if err != nil {
				t.Fatal(err)
			}
			end, err := kadm.NewClient(adm).ListEndOffsets(ctx, topic)
			if err != nil {
				t.Fatal(err)
			}
			done := true
			end.Each(func(o kadm.ListedOffset) {
				s, _ := stable.Lookup(o.Topic, o.Partition)
				done = done && s.Offset == o.Offset
			})
			if done {
				return
			}
			select {
			case <-ctx.Done():
				t.Fatal("the transactions' markers were never written")
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	txn(true, 0, 5, "old")
	settle()
	if got, err := bridge.TailDeadLetters(ctx, adm, opts, topic, 20); err != nil || len(got) != 5 || got[0].StreamSeq != 4 || got[4].StreamSeq != 0 {
		t.Fatalf("5 dead letters: %d, %v", len(got), err)
	}
	for i := 5; i < 30; i++ { // one transaction each: a marker after every record
		txn(true, i, 1, "bad envelope")
	}
	txn(false, 30, 3, "aborted")
	if err := p.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := p.ProduceSync(ctx, &kgo.Record{Key: []byte("x"), Value: []byte("not json")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if err := p.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatal(err)
	}
	settle()
	got, err := bridge.TailDeadLetters(ctx, adm, opts, topic, 20)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 20 {
		t.Fatalf("%d dead letters, want 20", len(got))
	}
	for i, dl := range got {
		if want := uint64(29 - i); dl.StreamSeq != want || dl.Reason != "bad envelope" || dl.PayloadSize != int(want) || dl.Device != "pump-7" {
			t.Fatalf("dead letter %d: %+v, want stream seq %d", i, dl, want)
		}
	}
	// Kafka out of reach: an error, within the caller's deadline.
	short, cancel2 := context.WithTimeout(ctx, time.Second)
	defer cancel2()
	nowhere := []kgo.Opt{kgo.SeedBrokers("127.0.0.1:1")}
	off, err := kgo.NewClient(nowhere...)
	if err != nil {
		t.Fatal(err)
	}
	defer off.Close()
	if _, err := bridge.TailDeadLetters(short, off, nowhere, topic, 20); err == nil {
		t.Fatal("no error without Kafka")
	}
}
