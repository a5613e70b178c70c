package ingest

import (
	"bytes"
	"io"
	"net"
	"testing"

	"github.com/outpost-edge/outpost/agent/mqttnet"
)

// PUBACKs leave in the order their PUBLISH packets came (MQTT 4.6.0-2):
// a message acked early waits for those before it, and an ack given twice
// is sent once.
func TestPubacksLeaveInArrivalOrder(t *testing.T) {
	a, b := net.Pipe()
	acks := pubacks{conn: mqttnet.Wrap(a)}
	wire := make(chan []byte)
	go func() { all, _ := io.ReadAll(b); wire <- all }()
	var seq []uint64
	for _, id := range []uint16{7, 3, 65535, 1} {
		seq = append(seq, acks.received(id))
	}
	acks.ack(seq[2]) // early: waits for 7 and 3
	acks.ack(seq[1])
	acks.ack(seq[0]) // 7, 3, 65535 now go out
	acks.ack(seq[0]) // twice: nothing more
	acks.ack(seq[3])
	acks.conn.Close()
	want := mqttnet.PubAck(mqttnet.PubAck(mqttnet.PubAck(mqttnet.PubAck(nil, 7), 3), 65535), 1)
	if got := <-wire; !bytes.Equal(got, want) {
		t.Fatalf("wire % x, want % x", got, want)
	}
}
