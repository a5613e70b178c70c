package pipeline

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/firmware/enrol"
	"github.com/outpost-edge/outpost/hub"
	"github.com/outpost-edge/outpost/hub/ctl"
	"github.com/outpost-edge/outpost/test/kafkatest"
)

// issueToken runs `outpostctl device token` against h and returns the token.
func issueToken(t *testing.T, h *hub.Hub, args ...string) string {
	t.Helper()
	var out, errOut bytes.Buffer
	argv := append([]string{"--hub", "http://" + h.HTTPAddr(), "device", "token"}, args...)
	if rc := ctl.Main(context.Background(), argv, &out, &errOut); rc != 0 {
		t.Fatalf("outpostctl device token: rc %d: %s", rc, errOut.String())
	}
	return strings.TrimSpace(out.String())
}

// tokenDevice is a fresh device data directory with a flashed token.
func tokenDevice(t *testing.T, h *hub.Hub, token, proposed string) (enrol.Request, string) {
	t.Helper()
	dir := t.TempDir()
	tf := filepath.Join(dir, "enrol.token")
	if err := os.WriteFile(tf, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return enrol.Request{URL: "http://" + h.HTTPAddr(), TokenFile: tf, Device: proposed, Arch: "arm64", Accelerator: "cpu", AgentVersion: "test"}, dir
}

func TestEnrolmentWithOneTimeTokens(t *testing.T) {
	cfg := hubConfig(t, kafkatest.Brokers(t), t.TempDir())
	h := startHub(t, cfg)
	defer h.Close()
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	client := &http.Client{Timeout: 10 * time.Second}

	tok := issueToken(t, h, "--label", "site=north", "--ttl", "1h")
	req, dir := tokenDevice(t, h, tok, "")
	e, err := enrol.Ensure(ctx, log, client, dir, req)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(e.Device, "dev-") || e.Labels["site"] != "north" || e.Labels["arch"] != "arm64" || e.Labels["accelerator"] != "cpu" {
		t.Fatalf("enrolment %+v: want a key-derived id and labels site, arch, accelerator", e)
	}
	if _, err := os.Stat(req.TokenFile); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("spent token file still on the device: %v", err)
	}
	if fi, err := os.Stat(filepath.Join(dir, enrol.CredentialsFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("credentials file: %v %v", fi, err)
	}
	c := mqttClient(h, e.Device, e.Username, e.Password, nil)
	if err := connect(c); err != nil {
		t.Fatalf("enrolled device cannot connect: %v", err)
	}
	c.Disconnect(100)

	t.Run("a later boot reads its credentials back", func(t *testing.T) {
		again, err := enrol.Ensure(ctx, log, client, dir, req)
		if err != nil || again.Device != e.Device || again.Password != e.Password {
			t.Fatalf("second boot: %+v, %v", again, err)
		}
	})

	t.Run("a reused token is refused", func(t *testing.T) {
		before := h.Stats().EnrolRefused
		req2, dir2 := tokenDevice(t, h, tok, "")
		_, err := enrol.Ensure(ctx, log, client, dir2, req2)
		if !errors.Is(err, enrol.ErrRefused) || !strings.Contains(err.Error(), "already used") {
			t.Fatalf("reused token: %v, want refused: already used", err)
		}
		if h.Stats().EnrolRefused != before+1 {
			t.Fatal("refused enrolment not counted")
		}
	})

	t.Run("an unknown or expired token is refused", func(t *testing.T) {
		req2, dir2 := tokenDevice(t, h, "opt_not-a-token", "")
		if _, err := enrol.Ensure(ctx, log, client, dir2, req2); !errors.Is(err, enrol.ErrRefused) {
			t.Fatalf("unknown token: %v", err)
		}
		short := issueToken(t, h, "--ttl", "1ms")
		time.Sleep(5 * time.Millisecond)
		req3, dir3 := tokenDevice(t, h, short, "")
		if _, err := enrol.Ensure(ctx, log, client, dir3, req3); !errors.Is(err, enrol.ErrRefused) || !strings.Contains(err.Error(), "expired") {
			t.Fatalf("expired token: %v", err)
		}
	})

	t.Run("an open token cannot take an enrolled id; a bound one re-enrols it", func(t *testing.T) {
		req2, dir2 := tokenDevice(t, h, issueToken(t, h), e.Device)
		if _, err := enrol.Ensure(ctx, log, client, dir2, req2); !errors.Is(err, enrol.ErrRefused) || !strings.Contains(err.Error(), "already enrolled") {
			t.Fatalf("taking %s: %v", e.Device, err)
		}
		req3, dir3 := tokenDevice(t, h, issueToken(t, h, "--device", e.Device), "")
		e3, err := enrol.Ensure(ctx, log, client, dir3, req3)
		if err != nil || e3.Device != e.Device {
			t.Fatalf("re-enrolment with a bound token: %+v %v", e3, err)
		}
		// The old secret is gone with the re-enrolment.
		if err := connect(mqttClient(h, e.Device, e.Username, e.Password, nil)); err == nil {
			t.Fatal("the replaced secret still connects")
		}
	})

	t.Run("two devices racing with one token: one enrols", func(t *testing.T) {
		race := issueToken(t, h)
		var wg sync.WaitGroup
		errs := make([]error, 4)
		for i := range errs {
			r, d := tokenDevice(t, h, race, "")
			wg.Add(1)
			go func() { defer wg.Done(); _, errs[i] = enrol.Ensure(ctx, log, client, d, r) }()
		}
		wg.Wait()
		won := 0
		for _, err := range errs {
			if err == nil {
				won++
			} else if !errors.Is(err, enrol.ErrRefused) {
				t.Fatalf("racing enrolment: %v", err)
			}
		}
		if won != 1 {
			t.Fatalf("%d devices enrolled with one token, want 1", won)
		}
	})

	t.Run("a revoked device is refused", func(t *testing.T) {
		req2, dir2 := tokenDevice(t, h, issueToken(t, h), "revoke-me")
		e2, err := enrol.Ensure(ctx, log, client, dir2, req2)
		if err != nil {
			t.Fatal(err)
		}
		var out, errOut bytes.Buffer
		if rc := ctl.Main(ctx, []string{"--hub", "http://" + h.HTTPAddr(), "device", "revoke", e2.Device}, &out, &errOut); rc != 0 {
			t.Fatalf("revoke: %s", errOut.String())
		}
		if err := connect(mqttClient(h, e2.Device, e2.Username, e2.Password, nil)); err == nil {
			t.Fatal("revoked device connected")
		}
	})
}
