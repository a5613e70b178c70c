// Package uplink is the agent's MQTT connection to the hub (or any MQTT
// 3.1.1 broker), built on paho. paho's in-memory store is used on purpose:
// the SQLite outbox, not paho, is the record of what still has to be sent.
package uplink

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/outpost-edge/outpost/deploy/config"
)

// Config is the hub section of the agent config.
type Config struct {
	URL string `yaml:"url" usage:"MQTT broker URL of the hub, tcp://host:port or ssl://host:port"`
	// FallbackURLs are the other hubs of a cluster: when url is down the
	// agent connects to the next one, and its session and outbox carry on.
	FallbackURLs []string `yaml:"fallback_urls" usage:"more hub URLs tried in order when url is unreachable (hubs of one cluster)"`
	// ReconnectJitter spreads a fleet's reconnects after a hub restart, so
	// that thousands of devices do not arrive in the same second.
	ReconnectJitter time.Duration `yaml:"reconnect_jitter" usage:"random delay up to this long before each reconnect attempt"`
	Username        string        `yaml:"username" usage:"MQTT username (the device credentials)"`
	Password        string        `yaml:"password" usage:"MQTT password (the device credentials)"`
	KeepAlive       time.Duration `yaml:"keepalive" usage:"MQTT keepalive interval"`
	ConnectTimeout  time.Duration `yaml:"connect_timeout" usage:"how long one connection attempt may take"`
	TLS             TLSConfig     `yaml:"tls"`
}

// TLSConfig secures the connection (ssl:// or mqtts:// URLs). A client
// certificate authenticates the device by mTLS, without a password: its
// common name is the device id.
type TLSConfig = config.ClientTLS

// Handler receives a message; it must not block (paho runs handlers inline
// with SetOrderMatters(false) and a slow one stalls acks).
type Handler func(topic string, payload []byte)

// Client is a connected uplink.
type Client struct {
	c      mqtt.Client
	log    *slog.Logger
	broker atomic.Value // string: the broker URL of the current connection
	// connects counts connections made, the first and every reconnect.
	connects atomic.Int64
}

// Options for New.
type Options struct {
	ClientID string
	// OnConnect runs after every (re)connect, on its own goroutine, so it may
	// publish: level-triggered state is re-sent and re-fetched there.
	OnConnect func(*Client)
	// Subscriptions are (re)made on every connect.
	Subscriptions map[string]Subscription
	// GetClientCertificate, when set and no hub.tls.cert_file is
	// configured, supplies the client certificate at every TLS handshake:
	// the enrolled device certificate, renewed without a restart.
	GetClientCertificate func(*tls.CertificateRequestInfo) (*tls.Certificate, error)
}

// Subscription is one topic the client follows.
type Subscription struct {
	// QoS 0 suits level-triggered messages a later one supersedes (the
	// hub's cumulative acks): on a NATS hub a QoS 1 subscription costs a
	// JetStream consumer per device, and NATS delivers its own publishes
	// at QoS 0 anyway.
	QoS    byte
	Handle Handler
}

