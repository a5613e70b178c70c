package mqttnet

import (
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// countingConn records each write(2) the flusher makes.
type countingConn struct {
	net.Conn
	mu     sync.Mutex
	writes int
	slow   chan struct{} // closed: writes go through
}

func (c *countingConn) Write(p []byte) (int, error) {
	<-c.slow
	c.mu.Lock()
	c.writes++
	c.mu.Unlock()
	return c.Conn.Write(p)
}

// Writes made while one is on the wire leave together, in order, and
// Close sends what is queued before closing.
func TestWritesCoalesceInOrder(t *testing.T) {
	a, b := net.Pipe()
	cc := &countingConn{Conn: a, slow: make(chan struct{})}
	c := Wrap(cc)
	got := make(chan []byte)
	go func() { all, _ := io.ReadAll(b); got <- all }()
	var want bytes.Buffer
	for i := range 100 {
		p := []byte{byte(i), byte(i >> 8), 0x40, 0x02}
		want.Write(p)
		if n, err := c.Write(p); n != len(p) || err != nil {
			t.Fatalf("write %d: %d %v", i, n, err)
		}
	}
	close(cc.slow) // the first write was held: the other 99 are queued behind it
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if all := <-got; !bytes.Equal(all, want.Bytes()) {
		t.Fatalf("the peer read %d bytes, want %d in order", len(all), want.Len())
	}
	if cc.writes > 2 {
		t.Fatalf("%d writes for 100 packets queued behind one", cc.writes)
	}
	if _, err := c.Write([]byte{1}); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after close: %v", err)
	}
}

// A failed write closes the connection, and the next Write returns it.
func TestWriteErrorIsReturned(t *testing.T) {
	a, b := net.Pipe()
	c := Wrap(a)
	b.Close()
	_, _ = c.Write([]byte("x"))
	var err error
	for end := time.Now().Add(5 * time.Second); err == nil && time.Now().Before(end); time.Sleep(time.Millisecond) {
		_, err = c.Write([]byte("y"))
	}
	if err == nil {
		t.Fatalf("writes to a closed peer: %v", err)
	}
	_ = c.Close()
}

// Reads are buffered: many small packets come out of one read.
func TestReadsAreBuffered(t *testing.T) {
	a, b := net.Pipe()
	c := Wrap(a)
	defer c.Close()
	go func() { _, _ = b.Write([]byte("abcdef")) }()
	p := make([]byte, 2)
	for _, want := range []string{"ab", "cd", "ef"} {
		if _, err := io.ReadFull(c, p); err != nil || string(p) != want {
			t.Fatalf("read %q %v, want %q", p, err, want)
		}
	}
}

// Writers racing Close never panic, and every write either is queued
// before Close drains or gets net.ErrClosed.
func TestWriteRacesClose(t *testing.T) {
	for range 1000 {
		a, b := net.Pipe()
		go func() { _, _ = io.Copy(io.Discard, b) }()
		c := Wrap(a)
		var wg sync.WaitGroup
		for range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 50 {
					if _, err := c.Write([]byte("pingreq")); err != nil {
						if !errors.Is(err, net.ErrClosed) {
							t.Errorf("write: %v", err)
						}
						return
					}
				}
			}()
		}
		_ = c.Close()
		wg.Wait()
		b.Close()
	}
}

// A failed write is what the reader gets next (paho then reconnects),
// not a silent end of input.
func TestWriteErrorReachesTheReader(t *testing.T) {
	a, b := net.Pipe()
	c := Wrap(a)
	defer c.Close()
	b.Close()
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(time.Millisecond) {
		if _, err := c.Write([]byte("puback")); err != nil {
			break
		}
	}
	_, err := c.Read(make([]byte, 1))
	if err == nil || errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
		t.Fatalf("read after a failed write: %v, want the write's error", err)
	}
}
