// Package mqttnet gives the agent's MQTT clients a connection that spends
// fewer system calls per message. paho writes every packet with its own
// write(2) (a PUBACK per message, after each commit) and reads every
// packet with two read(2)s; at one reading per message that is most of
// the agent's system time. Conn reads through a buffer and coalesces the
// writes that arrive while one is on its way into the next write.
//
// WrapTap also takes MQTT 5 PUBLISH packets off the stream before paho
// sees them (tap.go): paho.golang allocates about 2.4 KB for every packet
// it reads, which at one reading per message was most of the agent's
// garbage.
package mqttnet

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/url"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// maxPending bounds the bytes waiting for the wire; a writer past it
// waits, so a stuck peer cannot grow the buffer without bound.
const maxPending = 1 << 20

// Conn is a net.Conn whose reads are buffered and whose writes are
// coalesced by one flusher goroutine, which Close stops. A write that
// fails closes the connection (paho then reconnects) and is returned by
// the next Write.
type Conn struct {
	net.Conn
	r *bufio.Reader

	// pkt is held across the writes of one packet: paho.golang writes a
	// packet's fixed header and body with separate Writes, and locks a
	// connection that is a sync.Locker around them, so that a PINGREQ
	// from its pinger never lands inside a PUBACK.
	pkt sync.Mutex

	tap    func(context.Context, Publish) // nil: every packet goes to paho
	tapCtx context.Context                // ends when Close starts
	untap  context.CancelFunc
	pass   int // bytes of the current packet still to hand to paho

	mu      sync.Mutex
	cond    *sync.Cond // pending drained, or the flusher ended
	pending []byte
	spare   []byte // the buffer the flusher last wrote, reused
	writing bool   // the flusher is in a write
	err     error  // the first write error, or net.ErrClosed after Close
	werr    error  // the write error, which reads return too
	stopped bool   // wake is closed
	wake    chan struct{}
	done    chan struct{}

	closeOnce sync.Once
}

// Wrap starts c's flusher.
func Wrap(c net.Conn) *Conn {
	w := &Conn{Conn: c, r: bufio.NewReaderSize(c, readBuffer), wake: make(chan struct{}, 1), done: make(chan struct{})}
	w.cond = sync.NewCond(&w.mu)
	go w.flush()
	return w
}

const readBuffer = 64 << 10

// Lock and Unlock make Conn a sync.Locker: paho holds it while it writes
// one packet, and WritePacket takes it too.
func (c *Conn) Lock()   { c.pkt.Lock() }
func (c *Conn) Unlock() { c.pkt.Unlock() }

// WritePacket queues whole packets, never inside one that paho is writing.
func (c *Conn) WritePacket(b []byte) error {
	c.pkt.Lock()
	defer c.pkt.Unlock()
	_, err := c.Write(b)
	return err
}

// Read reads through the buffer; after a failed write it returns that
// error, so paho's reader reports the lost connection and reconnects.
// With a tap, it hands paho only the packets the tap does not take.
func (c *Conn) Read(p []byte) (int, error) {
	if c.tap != nil {
		if c.pass == 0 {
			if err := c.untapped(); err != nil {
				return 0, c.readErr(err)
			}
		}
		p = p[:min(len(p), c.pass)]
	}
	n, err := c.r.Read(p)
	if c.tap != nil {
		c.pass -= n
	}
	if err != nil {
		err = c.readErr(err)
	}
	return n, err
}

// readErr is the write error, when one ended the connection.
func (c *Conn) readErr(err error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.werr != nil {
		return c.werr
	}
	return err
}

// signal wakes the flusher; c.mu is held, so it never races Close's
// close of the channel.
func (c *Conn) signal() {
	if c.stopped {
		return
	}
	select {
	case c.wake <- struct{}{}:
	default: // already woken: what is queued goes out with the next write
	}
}

// Write queues p for the flusher; it returns once p is queued.
func (c *Conn) Write(p []byte) (int, error) {
	c.mu.Lock()
	for c.err == nil && len(c.pending) > 0 && len(c.pending)+len(p) > maxPending {
		c.cond.Wait()
	}
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return 0, err
	}
	c.pending = append(c.pending, p...)
	c.signal()
	c.mu.Unlock()
	return len(p), nil
}

