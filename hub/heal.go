package hub

import (
	"context"
	"sync"

	"github.com/outpost-edge/outpost/hub/broker"
)

// storeHealer is the hub's broker.Healer, and the readers of OUTPOST_UP
// that start over after each heal.
type storeHealer struct {
	broker.Healer
	mu      sync.Mutex
	next    int
	readers map[int]context.CancelFunc
}

// startHealer watches the embedded JetStream's store until ctx ends and
// reloads it in process once a full disk has room again (broker.Healer):
// nats-server otherwise refuses writes to a stream after its first failed
// one until the hub restarts.
func (h *Hub) startHealer(ctx context.Context) {
	h.healer = &storeHealer{Healer: broker.Healer{Store: h.broker, Dir: h.cfg.StoreDir(), Log: h.log.With("component", "store healer")}}
	h.healer.OnHeal = h.healer.restartReaders
	supervise(ctx, &h.group, h.log, "store healer", h.healer.Run)
}

// untilHeal runs fn with a context that also ends at the next heal, so
// that fn's supervisor starts it over: a reload stops every consumer of
// the stream, and a client whose pull was pending on one only notices
// after its missed heartbeats (about 10 s); started over, the acker acks
// the devices at once.
func (s *storeHealer) untilHeal(fn func(context.Context) error) func(context.Context) error {
	return func(ctx context.Context) error {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		s.mu.Lock()
		if s.readers == nil {
			s.readers = map[int]context.CancelFunc{}
		}
		id := s.next
		s.next++
		s.readers[id] = cancel
		s.mu.Unlock()
		defer func() {
			s.mu.Lock()
			delete(s.readers, id)
			s.mu.Unlock()
		}()
		return fn(ctx)
	}
}

func (s *storeHealer) restartReaders() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, cancel := range s.readers {
		cancel()
	}
}

// storeHeals is how often the healer cleared a latched store.
func (h *Hub) storeHeals() int64 {
	if h.healer == nil {
		return 0
	}
	return h.healer.Heals.Load()
}
