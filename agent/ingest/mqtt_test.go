package ingest

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/outpost-edge/outpost/deploy/config"
	"github.com/outpost-edge/outpost/test/mqtttest"
	"github.com/outpost-edge/outpost/test/natstest"
	"github.com/outpost-edge/outpost/test/pki"
)

// runMQTT starts the MQTT source; stop disconnects it like an agent that
// dies before committing.
func runMQTT(t *testing.T, c SourceConfig) (out chan Line, stop func()) {
	t.Helper()
	run, err := Open(c, 0, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	out = make(chan Line, 100)
	done := make(chan struct{})
	go func() { defer close(done); _ = run(ctx, out) }()
	stop = func() { cancel(); <-done }
	t.Cleanup(stop)
	return out, stop
}

func next(t *testing.T, out <-chan Line) Line {
	t.Helper()
	select {
	case l := <-out:
		return l
	case <-time.After(15 * time.Second):
		t.Fatal("no line within 15s")
		return Line{}
	}
}

// TestMQTTSourceRedeliversWhatWasNotAcked: the source acknowledges a
// message only when the pipeline says it is committed. Messages read but
// not acknowledged when the agent goes away come back on the next start
// (same client id, persistent session); acknowledged ones do not.
func TestMQTTSourceRedeliversWhatWasNotAcked(t *testing.T) {
	for _, proto := range []string{"", "3.1.1"} {
		t.Run("protocol="+proto, func(t *testing.T) { testRedelivery(t, proto, mqtttest.New(t).URL, config.ClientTLS{}) })
	}
}

// The same over TLS, against a Mosquitto that asks every client for a
// certificate signed by the test CA (mTLS): the agent verifies the broker
// with tls.ca_file and presents tls.cert_file.
func TestMQTTSourceOverTLS(t *testing.T) {
	b, tc := tlsBroker(t)
	for _, proto := range []string{"", "3.1.1"} {
		t.Run("protocol="+proto, func(t *testing.T) { testRedelivery(t, proto, b.URL, tc) })
	}
}

// tlsBroker starts a Mosquitto on ssl:// that requires client
// certificates, and returns the TLS settings of a client it accepts.
func tlsBroker(t *testing.T) (*mqtttest.Broker, config.ClientTLS) {
	t.Helper()
	ca, err := pki.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	srvCert, srvKey, err := ca.Issue("mosquitto", true)
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := ca.Issue("agent", false)
	if err != nil {
		t.Fatal(err)
	}
	b, err := mqtttest.StartTLS(context.Background(), t.TempDir(), mqtttest.Raised,
		mqtttest.TLS{CAFile: ca.CAFile, CertFile: srvCert, KeyFile: srvKey, RequireCertificate: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Stop)
	return b, config.ClientTLS{CAFile: ca.CAFile, CertFile: cert, KeyFile: key}
}

func testRedelivery(t *testing.T, proto, url string, tc config.ClientTLS) {
	cfg := SourceConfig{Type: "mqtt", MQTT: MQTTConfig{URL: url, Topic: "sensors/#", ClientID: "ack-test", Protocol: proto, TLS: tc}}
	ptc, err := tc.Build()
	if err != nil {
		t.Fatal(err)
	}
	pub := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(url).SetClientID("ack-test-pub").SetTLSConfig(ptc))
	if tok := pub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer pub.Disconnect(100)
	publish := func(payload string) {
		t.Helper()
		if tok := pub.Publish("sensors/a", 1, false, payload); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatal(tok.Error())
		}
	}

	out, stop := runMQTT(t, cfg)
	// Probe until the subscription is in place, acknowledging the probes.
	for i := 0; ; i++ {
		publish(fmt.Sprintf("probe %d", i))
		select {
		case l := <-out:
			l.Ack()
		case <-time.After(200 * time.Millisecond):
			continue
		}
		break
	}
	for len(out) > 0 || func() bool { time.Sleep(300 * time.Millisecond); return len(out) > 0 }() {
		(<-out).Ack() // late probes
	}
	publish("m1\nm1b") // two lines: the ack rides on the last
	publish("m2")
	publish("m3")
	first, second := next(t, out), next(t, out)
	if string(first.Data) != "m1" || first.Ack != nil || string(second.Data) != "m1b" || second.Ack == nil {
		t.Fatalf("lines %q (ack %v), %q (ack %v): want m1 without an ack, m1b with it", first.Data, first.Ack != nil, second.Data, second.Ack != nil)
	}
	second.Ack()
	for _, want := range []string{"m2", "m3"} {
		if l := next(t, out); string(l.Data) != want {
			t.Fatalf("line %q, want %q", l.Data, want)
		}
	}
	stop() // m2 and m3 read, never acknowledged

	out, stop = runMQTT(t, cfg)
	for _, want := range []string{"m2", "m3"} {
		l := next(t, out)
		if string(l.Data) != want {
			t.Fatalf("after restart: line %q, want %q (redelivered, and m1 not)", l.Data, want)
		}
		l.Ack()
	}
	stop()

	// m1 was acknowledged long before any stop: it never comes back. m2 and
	// m3 were acknowledged just before a stop; an ack still in flight when
	// the connection closes is redelivered (at least once), so they may.
	out, _ = runMQTT(t, cfg)
	publish("m4")
	for {
		l := next(t, out)
		switch string(l.Data) {
		case "m4":
			return
		case "m1", "m1b":
			t.Fatalf("third start: %q came back although it was acknowledged in the first run", l.Data)
		default:
			t.Logf("third start: %q redelivered (its ack raced the stop)", l.Data)
			if l.Ack != nil {
				l.Ack()
			}
		}
	}
}

