package lease_test

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-edge/outpost/hub/lease"
	"github.com/outpost-edge/outpost/test/natstest"
)

// contender runs one hub's side of the lease and records whether its job runs.
type contender struct {
	running atomic.Bool
	starts  atomic.Int32
	stop    context.CancelFunc
	done    chan struct{}
}

func contend(t *testing.T, js jetstream.JetStream, holder string, ttl time.Duration) *contender {
	t.Helper()
	l, err := lease.Open(context.Background(), js, "pipeline", holder, ttl, 1, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &contender{stop: cancel, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		l.Run(ctx, func(ctx context.Context) {
			c.starts.Add(1)
			c.running.Store(true)
			<-ctx.Done()
			c.running.Store(false)
		})
	}()
	t.Cleanup(func() { cancel(); <-c.done })
	return c
}

func (c *contender) close() { c.stop(); <-c.done }

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			t.Fatalf("%s: not within %s", what, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

func TestOneHolderAndHandover(t *testing.T) {
	js := natstest.JetStream(t)
	// Long enough that expiry cannot explain the handover below: a's last
	// refresh (every TTL/4) keeps the lease at least 7.5 s past its close.
	const ttl = 10 * time.Second
	a := contend(t, js, "hub-a", ttl)
	waitFor(t, "hub-a leads", 5*time.Second, a.running.Load)
	b := contend(t, js, "hub-b", ttl)
	// Refresh periods of both: b must stay a follower while a holds.
	time.Sleep(ttl / 2)
	if b.running.Load() || !a.running.Load() {
		t.Fatalf("a=%v b=%v: want only a running", a.running.Load(), b.running.Load())
	}
	// A clean stop releases the lease: b takes over at its next tick, not
	// when the lease expires.
	a.close()
	waitFor(t, "hub-b takes over before a's lease could expire", 6*time.Second, b.running.Load)
	if a.running.Load() {
		t.Error("a still running after close")
	}
}

func TestRestartedHolderTakesBackItsLease(t *testing.T) {
	js := natstest.JetStream(t)
	const ttl = 30 * time.Second // far longer than the test: expiry cannot explain success
	kv, err := js.CreateOrUpdateKeyValue(context.Background(), jetstream.KeyValueConfig{Bucket: lease.Bucket, History: 1, TTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	// A crashed hub-a left its lease behind.
	if _, err := kv.Create(context.Background(), "pipeline", []byte("hub-a")); err != nil {
		t.Fatal(err)
	}
	b := contend(t, js, "hub-b", ttl)
	a := contend(t, js, "hub-a", ttl)
	waitFor(t, "restarted hub-a leads", 5*time.Second, a.running.Load)
	if b.running.Load() {
		t.Fatal("hub-b runs although hub-a holds the lease")
	}
}

func TestCrashedHolderExpires(t *testing.T) {
	js := natstest.JetStream(t)
	const ttl = 2 * time.Second
	kv, err := js.CreateOrUpdateKeyValue(context.Background(), jetstream.KeyValueConfig{Bucket: lease.Bucket, History: 1, TTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	// hub-a crashed holding the lease and never comes back.
	if _, err := kv.Create(context.Background(), "pipeline", []byte("hub-a")); err != nil {
		t.Fatal(err)
	}
	b := contend(t, js, "hub-b", ttl)
	time.Sleep(ttl / 2)
	if b.running.Load() {
		t.Fatal("hub-b took a lease that had not expired")
	}
	waitFor(t, "hub-b takes the expired lease", 3*ttl, b.running.Load)
	if n := b.starts.Load(); n != 1 {
		t.Errorf("job started %d times, want 1", n)
	}
}

// Holder names the hub whose key is in the bucket, for a hub that does not
// hold the lease itself: nobody before anyone takes it.
func TestHolderNamesTheHolder(t *testing.T) {
	js := natstest.JetStream(t)
	l, err := lease.Open(context.Background(), js, "pipeline", "hub-b", 30*time.Second, 1, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if h, err := l.Holder(context.Background()); err != nil || h != "" {
		t.Fatalf("free lease: holder %q, %v", h, err)
	}
	kv, err := js.KeyValue(context.Background(), lease.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Create(context.Background(), "pipeline", []byte("hub-a")); err != nil {
		t.Fatal(err)
	}
	if h, err := l.Holder(context.Background()); err != nil || h != "hub-a" {
		t.Fatalf("held lease: holder %q, %v, want hub-a", h, err)
	}
}

// lostReplyJS hands out a lease bucket whose next refresh, once armed,
// reaches the server and is applied, but whose reply is lost: the holder
// sees a timeout, as it does when a busy JetStream (fsync on every write)
// answers after the refresh's deadline.
type lostReplyJS struct {
	jetstream.JetStream
	kv *lostReplyKV
}

type lostReplyKV struct {
	jetstream.KeyValue
	armed, lost atomic.Bool
}

func (j *lostReplyJS) CreateOrUpdateKeyValue(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	kv, err := j.JetStream.CreateOrUpdateKeyValue(ctx, cfg)
	if err != nil {
		return nil, err
	}
	j.kv = &lostReplyKV{KeyValue: kv}
	return j.kv, nil
}

func (kv *lostReplyKV) Update(ctx context.Context, key string, value []byte, rev uint64) (uint64, error) {
	next, err := kv.KeyValue.Update(ctx, key, value, rev)
	if err == nil && kv.armed.CompareAndSwap(true, false) {
		kv.lost.Store(true)
		return 0, context.DeadlineExceeded
	}
	return next, err
}

// A refresh that landed although its reply was lost is still this hub's:
// the next refresh, made against the revision before it, must not count
// as the lease taken by another hub and stop the bridge and the acker.
func TestRefreshWhoseReplyWasLostKeepsTheLease(t *testing.T) {
	js := &lostReplyJS{JetStream: natstest.JetStream(t)}
	const ttl = 2 * time.Second // refreshes every 500 ms
	a := contend(t, js, "hub-a", ttl)
	waitFor(t, "hub-a leads", 5*time.Second, a.running.Load)
	js.kv.armed.Store(true)
	waitFor(t, "a refresh's reply is lost", 5*time.Second, js.kv.lost.Load)
	// Three more refreshes: the one after the lost reply, and two more.
	time.Sleep(3 * ttl / 4)
	if n := a.starts.Load(); n != 1 || !a.running.Load() {
		t.Fatalf("job started %d times, running %v: the lease was dropped after a refresh whose reply was lost", n, a.running.Load())
	}
}
