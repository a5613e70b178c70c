package mqttnet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
)

// Publish is an MQTT 5 PUBLISH of QoS 0 or 1 that the tap took. Topic and
// Payload alias the connection's read buffer: they are valid only during
// the tap's call.
type Publish struct {
	Topic   []byte
	ID      uint16 // the packet identifier; 0 at QoS 0
	QoS     byte
	Dup     bool
	Payload []byte
}

// WrapTap is Wrap for an MQTT 5 connection whose PUBLISH packets of QoS 0
// and 1 go to tap, in the order they arrive, and never to paho; the
// caller acknowledges them (WritePacket). paho still gets every other
// packet: CONNACK, SUBACK, PINGRESP, DISCONNECT. So it keeps the session,
// the keep-alive and reconnection, while a message costs one copy of its
// payload (made by tap) instead of paho's buffers. ctx given to tap ends
// when the connection closes, so a tap blocked on a full pipeline lets go
// and paho can reconnect.
//
// A PUBLISH the tap cannot take goes to paho as before: QoS 2 (the agent
// subscribes at QoS 1, so a broker never sends one), a topic alias
// without a topic (the agent never allows aliases), or a malformed
// packet, which paho reports as a protocol error.
func WrapTap(ctx context.Context, c net.Conn, tap func(context.Context, Publish)) *Conn {
	w := Wrap(c)
	w.tap = tap
	w.tapCtx, w.untap = context.WithCancel(ctx)
	return w
}

const publish = 3 // the PUBLISH packet type

var errLength = errors.New("mqttnet: malformed remaining length")

// untapped hands every PUBLISH at the head of the stream to the tap and
// stops at the next packet for paho, setting c.pass to its length.
func (c *Conn) untapped() error {
	for {
		var h []byte
		var err error
		// The remaining length: a variable byte integer of at most 4 bytes.
		rem, hl := 0, 0
		for i, shift := 1, 0; ; i, shift = i+1, shift+7 {
			if i > 4 {
				return errLength
			}
			if h, err = c.r.Peek(i + 1); err != nil {
				return err
			}
			rem |= int(h[i]&0x7f) << shift
			if h[i]&0x80 == 0 {
				hl = i + 1
				break
			}
		}
		flags, total := h[0], hl+rem
		if flags>>4 != publish || (flags>>1)&3 > 1 {
			c.pass = total
			return nil
		}
		var pkt []byte
		big := total > c.r.Size()
		if big {
			// Larger than the buffer: read into its own, once.
			pkt = make([]byte, total)
			if _, err := io.ReadFull(c.r, pkt); err != nil {
				return err
			}
		} else if pkt, err = c.r.Peek(total); err != nil {
			return err
		}
		p, err := parsePublish(flags, pkt[hl:])
		if err != nil {
			if big {
				return err // already read: paho can no longer be shown it
			}
			c.pass = total
			return nil
		}
		c.tap(c.tapCtx, p)
		if !big {
			_, _ = c.r.Discard(total)
		}
	}
}

// parsePublish reads a PUBLISH's variable header (MQTT 5, 3.3.2) and
// payload from body.
func parsePublish(flags byte, body []byte) (Publish, error) {
	p := Publish{QoS: (flags >> 1) & 3, Dup: flags&0x08 != 0}
	if len(body) < 2 {
		return p, fmt.Errorf("mqttnet: publish of %d bytes", len(body))
	}
	tl := int(body[0])<<8 | int(body[1])
	body = body[2:]
	if tl == 0 || len(body) < tl {
		return p, fmt.Errorf("mqttnet: publish topic of %d bytes in %d", tl, len(body))
	}
	p.Topic, body = body[:tl], body[tl:]
	if p.QoS > 0 {
		if len(body) < 2 {
			return p, errors.New("mqttnet: publish without a packet identifier")
		}
		p.ID = uint16(body[0])<<8 | uint16(body[1])
		body = body[2:]
		if p.ID == 0 {
			return p, errors.New("mqttnet: publish with packet identifier 0")
		}
	}
	// Properties: their length, then the properties, none of which the
	// agent uses (it allows no topic alias).
	n, plen := 0, 0
	for shift := 0; ; shift += 7 {
		if n >= len(body) || n == 4 {
			return p, errors.New("mqttnet: malformed publish properties length")
		}
		b := body[n]
		n++
		plen |= int(b&0x7f) << shift
		if b&0x80 == 0 {
			break
		}
	}
	if len(body)-n < plen {
		return p, fmt.Errorf("mqttnet: publish properties of %d bytes in %d", plen, len(body)-n)
	}
	p.Payload = body[n+plen:]
	return p, nil
}

// PubAck appends a PUBACK for packet identifier id (reason 0, no
// properties: the two-byte form of 3.4.2.1).
func PubAck(b []byte, id uint16) []byte {
	return append(b, 0x40, 2, byte(id>>8), byte(id))
}
