package pipeline

import (
	"context"
	"net/http"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-edge/outpost/hub"
	"github.com/outpost-edge/outpost/hub/ingest"
	"github.com/outpost-edge/outpost/test/kafkatest"
)

func mqttClient(h *hub.Hub, id, user, pass string, lost chan<- error) mqtt.Client {
	o := mqtt.NewClientOptions().AddBroker("tcp://" + h.MQTTAddr()).SetClientID(id).
		SetUsername(user).SetPassword(pass).SetAutoReconnect(false).SetConnectTimeout(3 * time.Second)
	if lost != nil {
		o.SetConnectionLostHandler(func(_ mqtt.Client, err error) { lost <- err })
	}
	return mqtt.NewClient(o)
}

func connect(c mqtt.Client) error {
	tok := c.Connect()
	tok.WaitTimeout(5 * time.Second)
	return tok.Error()
}

// storedOn counts what OUTPOST_UP holds on one subject.
func storedOn(t *testing.T, h *hub.Hub, subject string) uint64 {
	t.Helper()
	user, pass := h.Registry().Internal()
	nc, err := nats.Connect(h.NATSURL(), nats.UserInfo(user, pass))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	s, err := js.Stream(context.Background(), ingest.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background(), jetstream.WithSubjectFilter(subject))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Subjects[subject]
}

