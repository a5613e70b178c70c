package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"
	"golang.org/x/sync/errgroup"

	"github.com/outpost-edge/outpost/agent/mqttnet"
)

// The window is how many messages the broker may deliver before the agent
// acknowledges: the pipeline commits every window's worth. MQTT 3.1.1 has
// no way to ask for one, so it stays under Mosquitto's default
// max_inflight_messages (20); MQTT 5 sends it to the broker as Receive
// Maximum, which Mosquitto honours in place of its own limit.
const (
	DefaultWindow311 = 16
	DefaultWindow5   = 2000
)

// Window is the window for a connection of the given protocol:
// max_unacked when it is set.
func (c MQTTConfig) Window(mqtt5 bool) int {
	switch {
	case c.MaxUnacked > 0:
		return c.MaxUnacked
	case mqtt5:
		return DefaultWindow5
	}
	return DefaultWindow311
}

// errNoMQTT5 means the broker took the connection but not an MQTT 5
// CONNECT: it speaks 3.1.1 only (NATS, older brokers).
var errNoMQTT5 = errors.New("the broker does not speak MQTT 5")

// ackInterval is how often paho sends the acknowledgements of committed
// messages, in order, for a connection with the given window: for the
// brokers paho dials itself (websockets). Over TCP and TLS the PUBLISH
// packets bypass paho (mqttnet.WrapTap) and each commit's PUBACKs leave
// at once. The broker holds at most a window unacknowledged, so acks
// every T cap the rate at window/T: 10 µs per message of window keeps
// that cap at 100k msg/s, over what one core ingests, while a quiet
// stream wakes the process at most 50 times a second, not 500. (With a
// 2 ms ticker the wakeups, and the Go runtime's monitor polling every
// 20 µs while they lasted, were a third of the agent's CPU at 5k msg/s;
// side by side against eKuiper, 5k msg/s cost 29-33 CPU-µs per event
// with the 20 ms ticker against 41-48.)
func ackInterval(window int) time.Duration {
	return min(max(time.Duration(window)*10*time.Microsecond, 2*time.Millisecond), 20*time.Millisecond)
}

// commitAt is how many acknowledgements may wait for a commit over MQTT
// 5: half the window, so the broker sends the other half while a commit's
// acks wait for the ticker.
func commitAt(window int) int { return max(1, window/2) }

// subscribe5 reads sensor messages over MQTT 5 with a persistent session
// (it never expires, as a 3.1.1 clean_session=false one) and acknowledges
// each only when the pipeline has committed it. With fallback, it returns
// errNoMQTT5 when the broker refuses MQTT 5 before any connection came up.
func subscribe5(ctx context.Context, c MQTTConfig, out chan<- Line, log *slog.Logger, window func(int), fallback bool) error {
	u, err := url.Parse(c.URL)
	if err != nil {
		return fmt.Errorf("ingest: mqtt.url: %w", err)
	}
	recvMax := uint16(c.Window(true))
	acks := ackInterval(int(recvMax))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, gctx := errgroup.WithContext(ctx)
	var (
		up      atomic.Bool  // a connection has come up: no fallback any more
		dialed  atomic.Bool  // the last attempt reached the broker
		refused atomic.Value // errNoMQTT5, wrapped with what the broker said
	)
	handler := func(pr paho.PublishReceived) (bool, error) {
		p, cl := pr.Packet, pr.Client
		ack := func() { _ = cl.Ack(p) } // fails only for a connection since lost: the broker redelivers
		// Blocking here applies backpressure to the local broker (QoS 1).
		if err := payloadLinesAck(ctx, p.Payload, out, ack); err != nil {
			log.Warn("ingest: mqtt payload", "topic", p.Topic, "err", err)
			ack() // unreadable as lines: nothing to keep (counted by the decoder when partly read)
		}
		return true, nil
	}
	cfg := autopaho.ClientConfig{
		ServerUrls:            []*url.URL{u},
		KeepAlive:             30,
		SessionExpiryInterval: math.MaxUint32, // never expires
		ReconnectBackoff:      autopaho.NewExponentialBackoff(100*time.Millisecond, 30*time.Second, time.Second, 2),
		ConnectTimeout:        10 * time.Second,
		ConnectUsername:       c.Username,
		ConnectPassword:       []byte(c.Password),
		ConnectPacketBuilder: func(cp *paho.Connect, _ *url.URL) (*paho.Connect, error) {
			if cp.Properties == nil {
				cp.Properties = &paho.ConnectProperties{}
			}
			cp.Properties.ReceiveMaximum = &recvMax
			dialed.Store(false)
			return cp, nil
		},
		OnConnectionUp: func(cm *autopaho.ConnectionManager, _ *paho.Connack) {
			up.Store(true)
			window(commitAt(int(recvMax)))
			// Subscribe on every connect: the session may be new. It must
			// not block this callback.
			g.Go(func() error {
				sub := &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: c.Topic, QoS: 1}}}
				if _, err := cm.Subscribe(gctx, sub); err != nil && gctx.Err() == nil {
					log.Warn("ingest: subscribe", "topic", c.Topic, "err", err)
				}
				return nil
			})
		},
		OnConnectError: func(err error) {
			var ce *autopaho.ConnackError
			// 0x84: unsupported protocol version; a 3.1.1 broker's "1,
			// unacceptable protocol version" reads as reason code 1.
			noV5 := errors.As(err, &ce) && (ce.ReasonCode == 0x84 || ce.ReasonCode == 0x01)
			if fallback && !up.Load() && (noV5 || (dialed.Load() && !errors.As(err, &ce))) {
				refused.CompareAndSwap(nil, fmt.Errorf("%w: %v", errNoMQTT5, err))
				cancel()
				return
			}
			log.Warn("ingest: mqtt connect", "url", c.URL, "err", err)
		},
		ClientConfig: paho.ClientConfig{
			ClientID:                   c.ClientID,
			EnableManualAcknowledgment: true,
			SendAcksInterval:           acks,
			OnPublishReceived:          []func(paho.PublishReceived) (bool, error){handler},
		},
	}
	if mqttnet.Dialable(u) {
		tc, err := c.TLS.Build()
		if err != nil {
			return fmt.Errorf("ingest: mqtt.tls: %w", err)
		}
		cfg.AttemptConnection = func(ctx context.Context, _ autopaho.ClientConfig, u *url.URL) (net.Conn, error) {
			conn, err := mqttnet.Dial(ctx, u, tc)
			if err != nil {
				return nil, err
			}
			dialed.Store(true)
			// PUBLISH packets go from the connection's buffer straight to
			// the pipeline; paho keeps the session (mqttnet.WrapTap).
			in := &tapped{out: out, log: log}
			in.acks.conn = mqttnet.WrapTap(ctx, conn, in.publish)
			return in.acks.conn, nil
		}
	} else if tc, err := c.TLS.Build(); err != nil {
		return fmt.Errorf("ingest: mqtt.tls: %w", err)
	} else {
		cfg.TlsCfg = tc // wss://
	}
	cm, err := autopaho.NewConnection(ctx, cfg)
	if err != nil {
		return fmt.Errorf("ingest: mqtt: %w", err)
	}
	<-ctx.Done()
	// Time for the acks of committed messages to leave.
	time.Sleep(2 * acks)
	dctx, dcancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer dcancel()
	_ = cm.Disconnect(dctx)
	_ = g.Wait()
	if err, _ := refused.Load().(error); err != nil {
		return err
	}
	return nil
}

