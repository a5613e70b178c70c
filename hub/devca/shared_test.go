package devca

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// laggingKV is the CA bucket as a hub sees it whose replica has not yet
// applied the CA another hub stored: its create is refused, and its gets
// say "not found" a few more times.
type laggingKV struct {
	mu     sync.Mutex
	value  []byte
	misses int
}

type entry struct {
	jetstream.KeyValueEntry
	value []byte
}

func (e entry) Value() []byte { return e.value }

func (k *laggingKV) Get(context.Context, string) (jetstream.KeyValueEntry, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.misses > 0 {
		k.misses--
		return nil, jetstream.ErrKeyNotFound
	}
	return entry{value: k.value}, nil
}

func (k *laggingKV) Create(context.Context, string, []byte, ...jetstream.KVCreateOpt) (uint64, error) {
	return 0, jetstream.ErrKeyExists
}

// TestHubWaitsForTheCAAnotherHubStored: two hubs of a new cluster start
// at once, and the other one stores the CA first. This one must issue
// from that CA, not stop with "key not found" because its replica lags.
func TestHubWaitsForTheCAAnotherHubStored(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		certPEM, keyPEM, err := Generate(time.Now())
		if err != nil {
			t.Fatal(err)
		}
		data, _ := json.Marshal(map[string]string{"cert": string(certPEM), "key": string(keyPEM)})
		ca, err := shared(t.Context(), &laggingKV{value: data, misses: 4}, Options{}, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatalf("a lagging replica stopped the start: %v", err)
		}
		want, err := Parse(certPEM, keyPEM, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if !ca.cert.Equal(want.cert) {
			t.Fatalf("issues from %s, not from the CA the other hub stored (%s)", ca.cert.Subject, want.cert.Subject)
		}

		// A replica that never catches up is named, within the bound.
		start := time.Now()
		_, err = shared(t.Context(), &laggingKV{value: data, misses: 1 << 30}, Options{}, slog.New(slog.DiscardHandler))
		if err == nil || time.Since(start) > sharedWait+time.Second {
			t.Fatalf("a replica that never shows the CA: %v after %s", err, time.Since(start))
		}
		t.Log(err)
	})
}
