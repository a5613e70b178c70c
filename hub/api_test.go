package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/hub/trainer"
	"github.com/outpost-edge/outpost/sync/state"
)

// A malformed id in any API path is a 400 with the reason, not a store's
// 500 ("nats: invalid key"); a well-formed unknown one stays a 404.
func TestMalformedPathIDsAre400(t *testing.T) {
	cfg := Defaults()
	cfg.DataDir = t.TempDir()
	cfg.Broker.ServerName = "api-test"
	cfg.Broker.NATSPort, cfg.Broker.MQTTPort = -1, -1
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.Log.Level = "warn"
	h, err := Start(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	base := "http://" + h.HTTPAddr()
	for _, c := range []struct {
		method, path string
		want         int
	}{
		{"GET", "/v1/rollouts/bad%20id", http.StatusBadRequest},
		{"GET", "/v1/rollouts/.hidden", http.StatusBadRequest},
		{"GET", "/v1/rollouts/no-such-rollout", http.StatusNotFound},
		{"POST", "/v1/rollouts/bad%2Aid/pause", http.StatusBadRequest},
		{"GET", "/v1/devices/bad%20id/desired", http.StatusBadRequest},
		{"POST", "/v1/devices/bad%20id/revoke", http.StatusBadRequest},
		{"GET", "/v1/devices/bad%20id", http.StatusBadRequest},
		{"GET", "/v1/devices/no-such-device", http.StatusNotFound},
		{"GET", "/v1/devices/no-such-device?limit=0", http.StatusBadRequest},
		{"GET", "/v1/devices/no-such-device?offset=-1", http.StatusBadRequest},
		{"POST", "/v1/devices/no-such-device/revoke", http.StatusNotFound},
		{"GET", "/v1/models/bad%20name", http.StatusBadRequest},
		{"GET", "/v1/train/bad%20model/history", http.StatusBadRequest},
	} {
		req, _ := http.NewRequest(c.method, base+c.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("%s %s: %d, want %d", c.method, c.path, resp.StatusCode, c.want)
		}
	}
}

// The development Kafka listens on kafka.embedded_port, and /v1/stats
// and /healthz say where, so a demo's consumers need not read the log.
func TestStatsShowTheEmbeddedKafka(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cfg := Defaults()
	cfg.DataDir = t.TempDir()
	cfg.Broker.ServerName = "stats-test"
	cfg.Broker.NATSPort, cfg.Broker.MQTTPort = -1, -1
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.Kafka.EmbeddedPort = port
	h, err := Start(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	want := fmt.Sprintf("127.0.0.1:%d", port)
	for _, path := range []string{"/v1/stats", "/healthz"} {
		resp, err := http.Get("http://" + h.HTTPAddr() + path)
		if err != nil {
			t.Fatal(err)
		}
		var body struct {
			Brokers []string `json:"kafka_brokers"`
		}
		err = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if err != nil || len(body.Brokers) != 1 || body.Brokers[0] != want {
			t.Fatalf("%s: kafka_brokers %v (%v), want [%s]", path, body.Brokers, err, want)
		}
	}
}

// A list answer is [] when empty, never null, as the OpenAPI document
// says: GET /v1/train of a hub that trains nothing, GET /v1/rollouts
// before the first.
func TestEmptyListsAreArrays(t *testing.T) {
	rec := httptest.NewRecorder()
	writeJSON(rec, http.StatusOK, []trainer.Status(nil))
	if got := strings.TrimSpace(rec.Body.String()); got != "[]" {
		t.Fatalf("nil list written as %s, want []", got)
	}
}

// GET /v1/devices pages by id, after the label filter.
func TestPageDevices(t *testing.T) {
	var devs []state.Device
	for i := range 25 {
		devs = append(devs, state.Device{ID: fmt.Sprintf("d%02d", i), Labels: map[string]string{"site": fmt.Sprint(i % 2)}})
	}
	q := func(s string) url.Values { v, _ := url.ParseQuery(s); return v }
	page, total, err := pageDevices(slices.Clone(devs), q("labels=site%3D1&limit=5&offset=10"))
	if err != nil || total != 12 || len(page) != 2 || page[0].ID != "d21" || page[1].ID != "d23" {
		t.Fatalf("odd devices from 10: %v total %d %v", page, total, err)
	}
	if page, total, _ = pageDevices(slices.Clone(devs), q("")); len(page) != 25 || total != 25 {
		t.Fatalf("no paging: %d of %d", len(page), total)
	}
	if page, _, _ = pageDevices(slices.Clone(devs), q("offset=30")); page == nil || len(page) != 0 {
		t.Fatalf("past the end: %v", page)
	}
	for _, bad := range []string{"limit=0", "limit=1001", "offset=-1", "limit=x", "labels=site"} {
		if _, _, err := pageDevices(slices.Clone(devs), q(bad)); !errors.Is(err, errBadQuery) {
			t.Errorf("%s: %v", bad, err)
		}
	}
}

// A hub whose HTTP port another process holds says so at once. It used to
// bind that port last, after waiting for its cluster's quorum: a member
// started before its peers sat for as long as they took (21 s in CI) and
// then stopped, and in that time the port it was given had been taken.
func TestTakenHTTPPortStopsTheStartAtOnce(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	absent, err := net.Listen("tcp", "127.0.0.1:0") // the peers' route ports: closed, nobody answers
	if err != nil {
		t.Fatal(err)
	}
	peer := absent.Addr().String()
	absent.Close()
	cfg := Defaults()
	cfg.DataDir = t.TempDir()
	cfg.Broker.ServerName = "taken-port-test"
	cfg.Broker.NATSPort, cfg.Broker.MQTTPort = -1, -1
	cfg.Broker.Cluster.Name = "taken"
	cfg.Broker.Cluster.Secret = "test-only-route-secret"
	cfg.Broker.Cluster.Port = -1
	cfg.Broker.Cluster.Routes = []string{peer, peer}
	cfg.Ingest.Replicas = 3
	cfg.HTTP.Listen = taken.Addr().String()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	h, err := Start(ctx, cfg, slog.New(slog.DiscardHandler))
	if err == nil {
		h.Close()
		t.Fatal("the hub started on a port another process holds")
	}
	if !errors.Is(err, syscall.EADDRINUSE) || ctx.Err() != nil {
		t.Fatalf("want the taken port's error before the cluster wait, got %v (context: %v)", err, ctx.Err())
	}
}