func (c *Conn) flush() {
	defer close(c.done)
	for range c.wake {
		for {
			c.mu.Lock()
			if len(c.pending) == 0 || (c.err != nil && !errors.Is(c.err, net.ErrClosed)) {
				c.cond.Broadcast()
				c.mu.Unlock()
				break
			}
			buf := c.pending
			c.pending = c.spare[:0]
			c.writing = true
			c.mu.Unlock()
			_, err := c.Conn.Write(buf)
			c.mu.Lock()
			c.writing = false
			c.spare = buf
			if err != nil {
				if c.err == nil || errors.Is(c.err, net.ErrClosed) {
					c.err = err
				}
				c.werr = err
				c.pending = nil
				c.cond.Broadcast()
				c.mu.Unlock()
				// Wake paho's reader with an error it reports (a closed
				// socket would read as a deliberate close), so it
				// reconnects at once.
				_ = c.Conn.SetReadDeadline(time.Now())
				break
			}
			c.cond.Broadcast()
			c.mu.Unlock()
		}
	}
}

// Close writes what is queued (paho's DISCONNECT, the last PUBACKs),
// giving it a second, then closes the connection and stops the flusher.
func (c *Conn) Close() error {
	var err error
	c.closeOnce.Do(func() {
		if c.untap != nil {
			c.untap() // a tap blocked on a full pipeline lets go
		}
		c.mu.Lock()
		if c.err == nil {
			c.err = net.ErrClosed
		}
		c.mu.Unlock()
		_ = c.Conn.SetWriteDeadline(time.Now().Add(time.Second)) // a stuck peer fails the write
		c.mu.Lock()
		c.signal()
		for (len(c.pending) > 0 || c.writing) && errors.Is(c.err, net.ErrClosed) {
			c.cond.Wait()
		}
		c.stopped = true
		close(c.wake)
		c.mu.Unlock()
		err = c.Conn.Close()
		<-c.done
	})
	return err
}

// Dialable reports whether Dial connects to u: plain TCP (tcp://,
// mqtt://) and TLS over TCP (ssl://, tls://, mqtts://). Websocket brokers
// stay with the client's own dialling.
func Dialable(u *url.URL) bool {
	switch u.Scheme {
	case "tcp", "mqtt", "ssl", "tls", "mqtts":
		return true
	}
	return false
}

// Secure reports whether u names a TLS broker.
func Secure(u *url.URL) bool { return u.Scheme == "ssl" || u.Scheme == "tls" || u.Scheme == "mqtts" }

// Dial connects to the broker at u, over TLS with tc for a Secure URL (nil
// tc: the system roots; an empty ServerName is the URL's host). A TLS
// connection returns after its handshake, so that a wrong certificate
// fails the dial, with the reason, rather than the first read.
func Dial(ctx context.Context, u *url.URL, tc *tls.Config) (net.Conn, error) {
	if !Secure(u) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", u.Host)
	}
	d := tls.Dialer{Config: tc}
	return d.DialContext(ctx, "tcp", u.Host)
}

// Use makes the client dial broker through a Conn when Dialable: over TLS
// with the options' TLSConfig. Websocket brokers keep paho's own dialling.
func Use(o *mqtt.ClientOptions, broker string) {
	u, err := url.Parse(broker)
	if err != nil || !Dialable(u) {
		return
	}
	o.SetCustomOpenConnectionFn(func(uri *url.URL, o mqtt.ClientOptions) (net.Conn, error) {
		ctx, cancel := context.Background(), context.CancelFunc(func() {})
		if o.ConnectTimeout > 0 { // 0: no timeout, as paho reads it
			ctx, cancel = context.WithTimeout(ctx, o.ConnectTimeout)
		}
		defer cancel()
		c, err := Dial(ctx, uri, o.TLSConfig)
		if err != nil {
			return nil, err
		}
		return Wrap(c), nil
	})
}