func TestDeviceAuthentication(t *testing.T) {
	cfg := hubConfig(t, kafkatest.Brokers(t), t.TempDir())
	h := startHub(t, cfg)
	defer h.Close()
	ctx := context.Background()
	a, err := h.Registry().Add(ctx, "dev-a", map[string]string{"site": "north"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Registry().Add(ctx, "dev-b", nil); err != nil {
		t.Fatal(err)
	}

	t.Run("unknown device and wrong secret are refused", func(t *testing.T) {
		before := h.Stats().AuthRefused
		if err := connect(mqttClient(h, "ghost", "ghost", "whatever", nil)); err == nil {
			t.Fatal("unknown device connected")
		}
		if err := connect(mqttClient(h, "dev-a", "dev-a", "not-the-secret", nil)); err == nil {
			t.Fatal("wrong secret connected")
		}
		if err := connect(mqttClient(h, "anon", "", "", nil)); err == nil {
			t.Fatal("anonymous client connected")
		}
		if got := h.Stats().AuthRefused - before; got != 3 {
			t.Fatalf("refused counter rose by %d, want 3", got)
		}
	})

	t.Run("a device stays inside its own prefix", func(t *testing.T) {
		c := mqttClient(h, "dev-a", a.Username, a.Password, nil)
		if err := connect(c); err != nil {
			t.Fatal(err)
		}
		defer c.Disconnect(100)
		tok := c.Subscribe("#", 1, func(mqtt.Client, mqtt.Message) {})
		tok.WaitTimeout(5 * time.Second)
		if res := tok.(*mqtt.SubscribeToken).Result()["#"]; res != 0x80 {
			t.Fatalf("subscribe # returned %#x, want failure 0x80", res)
		}
		tok = c.Subscribe("outpost/v1/dev-b/ack", 1, func(mqtt.Client, mqtt.Message) {})
		tok.WaitTimeout(5 * time.Second)
		if res := tok.(*mqtt.SubscribeToken).Result()["outpost/v1/dev-b/ack"]; res != 0x80 {
			t.Fatalf("subscribe to dev-b's acks returned %#x, want 0x80", res)
		}
		body := `{"v":1,"device":"dev-b","stream":"windows","records":[{"seq":1,"event_time":"2026-01-01T00:00:00Z","data":{}}]}`
		c.Publish("outpost/v1/dev-b/up/windows", 1, false, body).WaitTimeout(3 * time.Second)
		time.Sleep(500 * time.Millisecond)
		if n := storedOn(t, h, "outpost.v1.dev-b.up.windows"); n != 0 {
			t.Fatalf("dev-a stored %d messages under dev-b's prefix", n)
		}
	})

	t.Run("a revoked device is disconnected and refused", func(t *testing.T) {
		lost := make(chan error, 1)
		c := mqttClient(h, "dev-a", a.Username, a.Password, lost)
		if err := connect(c); err != nil {
			t.Fatal(err)
		}
		resp, err := http.Post("http://"+h.HTTPAddr()+"/v1/devices/dev-a/revoke", "application/json", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			t.Fatalf("revoke: %s", resp.Status)
		}
		select {
		case <-lost:
		case <-time.After(10 * time.Second):
			t.Fatal("revoked device still connected")
		}
		if err := connect(mqttClient(h, "dev-a", a.Username, a.Password, nil)); err == nil {
			t.Fatal("revoked device reconnected")
		}
	})
}

func TestAdminTokenGuardsTheAPI(t *testing.T) {
	cfg := hubConfig(t, kafkatest.Brokers(t), t.TempDir())
	cfg.HTTP.AdminToken = "s3cret"
	h := startHub(t, cfg)
	defer h.Close()
	for _, tt := range []struct {
		auth string
		want int
	}{
		{"", http.StatusUnauthorized},
		{"Bearer wrong", http.StatusUnauthorized},
		{"Bearer s3cret", http.StatusOK},
	} {
		req, _ := http.NewRequest(http.MethodGet, "http://"+h.HTTPAddr()+"/v1/devices", nil)
		if tt.auth != "" {
			req.Header.Set("Authorization", tt.auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tt.want {
			t.Errorf("Authorization %q: %s, want %d", tt.auth, resp.Status, tt.want)
		}
	}
	// Health stays open for load balancers and probes.
	resp, err := http.Get("http://" + h.HTTPAddr() + "/healthz")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("healthz: %v %v", resp, err)
	}
	resp.Body.Close()
}

// TestHubAuthenticatesToKafka runs the hub against the broker's SASL/PLAIN
// listener: with the right credentials records flow exactly once; with a
// wrong password the hub refuses to start and says why.
func TestHubAuthenticatesToKafka(t *testing.T) {
	plainBrokers := kafkatest.Brokers(t)
	cfg := hubConfig(t, kafkatest.SASLBrokers(t), t.TempDir())
	cfg.Kafka.SASL.Mechanism, cfg.Kafka.SASL.Username, cfg.Kafka.SASL.Password = "plain", kafkatest.SASLUser, "wrong"
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if h, err := hub.Start(ctx, cfg, testLogger(t)); err == nil {
		h.Close()
		t.Fatal("hub started with a wrong Kafka password")
	}

	cfg = hubConfig(t, kafkatest.SASLBrokers(t), t.TempDir())
	cfg.Kafka.SASL.Mechanism, cfg.Kafka.SASL.Username, cfg.Kafka.SASL.Password = "plain", kafkatest.SASLUser, kafkatest.SASLPassword
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	h := startHub(t, cfg)
	defer h.Close()
	d := newDevice(t, h, "sasl-dev", "tcp://"+h.MQTTAddr())
	d.Produce(t, "events", 300, 50, 10*time.Millisecond)
	d.WaitDrained(t, 60*time.Second)
	recs, _ := readAll(t, plainBrokers, []string{cfg.Kafka.TopicPrefix + "events"}, 300, 60*time.Second)
	checkExactlyOnce(t, recs, []string{"sasl-dev"}, 300)
}

// TestHubConnectsToKafkaOverMutualTLS runs the hub against the broker's
// SSL listener, which requires a client certificate: without one the hub
// refuses to start; with the test CA's client pair records flow exactly
// once.
func TestHubConnectsToKafkaOverMutualTLS(t *testing.T) {
	plainBrokers := kafkatest.Brokers(t)
	tlsBrokers, files := kafkatest.TLSBrokers(t)

	cfg := hubConfig(t, tlsBrokers, t.TempDir())
	cfg.Kafka.TLS.CAFile = files.CAFile // verifies the broker, but presents no certificate
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	h, err := hub.Start(ctx, cfg, testLogger(t))
	if err == nil {
		h.Close()
		t.Fatal("hub started without the client certificate the broker requires")
	}
	t.Logf("refused as it should be: %v", err)

	cfg = hubConfig(t, tlsBrokers, t.TempDir())
	cfg.Kafka.TLS.CAFile, cfg.Kafka.TLS.CertFile, cfg.Kafka.TLS.KeyFile = files.CAFile, files.CertFile, files.KeyFile
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	h = startHub(t, cfg)
	defer h.Close()
	d := newDevice(t, h, "tls-dev", "tcp://"+h.MQTTAddr())
	d.Produce(t, "events", 300, 50, 10*time.Millisecond)
	d.WaitDrained(t, 60*time.Second)
	recs, _ := readAll(t, plainBrokers, []string{cfg.Kafka.TopicPrefix + "events"}, 300, 60*time.Second)
	checkExactlyOnce(t, recs, []string{"tls-dev"}, 300)
}

// TestClientIDIsBoundToDevice: a device with valid credentials of its own
// connects with another device's client id. The broker would replace the
// other device's session; the hub refuses the connection instead, and the
// other device stays connected.
func TestClientIDIsBoundToDevice(t *testing.T) {
	cfg := hubConfig(t, kafkatest.Brokers(t), t.TempDir())
	h := startHub(t, cfg)
	defer h.Close()
	ctx := context.Background()
	good, err := h.Registry().Add(ctx, "good-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	bad, err := h.Registry().Add(ctx, "hostile-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	lost := make(chan error, 10)
	victim := mqttClient(h, "good-1", good.Username, good.Password, lost)
	if err := connect(victim); err != nil {
		t.Fatal(err)
	}
	defer victim.Disconnect(100)
	refusedBefore := h.Stats().AuthRefused
	for i := 0; i < 5; i++ {
		c := mqttClient(h, "good-1", bad.Username, bad.Password, nil)
		if err := connect(c); err == nil {
			c.Disconnect(100)
			t.Fatal("a device connected with another device's client id")
		}
	}
	// Its own id still works, and an id of its own with a suffix does not.
	own := mqttClient(h, "hostile-1", bad.Username, bad.Password, nil)
	if err := connect(own); err != nil {
		t.Fatalf("the device's own client id was refused: %v", err)
	}
	own.Disconnect(100)
	if err := connect(mqttClient(h, "hostile-1-x", bad.Username, bad.Password, nil)); err == nil {
		t.Fatal("a client id other than the device id was accepted")
	}
	select {
	case err := <-lost:
		t.Fatalf("the good device was dropped: %v", err)
	case <-time.After(time.Second):
	}
	if !victim.IsConnectionOpen() {
		t.Fatal("the good device is no longer connected")
	}
	if got := h.Stats().AuthRefused - refusedBefore; got != 6 {
		t.Errorf("%d refusals counted, want 6", got)
	}
}