// New builds a client; Connect starts it.
func New(cfg Config, o Options, log *slog.Logger) (*Client, error) {
	tc, err := cfg.TLS.Build()
	if err != nil {
		return nil, fmt.Errorf("uplink: %w", err)
	}
	if o.GetClientCertificate != nil && cfg.TLS.CertFile == "" {
		if tc == nil {
			tc = &tls.Config{MinVersion: tls.VersionTLS12} // system roots
		}
		tc.GetClientCertificate = o.GetClientCertificate
	}
	u := &Client{log: log}
	opts := mqtt.NewClientOptions().
		AddBroker(cfg.URL).
		SetClientID(o.ClientID).
		SetProtocolVersion(4). // 3.1.1; never fall back to 3.1, which NATS refuses

		SetUsername(cfg.Username).
		SetPassword(cfg.Password).
		SetKeepAlive(cfg.KeepAlive).
		SetConnectTimeout(cfg.ConnectTimeout).
		// A clean session on purpose: the outbox resends everything not yet
		// acked after every connect, subscriptions are re-made in the
		// connect handler, and desired state is retained. A persistent
		// session would only make the broker keep per-device state, and
		// make paho replay its in-flight packets to whichever hub of a
		// cluster the device reaches next.
		SetCleanSession(true).
		SetOrderMatters(false).
		SetAutoReconnect(true).
		SetConnectRetry(true).
		SetConnectRetryInterval(time.Second).
		SetMaxReconnectInterval(30 * time.Second).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) {
			log.Warn("uplink connection lost", "err", err)
		}).
		SetOnConnectHandler(func(c mqtt.Client) {
			u.connects.Add(1)
			log.Info("uplink connected", "broker", u.broker.Load())
			for topic, sub := range o.Subscriptions {
				go subscribe(c, topic, sub, log)
			}
			if o.OnConnect != nil {
				go o.OnConnect(u)
			}
		})
	// The attempt that succeeds is the last one made: remember its broker.
	opts.SetConnectionAttemptHandler(func(b *url.URL, tc *tls.Config) *tls.Config {
		u.broker.Store(b.Redacted())
		return tc
	})
	for _, fb := range cfg.FallbackURLs {
		opts.AddBroker(fb)
	}
	if j := cfg.ReconnectJitter; j > 0 {
		// paho calls this before every reconnect attempt, on the reconnect
		// goroutine; its own backoff has no jitter.
		opts.SetReconnectingHandler(func(mqtt.Client, *mqtt.ClientOptions) {
			time.Sleep(rand.N(j))
		})
	}
	if tc != nil {
		opts.SetTLSConfig(tc)
	}
	u.c = mqtt.NewClient(opts)
	return u, nil
}

// Connect starts connecting. With connect-retry on, it keeps trying in the
// background; it returns once connected or when ctx ends, whichever first.
func (u *Client) Connect(ctx context.Context) error {
	tok := u.c.Connect()
	select {
	case <-tok.Done():
		if err := tok.Error(); err != nil {
			return fmt.Errorf("uplink: connect: %w", err)
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Publish sends one message and waits for the broker's PUBACK (QoS 1). A
// PUBACK is not proof of durable storage; the hub's app-level ack is.
func (u *Client) Publish(ctx context.Context, topic string, qos byte, retained bool, payload []byte) error {
	tok := u.c.Publish(topic, qos, retained, payload)
	select {
	case <-tok.Done():
		if err := tok.Error(); err != nil {
			return fmt.Errorf("uplink: publish %s: %w", topic, err)
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Connected reports whether the connection is up right now.
func (u *Client) Connected() bool { return u.c.IsConnectionOpen() }

// Broker is the URL (password redacted) of the broker of the current or
// last connection attempt; "" before the first.
func (u *Client) Broker() string {
	b, _ := u.broker.Load().(string)
	return b
}

// Reconnects counts the connections made after the first.
func (u *Client) Reconnects() int64 { return max(0, u.connects.Load()-1) }

// Close disconnects, giving in-flight work a moment to finish.
func (u *Client) Close() { u.c.Disconnect(250) }

// subscribe subscribes and keeps trying while the connection lasts: a
// subscription the broker refused (a busy hub times out) would leave the
// device deaf to its hub with nothing else noticing.
func subscribe(c mqtt.Client, topic string, sub Subscription, log *slog.Logger) {
	h := sub.Handle
	for wait := time.Second; c.IsConnectionOpen(); wait = min(2*wait, 30*time.Second) {
		tok := c.Subscribe(topic, sub.QoS, func(_ mqtt.Client, m mqtt.Message) { h(m.Topic(), m.Payload()) })
		if !tok.WaitTimeout(30 * time.Second) {
			log.Warn("uplink subscribe timed out; retrying", "topic", topic)
		} else if err := tok.Error(); err != nil {
			log.Warn("uplink subscribe failed; retrying", "topic", topic, "err", err)
		} else if st, ok := tok.(*mqtt.SubscribeToken); ok && st.Result()[topic] == 0x80 {
			log.Warn("uplink subscribe refused by the broker; retrying", "topic", topic)
		} else {
			return
		}
		time.Sleep(wait)
	}
}
