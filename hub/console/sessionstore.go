package console

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// SessionBucket is the JetStream key-value bucket of console logins.
const SessionBucket = "OUTPOST_CONSOLE_SESSIONS"

// KVSessions keeps console logins in a JetStream key-value bucket,
// replicated like the hub's other stores; an entry expires with the
// session's lifetime.
type KVSessions struct{ kv jetstream.KeyValue }

var _ SessionStore = (*KVSessions)(nil)

// OpenSessions creates or opens the bucket, applying ttl (console.session_ttl)
// to a bucket that already exists.
func OpenSessions(ctx context.Context, js jetstream.JetStream, replicas int, ttl time.Duration) (*KVSessions, error) {
	if ttl <= 0 {
		ttl = Defaults().SessionTTL
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: SessionBucket, Description: "fleet console logins (keys: hashes of the cookies)",
		TTL: ttl, Replicas: replicas, Storage: jetstream.FileStorage, History: 1,
	})
	if err != nil {
		return nil, fmt.Errorf("console: session bucket: %w", err)
	}
	return &KVSessions{kv: kv}, nil
}

func (k *KVSessions) Put(ctx context.Context, key string, value []byte) error {
	_, err := k.kv.Put(ctx, key, value)
	return err
}

func (k *KVSessions) Get(ctx context.Context, key string) ([]byte, error) {
	e, err := k.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, ErrNoSession
	}
	if err != nil {
		return nil, err
	}
	return e.Value(), nil
}

func (k *KVSessions) Delete(ctx context.Context, key string) error {
	err := k.kv.Delete(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return ErrNoSession
	}
	return err
}