// tapped takes one connection's PUBLISH packets from mqttnet's tap to the
// pipeline: each payload copied once, into a shared slab, and its PUBACK
// sent once the pipeline has committed it.
type tapped struct {
	out  chan<- Line
	log  *slog.Logger
	acks pubacks
	slab []byte // payloads are carved from it; a full slab is left to the GC
}

// slabSize holds a few hundred typical readings per allocation.
const slabSize = 64 << 10

func (t *tapped) publish(ctx context.Context, p mqttnet.Publish) {
	ack := func() {}
	if p.QoS > 0 {
		seq := t.acks.received(p.ID)
		ack = func() { t.acks.ack(seq) }
	}
	n := len(p.Payload)
	if cap(t.slab)-len(t.slab) < n {
		t.slab = make([]byte, 0, max(slabSize, n))
	}
	at := len(t.slab)
	t.slab = append(t.slab, p.Payload...)
	data := t.slab[at:len(t.slab):len(t.slab)]
	// Blocking here applies backpressure to the local broker (QoS 1).
	if err := payloadLinesAck(ctx, data, t.out, ack); err != nil {
		t.log.Warn("ingest: mqtt payload", "topic", string(p.Topic), "err", err)
		ack() // unreadable as lines: nothing to keep (counted by the decoder when partly read)
	}
}

// pubacks sends one connection's PUBACKs in the order its PUBLISH packets
// arrived, as MQTT requires (4.6.0-2), each once its message is acked: a
// message acked early (unreadable, nothing to commit) waits for those
// before it. Acks for a connection since lost are written to nothing; the
// broker redelivers those messages on the next.
type pubacks struct {
	conn *mqttnet.Conn
	mu   sync.Mutex
	next uint64 // the sequence number of q[0]
	q    []pendingAck
	buf  []byte
}

type pendingAck struct {
	id   uint16
	done bool
}

// received notes a PUBLISH awaiting its ack and returns its sequence number.
func (a *pubacks) received(id uint16) uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.q = append(a.q, pendingAck{id: id})
	return a.next + uint64(len(a.q)-1)
}

// ack marks message seq acked and sends every PUBACK now in order.
func (a *pubacks) ack(seq uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	i := seq - a.next
	if seq < a.next || i >= uint64(len(a.q)) {
		return // sent already
	}
	a.q[i].done = true
	n := 0
	for n < len(a.q) && a.q[n].done {
		n++
	}
	if n == 0 {
		return
	}
	a.buf = a.buf[:0]
	for _, p := range a.q[:n] {
		a.buf = mqttnet.PubAck(a.buf, p.id)
	}
	a.q, a.next = a.q[n:], a.next+uint64(n)
	// Under a.mu, so that two ackers cannot reorder their PUBACKs. A
	// failed write means the connection is gone: its messages come again.
	_ = a.conn.WritePacket(a.buf)
}
