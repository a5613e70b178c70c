package broker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// fakeStore has faults until it is reloaded (or, with sticky, for good).
type fakeStore struct {
	faults    []Fault
	reloads   int
	reloadErr error
	sticky    bool
}

func (f *fakeStore) StoreFaults() []Fault { return f.faults }

func (f *fakeStore) ReloadJetStream(faults []Fault) error {
	f.reloads++
	if f.reloadErr != nil {
		return f.reloadErr
	}
	if !f.sticky {
		f.faults = nil
	}
	return nil
}

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func newHealer(s Store, avail *uint64) (*Healer, *clock) {
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	return &Healer{
		Store: s, Dir: "/store", Now: c.now,
		Free: func(string) (uint64, uint64, error) { return *avail, 1 << 30, nil },
		Log:  slog.New(slog.NewTextHandler(io.Discard, nil)),
	}, c
}

func check(t *testing.T, h *Healer, want bool) {
	t.Helper()
	healed, err := h.Check()
	if err != nil {
		t.Fatalf("check: %v", err)
	}
	if healed != want {
		t.Fatalf("check healed = %v, want %v", healed, want)
	}
}

// A latched store is reloaded only once the disk has MinFree available,
// and only after two checks have seen the fault; each heal is counted and
// announced.
func TestHealerWaitsForRoomThenReloads(t *testing.T) {
	s := &fakeStore{faults: []Fault{{Stream: "OUTPOST_UP", Err: "write error: no space left on device"}}}
	avail := uint64(0)
	h, _ := newHealer(s, &avail)
	var announced int
	h.OnHeal = func() { announced++ }
	check(t, h, false) // first sight: no reload yet
	check(t, h, false) // still full
	avail = DefaultMinFree - 1
	check(t, h, false) // not enough yet
	if s.reloads != 0 {
		t.Fatalf("reloaded %d times while the disk was short of space", s.reloads)
	}
	avail = DefaultMinFree
	check(t, h, true)
	if s.reloads != 1 || h.Heals.Load() != 1 || announced != 1 {
		t.Fatalf("after the heal: %d reloads, %d heals counted, %d announced; want 1 each", s.reloads, h.Heals.Load(), announced)
	}
	check(t, h, false) // healthy: nothing to do
	if s.reloads != 1 {
		t.Fatalf("a healthy store was reloaded (%d reloads)", s.reloads)
	}
}

// A fault seen once and gone by the next check (a stream being created
// looks unrecovered for a moment) is never reloaded.
func TestHealerIgnoresFaultThatClears(t *testing.T) {
	s := &fakeStore{faults: []Fault{{Stream: "X", Err: "could not be recovered"}}}
	avail := uint64(1 << 30)
	h, _ := newHealer(s, &avail)
	check(t, h, false)
	s.faults = nil
	check(t, h, false)
	s.faults = []Fault{{Stream: "X", Err: "could not be recovered"}}
	check(t, h, false) // first sight again
	if s.reloads != 0 || h.Heals.Load() != 0 {
		t.Fatalf("%d reloads, %d heals for faults that did not last", s.reloads, h.Heals.Load())
	}
}

// A reload that fails, or that leaves faults, is an error and not a heal;
// the next check tries again.
func TestHealerReportsFailedReload(t *testing.T) {
	s := &fakeStore{faults: []Fault{{Err: "disabled by the server"}}, reloadErr: errors.New("boom")}
	avail := uint64(1 << 30)
	h, _ := newHealer(s, &avail)
	check(t, h, false)
	if _, err := h.Check(); err == nil || !errors.Is(err, s.reloadErr) {
		t.Fatalf("check after a failed reload: %v, want it to wrap %v", err, s.reloadErr)
	}
	s.reloadErr, s.sticky = nil, true
	if _, err := h.Check(); err == nil {
		t.Fatal("check after a reload that left the fault: no error")
	}
	s.sticky = false
	check(t, h, true)
	if s.reloads != 3 || h.Heals.Load() != 1 {
		t.Fatalf("%d reloads, %d heals; want 3 and 1", s.reloads, h.Heals.Load())
	}
}

// Without MinFree the margin is 16 MiB, or a tenth of a small filesystem.
func TestHealerDefaultMargin(t *testing.T) {
	s := &fakeStore{faults: []Fault{{Stream: "X", Err: "write error"}}}
	h, _ := newHealer(s, nil)
	h.Free = func(string) (uint64, uint64, error) { return 7 << 20, 64 << 20, nil }
	check(t, h, false)
	check(t, h, true) // 7 MiB free of 64 MiB: more than a tenth
}