// publisher connects a 3.1.1 publisher to url.
func publisher(t *testing.T, url string) func(topic, payload string) {
	t.Helper()
	pub := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(url).SetClientID(fmt.Sprintf("pub-%d", time.Now().UnixNano())))
	if tok := pub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	t.Cleanup(func() { pub.Disconnect(100) })
	return func(topic, payload string) {
		t.Helper()
		if tok := pub.Publish(topic, 1, false, payload); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatal(tok.Error())
		}
	}
}

// Against a Mosquitto at its default in-flight limit (20), the source
// asks over MQTT 5 for a window of 2000 (Receive Maximum), receives that
// many messages before acknowledging any, and tells the pipeline to
// commit at half of it. Over 3.1.1 the broker
// stops at 20, and the pipeline commits every 16.
func TestMQTTFiveWindowAgainstADefaultMosquitto(t *testing.T) {
	b, err := mqtttest.StartWith(context.Background(), t.TempDir(), mqtttest.Defaults)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Stop)
	publish := publisher(t, b.URL)
	for _, c := range []struct {
		proto              string
		window, deliverMax int
	}{{"", DefaultWindow5 / 2, DefaultWindow5}, {"3.1.1", DefaultWindow311, 20}} {
		t.Run("protocol="+c.proto, func(t *testing.T) {
			cfg := SourceConfig{Type: "mqtt", MQTT: MQTTConfig{URL: b.URL, Topic: "w/" + c.proto + "/#", ClientID: "window-" + c.proto, Protocol: c.proto}}
			window := make(chan int, 10)
			run, err := Open(cfg, 0, slog.New(slog.DiscardHandler), func(n int) { window <- n })
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			out := make(chan Line, c.deliverMax+200)
			done := make(chan struct{})
			go func() { defer close(done); _ = run(ctx, out) }()
			defer func() { cancel(); <-done }()
			select {
			case n := <-window:
				if n != c.window {
					t.Fatalf("window %d, want %d", n, c.window)
				}
			case <-time.After(15 * time.Second):
				t.Fatal("no connection within 15s")
			}
			time.Sleep(300 * time.Millisecond) // the subscription is in place
			for i := range c.deliverMax + 100 {
				publish("w/"+c.proto+"/s", fmt.Sprint(i))
			}
			// Nothing is acknowledged: the broker delivers its window, then stops.
			got := 0
			for got < c.deliverMax {
				next(t, out)
				got++
			}
			select {
			case l := <-out:
				t.Fatalf("message %q beyond the window of %d unacknowledged", l.Data, c.deliverMax)
			case <-time.After(500 * time.Millisecond):
			}
		})
	}
}

// A broker that speaks only MQTT 3.1.1 (the hub's embedded NATS) refuses
// the MQTT 5 CONNECT; the source falls back and reads over 3.1.1 with the
// 3.1.1 window.
func TestMQTTFallsBackToThreeOneOne(t *testing.T) {
	nb := natstest.New(t)
	url := "tcp://" + nb.MQTTAddr()
	cfg := SourceConfig{Type: "mqtt", MQTT: MQTTConfig{URL: url, Topic: "sensors/#", ClientID: "fallback"}}
	window := make(chan int, 10)
	run, err := Open(cfg, 0, slog.New(slog.DiscardHandler), func(n int) { window <- n })
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan Line, 100)
	done := make(chan struct{})
	go func() { defer close(done); _ = run(ctx, out) }()
	defer func() { cancel(); <-done }()
	select {
	case n := <-window:
		if n != DefaultWindow311 {
			t.Fatalf("window %d, want %d", n, DefaultWindow311)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no connection within 20s")
	}
	publish := publisher(t, url)
	for i := 0; ; i++ {
		publish("sensors/a", fmt.Sprintf("probe %d", i))
		select {
		case l := <-out:
			l.Ack()
			return
		case <-time.After(300 * time.Millisecond):
		}
		if i > 50 {
			t.Fatal("nothing read over the fallback")
		}
	}
}

// A broker whose certificate the agent cannot verify is refused over
// either protocol, and the log says why while the source keeps retrying.
func TestMQTTSourceRefusesABrokerItCannotVerify(t *testing.T) {
	b, tc := tlsBroker(t)
	other, err := pki.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	tc.CAFile = other.CAFile // a CA that did not sign the broker's certificate
	for _, proto := range []string{"5", "3.1.1"} {
		t.Run("protocol="+proto, func(t *testing.T) {
			logs := make(chan string, 100)
			log := slog.New(slog.NewTextHandler(chanWriter(logs), nil))
			cfg := SourceConfig{Type: "mqtt", MQTT: MQTTConfig{URL: b.URL, Topic: "s/#", ClientID: "unverified-" + proto, Protocol: proto, TLS: tc}}
			run, err := Open(cfg, 0, log, func(int) { t.Error("connected to a broker it cannot verify") })
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { defer close(done); _ = run(ctx, make(chan Line, 1)) }()
			defer func() { cancel(); <-done }()
			for deadline := time.After(15 * time.Second); ; {
				select {
				case l := <-logs:
					if strings.Contains(l, "ingest: mqtt connect") && strings.Contains(l, "certificate signed by unknown authority") {
						return
					}
				case <-deadline:
					t.Fatal("no log of the refused certificate within 15s")
				}
			}
		})
	}
}

// chanWriter sends each log line to a channel, dropping lines when full.
type chanWriter chan<- string

func (w chanWriter) Write(p []byte) (int, error) {
	select {
	case w <- string(p):
	default:
	}
	return len(p), nil
}
