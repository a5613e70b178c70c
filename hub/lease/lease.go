// Package lease elects one hub of a cluster to run a singleton job (the
// Kafka bridge and the acker) through a key in a replicated JetStream KV
// bucket whose entries expire: the holder refreshes the key, and when it
// dies the key ages out and another hub creates it.
//
// A lease alone cannot rule out two holders for a moment (a paused holder
// wakes after its key expired), so whatever it guards must also be fenced:
// the bridge shares one Kafka transactional id across the cluster, and
// Kafka fences the older producer.
package lease

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Bucket is the KV bucket holding the leases.
const Bucket = "OUTPOST_LEASES"

// Lease is one named lease contested by the hubs of a cluster.
type Lease struct {
	kv     jetstream.KeyValue
	key    string
	holder string
	ttl    time.Duration
	log    *slog.Logger
}

// Open creates (or binds) the lease bucket with the given replicas and TTL.
// Every hub of a cluster must use the same TTL.
func Open(ctx context.Context, js jetstream.JetStream, key, holder string, ttl time.Duration, replicas int, log *slog.Logger) (*Lease, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: Bucket, History: 1, TTL: ttl, Replicas: max(replicas, 1), Storage: jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("lease: bucket: %w", err)
	}
	return &Lease{kv: kv, key: key, holder: holder, ttl: ttl, log: log.With("component", "lease", "lease", key)}, nil
}

// Run contests the lease until ctx ends. While this hub holds it, job runs
// with a context that ends when the lease is lost or ctx ends; Run waits
// for job to return before contesting again. On return the lease is
// released, so another hub takes over at once after a clean shutdown.
func (l *Lease) Run(ctx context.Context, job func(context.Context)) {
	tick := l.ttl / 4
	for ctx.Err() == nil {
		rev, ok := l.acquire(ctx)
		if !ok {
			select {
			case <-ctx.Done():
			case <-time.After(tick):
			}
			continue
		}
		l.log.Info("lease acquired; running", "holder", l.holder)
		jobCtx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); job(jobCtx) }()
		rev = l.hold(jobCtx, rev)
		stop()
		<-done
		if ctx.Err() != nil {
			l.release(rev)
			return
		}
		l.log.Warn("lease lost; job stopped", "holder", l.holder)
	}
}

// Holder is the hub holding the lease now ("" when none does): a hub
// that does not hold it can say where the job runs.
func (l *Lease) Holder(ctx context.Context) (string, error) {
	e, err := l.kv.Get(ctx, l.key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("lease: read %s: %w", l.key, err)
	}
	return string(e.Value()), nil
}

// acquire takes the lease if it is free, or if this holder's previous
// incarnation (a crash and restart under the same server name) still has it.
func (l *Lease) acquire(ctx context.Context) (uint64, bool) {
	e, err := l.kv.Get(ctx, l.key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		rev, err := l.kv.Create(ctx, l.key, []byte(l.holder))
		return rev, err == nil
	case err != nil:
		l.log.Debug("lease: read", "err", err)
		return 0, false
	case string(e.Value()) == l.holder:
		rev, err := l.kv.Update(ctx, l.key, []byte(l.holder), e.Revision())
		return rev, err == nil
	}
	return 0, false
}

// hold refreshes the lease until ctx ends or a refresh fails. It gives up
// once the last good refresh is more than half a TTL old, well before
// another hub can take the key, so the job stops before a successor starts.
func (l *Lease) hold(ctx context.Context, rev uint64) uint64 {
	t := time.NewTicker(l.ttl / 4)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return rev
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, l.ttl/4)
		next, err := l.kv.Update(rctx, l.key, []byte(l.holder), rev)
		cancel()
		if err == nil {
			rev, last = next, time.Now()
			continue
		}
		if ctx.Err() != nil {
			return rev
		}
		if errors.Is(err, jetstream.ErrKeyExists) {
			// Either another hub took the key, or an earlier refresh of
			// ours landed after its deadline (a busy store answers late)
			// and moved the revision on: the key says which.
			rctx, cancel := context.WithTimeout(ctx, l.ttl/4)
			e, gerr := l.kv.Get(rctx, l.key)
			cancel()
			switch {
			case gerr == nil && string(e.Value()) == l.holder && time.Since(e.Created()) < l.ttl/2:
				l.log.Info("lease: an earlier refresh landed after its deadline; still held", "since_it", time.Since(e.Created()).Round(time.Millisecond))
				rev, last = e.Revision(), e.Created()
				continue
			case gerr == nil || errors.Is(gerr, jetstream.ErrKeyNotFound):
				l.log.Warn("lease: refresh refused: the key is no longer ours", "err", err)
				return 0
			}
			err = fmt.Errorf("%w (reading the key: %w)", err, gerr)
		}
		l.log.Warn("lease: refresh failed", "err", err, "since_last", time.Since(last).Round(time.Millisecond))
		if time.Since(last) > l.ttl/2 {
			return 0 // we cannot prove we still hold it
		}
	}
}

func (l *Lease) release(rev uint64) {
	if rev == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := l.kv.Delete(ctx, l.key, jetstream.LastRevision(rev)); err != nil {
		l.log.Debug("lease: release", "err", err)
	}
}