// The file store's critical write error log line names the latched store.
func TestLatchesFromLog(t *testing.T) {
	var l latches
	l.observe("JetStream failed to store a msg on stream '$G > OUTPOST_UP': no space left on device")
	if len(l.list()) != 0 {
		t.Fatalf("latched from a line that is not a store's critical write error: %v", l.list())
	}
	l.observe("Filestore [$MQTT_msgs] Critical write error: write /x/1.blk: no space left on device")
	l.observe("Filestore [$MQTT_msgs] Critical write error: a later one")
	got := l.list()
	if len(got) != 1 || got["$MQTT_msgs"] != "write /x/1.blk: no space left on device" {
		t.Fatalf("latches = %v", got)
	}
	l.reset()
	if len(l.list()) != 0 {
		t.Fatalf("latches after reset = %v", l.list())
	}
}

// ReloadJetStream recovers the account's streams and durable consumers
// from disk without stopping the server: the messages are all there, the
// stream takes writes again, the client connection stays up, and the
// faults the log reported are cleared.
func TestReloadJetStreamKeepsData(t *testing.T) {
	ctx := context.Background()
	b, err := Start(ctx, Config{Host: "127.0.0.1", NATSPort: -1, MQTTPort: -1, StoreDir: t.TempDir(), MaxPayload: 1 << 20},
		slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	nc, err := nats.Connect(b.NATSURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "UP", Subjects: []string{"up.>"}, Storage: jetstream.FileStorage})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if _, err := js.Publish(ctx, "up.a", fmt.Appendf(nil, "m%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	c, err := s.CreateConsumer(ctx, jetstream.ConsumerConfig{Durable: "d", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := c.FetchNoWait(4)
	if err != nil {
		t.Fatal(err)
	}
	for m := range batch.Messages() {
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if faults := b.StoreFaults(); len(faults) != 0 {
		t.Fatalf("faults before any error: %v", faults)
	}
	b.latches.observe("Filestore [UP] Critical write error: write up/1.blk: no space left on device")
	faults := b.StoreFaults()
	if len(faults) != 1 || faults[0].Stream != "UP" {
		t.Fatalf("faults after a critical write error = %v", faults)
	}
	if err := b.ReloadJetStream(faults); err != nil {
		t.Fatal(err)
	}
	if faults := b.StoreFaults(); len(faults) != 0 {
		t.Fatalf("faults after the reload: %v", faults)
	}
	if _, err := js.Publish(ctx, "up.a", []byte("after")); err != nil {
		t.Fatalf("publish after the reload: %v", err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 11 {
		t.Fatalf("stream holds %d messages after the reload, want 11", info.State.Msgs)
	}
	ci, err := s.Consumer(ctx, "d")
	if err != nil {
		t.Fatalf("durable consumer after the reload: %v", err)
	}
	if got := ci.CachedInfo().AckFloor.Stream; got != 4 {
		t.Fatalf("consumer ack floor after the reload = %d, want 4", got)
	}
	if !nc.IsConnected() || nc.Stats().Reconnects != 0 {
		t.Fatalf("the client connection did not stay up (connected %v, %d reconnects)", nc.IsConnected(), nc.Stats().Reconnects)
	}
}

// A JetStream the server shut down (as it does on some storage errors) is
// a fault, and ReloadJetStream enables it again with the stream intact.
func TestReloadJetStreamAfterShutdown(t *testing.T) {
	ctx := context.Background()
	b, err := Start(ctx, Config{Host: "127.0.0.1", NATSPort: -1, MQTTPort: -1, StoreDir: t.TempDir(), MaxPayload: 1 << 20},
		slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	nc, err := nats.Connect(b.NATSURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "UP", Subjects: []string{"up.>"}, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "up.a", []byte("before")); err != nil {
		t.Fatal(err)
	}
	if err := b.Server().ShutdownJetStream(); err != nil {
		t.Fatal(err)
	}
	faults := b.StoreFaults()
	if len(faults) != 1 || faults[0].Stream != "" {
		t.Fatalf("faults with JetStream shut down = %v", faults)
	}
	if err := b.ReloadJetStream(faults); err != nil {
		t.Fatal(err)
	}
	if faults := b.StoreFaults(); len(faults) != 0 {
		t.Fatalf("faults after the reload: %v", faults)
	}
	if _, err := js.Publish(ctx, "up.a", []byte("after")); err != nil {
		t.Fatalf("publish after the reload: %v", err)
	}
	s, err := js.Stream(ctx, "UP")
	if err != nil {
		t.Fatal(err)
	}
	if n := s.CachedInfo().State.Msgs; n != 2 {
		t.Fatalf("stream holds %d messages after the reload, want 2", n)
	}
}
