package mqttnet

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
)

// send writes packets encoded by paho.golang (a broker's view) to w.
func send(t *testing.T, w io.Writer, cps ...*packets.ControlPacket) {
	t.Helper()
	for _, cp := range cps {
		if _, err := cp.WriteTo(w); err != nil {
			t.Error(err)
			return
		}
	}
}

func publishPacket(topic string, qos byte, id uint16, payload []byte, props *packets.Properties) *packets.ControlPacket {
	cp := packets.NewControlPacket(packets.PUBLISH)
	p := cp.Content.(*packets.Publish)
	p.Topic, p.QoS, p.PacketID, p.Payload = topic, qos, id, payload
	if props != nil {
		p.Properties = props
	}
	return cp
}

type tapped struct {
	topic   string
	id      uint16
	qos     byte
	payload []byte
}

// The tap gets every PUBLISH of QoS 0 and 1, properties and all, larger
// than the read buffer too; paho gets everything else, in order and
// intact, including a PUBLISH the tap cannot take.
func TestTapTakesPublishesAndPahoTheRest(t *testing.T) {
	a, b := net.Pipe()
	var got []tapped
	c := WrapTap(context.Background(), a, func(_ context.Context, p Publish) {
		got = append(got, tapped{string(p.Topic), p.ID, p.QoS, bytes.Clone(p.Payload)})
	})
	defer c.Close()
	big := bytes.Repeat([]byte("0123456789abcdef"), 6000) // 96 KB: over the 64 KiB buffer
	sid := 7
	props := &packets.Properties{SubscriptionIdentifier: &sid, User: []packets.User{{Key: "k", Value: "v"}}, ContentType: "application/json"}
	suback := packets.NewControlPacket(packets.SUBACK)
	suback.Content.(*packets.Suback).PacketID, suback.Content.(*packets.Suback).Reasons = 1, []byte{1}
	qos2 := publishPacket("s/q2", 2, 9, []byte("two"), nil)
	noTopic := publishPacket("", 1, 10, []byte("alias"), nil) // a topic alias without a topic
	go send(t, b,
		packets.NewControlPacket(packets.CONNACK),
		publishPacket("s/a", 1, 1, []byte(`{"v":1}`), props),
		publishPacket("s/b", 0, 0, []byte(`{"v":2}`), nil),
		packets.NewControlPacket(packets.PINGRESP),
		publishPacket("s/big", 1, 2, big, nil),
		qos2,
		noTopic,
		suback,
		publishPacket("s/c", 1, 3, []byte{}, nil),
		packets.NewControlPacket(packets.PINGRESP),
	)
	var types []byte
	for len(types) < 6 {
		cp, err := packets.ReadPacket(c)
		if err != nil {
			t.Fatalf("paho's reader after %v: %v", types, err)
		}
		types = append(types, cp.Type)
		if p, ok := cp.Content.(*packets.Publish); ok && p.QoS == 2 && string(p.Payload) != "two" {
			t.Fatalf("QoS 2 publish reached paho as %q", p.Payload)
		}
	}
	want := []byte{packets.CONNACK, packets.PINGRESP, packets.PUBLISH, packets.PUBLISH, packets.SUBACK, packets.PINGRESP}
	if !bytes.Equal(types, want) {
		t.Fatalf("paho read packet types %v, want %v", types, want)
	}
	wantTap := []tapped{{"s/a", 1, 1, []byte(`{"v":1}`)}, {"s/b", 0, 0, []byte(`{"v":2}`)}, {"s/big", 2, 1, big}, {"s/c", 3, 1, []byte{}}}
	if len(got) != len(wantTap) {
		t.Fatalf("tap took %d publishes, want %d", len(got), len(wantTap))
	}
	for i, w := range wantTap {
		g := got[i]
		if g.topic != w.topic || g.id != w.id || g.qos != w.qos || !bytes.Equal(g.payload, w.payload) {
			t.Fatalf("publish %d: %s id %d qos %d, %d bytes; want %s id %d qos %d, %d bytes", i, g.topic, g.id, g.qos, len(g.payload), w.topic, w.id, w.qos, len(w.payload))
		}
	}
}

// Packets written by paho from several goroutines, and PUBACKs written
// with WritePacket, reach the peer whole: paho writes a packet's header
// and body separately and locks a sync.Locker connection around them.
func TestPacketsFromManyWritersStayWhole(t *testing.T) {
	a, b := net.Pipe()
	c := Wrap(a)
	const writers, each = 4, 500
	done := make(chan error, 1)
	go func() {
		for i := 0; i < 3*writers*each; i++ {
			cp, err := packets.ReadPacket(b)
			if err != nil {
				done <- err
				return
			}
			switch p := cp.Content.(type) {
			case *packets.Puback:
				if p.PacketID == 0 {
					done <- errors.New("PUBACK with packet identifier 0")
					return
				}
			case *packets.Pingreq:
			default:
				done <- errors.New("unexpected packet")
				return
			}
		}
		done <- nil
	}()
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				ack := packets.NewControlPacket(packets.PUBACK)
				ack.Content.(*packets.Puback).PacketID = uint16(w*each + i + 1)
				ack.Content.(*packets.Puback).ReasonCode = 0x10 // with a reason code: a longer body
				if _, err := ack.WriteTo(c); err != nil {
					t.Error(err)
					return
				}
				if _, err := packets.NewControlPacket(packets.PINGREQ).WriteTo(c); err != nil {
					t.Error(err)
					return
				}
				if err := c.WritePacket(PubAck(nil, uint16(w*each+i+1))); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("the peer read a broken stream: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the peer did not read every packet")
	}
	c.Close()
}

// A tap blocked on a full pipeline lets go when the connection closes,
// so that paho's reader can return and reconnect.
func TestCloseReleasesABlockedTap(t *testing.T) {
	a, b := net.Pipe()
	entered := make(chan struct{})
	c := WrapTap(context.Background(), a, func(ctx context.Context, _ Publish) {
		close(entered)
		<-ctx.Done()
	})
	go send(t, b, publishPacket("s/a", 1, 1, []byte("x"), nil))
	read := make(chan error, 1)
	go func() { _, err := packets.ReadPacket(c); read <- err }()
	<-entered
	go b.Close()
	c.Close()
	select {
	case err := <-read:
		if err == nil {
			t.Fatal("paho's reader read a packet from a closed connection")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the reader stayed blocked in the tap after Close")
	}
}
