// Package enrol is the device side of enrolment: on first boot the agent
// makes an ed25519 key pair, spends the one-time token its installer
// flashed, and keeps the credentials the hub returns. Later boots read
// them back and never touch the token again.
package enrol

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/outpost-edge/outpost/firmware/files"
	"github.com/outpost-edge/outpost/sync/state"
	"github.com/outpost-edge/outpost/sync/tuf"
)

// Files under the agent's data directory.
const (
	KeyFile         = "device.key"       // ed25519 seed, hex, 0600
	CredentialsFile = "credentials.json" // state.Enrolment, 0600
)

// Request describes this device to the hub.
type Request struct {
	URL          string // hub API base, e.g. https://hub:8080
	TokenFile    string
	Device       string // proposed id; may be empty
	Arch         string
	Accelerator  string
	AgentVersion string
}

// Ensure returns the device's enrolment: the stored one if the device has
// enrolled before, otherwise the result of enrolling now. It retries while
// the hub is unreachable or busy and gives up at once when the hub refuses
// (ErrRefused): a spent, expired or unknown token will not get better.
func Ensure(ctx context.Context, log *slog.Logger, client *http.Client, dataDir string, req Request) (state.Enrolment, error) {
	credPath := filepath.Join(dataDir, CredentialsFile)
	if e, err := load(credPath); err == nil {
		return e, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return state.Enrolment{}, err
	}
	if req.TokenFile == "" {
		return state.Enrolment{}, fmt.Errorf("enrol: %w: no %s and no enrolment token configured", ErrNotEnrolled, credPath)
	}
	raw, err := os.ReadFile(req.TokenFile)
	if err != nil {
		return state.Enrolment{}, fmt.Errorf("enrol: %w: token: %w", ErrNotEnrolled, err)
	}
	token := strings.TrimSpace(string(raw))
	key, err := loadOrMakeKey(filepath.Join(dataDir, KeyFile))
	if err != nil {
		return state.Enrolment{}, err
	}
	pub := key.Public().(ed25519.PublicKey)
	body, err := json.Marshal(state.EnrolRequest{
		Token: token, Device: req.Device, PublicKey: pub, Signature: ed25519.Sign(key, state.EnrolMessage(token, pub)),
		Arch: req.Arch, Accelerator: req.Accelerator, AgentVersion: req.AgentVersion,
	})
	if err != nil {
		return state.Enrolment{}, fmt.Errorf("enrol: encode: %w", err)
	}
	url := strings.TrimRight(req.URL, "/") + "/v1/enrol"
	log.Info("enrolling with the hub", "url", url, "key", state.KeyFingerprint(pub))
	var e state.Enrolment
	for wait := time.Second; ; wait = min(2*wait, time.Minute) {
		e, err = post(ctx, client, url, body)
		if err == nil || errors.Is(err, ErrRefused) {
			break
		}
		log.Warn("enrolment failed; retrying", "err", err, "in", wait)
		select {
		case <-ctx.Done():
			return state.Enrolment{}, fmt.Errorf("enrol: %w", ctx.Err())
		case <-time.After(wait):
		}
	}
	if err != nil {
		return state.Enrolment{}, err
	}
	if err := store(credPath, e); err != nil {
		return state.Enrolment{}, err
	}
	// The token is spent; removing it keeps a secret less on the device.
	if err := os.Remove(req.TokenFile); err != nil && !errors.Is(err, fs.ErrNotExist) {
		log.Warn("could not remove the spent enrolment token", "path", req.TokenFile, "err", err)
	}
	log.Info("enrolled", "device", e.Device, "labels", e.Labels)
	return e, nil
}

func post(ctx context.Context, client *http.Client, url string, body []byte) (state.Enrolment, error) {
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return state.Enrolment{}, fmt.Errorf("enrol: %w", err)
	}
	hr.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(hr)
	if err != nil {
		return state.Enrolment{}, fmt.Errorf("enrol: %w", err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	switch {
	case resp.StatusCode == http.StatusCreated:
		var e state.Enrolment
		if err := json.Unmarshal(data, &e); err != nil || e.Device == "" || e.Password == "" {
			return state.Enrolment{}, fmt.Errorf("enrol: undecodable answer from the hub: %q", data)
		}
		return e, nil
	case resp.StatusCode >= 400 && resp.StatusCode < 500:
		var m struct{ Error string }
		_ = json.Unmarshal(data, &m)
		return state.Enrolment{}, fmt.Errorf("enrol: %w: %s: %s", ErrRefused, resp.Status, m.Error)
	default:
		return state.Enrolment{}, fmt.Errorf("enrol: hub answered %s", resp.Status)
	}
}

func load(path string) (state.Enrolment, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return state.Enrolment{}, err
	}
	var e state.Enrolment
	if err := json.Unmarshal(data, &e); err != nil || e.Device == "" {
		return state.Enrolment{}, fmt.Errorf("enrol: %s is damaged (delete it and enrol with a new token): %v", path, err)
	}
	return e, nil
}

// loadOrMakeKey keeps one key across retries and restarts, so that a
// device interrupted mid-enrolment retries with the key it signed with.
func loadOrMakeKey(path string) (ed25519.PrivateKey, error) {
	if _, err := os.Stat(path); err == nil {
		return tuf.ReadKey(path)
	}
	key, err := tuf.GenerateKey()
	if err != nil {
		return nil, err
	}
	if err := tuf.WriteKey(path, key); err != nil {
		return nil, err
	}
	return key, files.SyncDir(filepath.Dir(path))
}

func store(path string, e state.Enrolment) error {
	data, err := json.MarshalIndent(e, "", "  ")
	if err != nil {
		return fmt.Errorf("enrol: encode: %w", err)
	}
	return files.WriteBytes(path, data, 0o600)
}

// Key reads the device key enrolment made in dataDir.
func Key(dataDir string) (ed25519.PrivateKey, error) {
	return tuf.ReadKey(filepath.Join(dataDir, KeyFile))
}

// Renew asks the hub at baseURL for a new certificate: it fetches a
// challenge, signs it with the device key, and posts the proof. A refusal
// (revoked device, wrong key) is ErrRefused. The caller stores the result
// (SaveCertificate).
func Renew(ctx context.Context, client *http.Client, baseURL, device string, key ed25519.PrivateKey) (state.Renewal, error) {
	base := strings.TrimRight(baseURL, "/")
	var ch state.Challenge
	if err := call(ctx, client, base+"/v1/certificates/challenge", nil, http.StatusOK, &ch); err != nil {
		return state.Renewal{}, err
	}
	body, err := json.Marshal(state.RenewRequest{Device: device, Challenge: ch.Challenge, Signature: ed25519.Sign(key, state.RenewMessage(device, ch.Challenge))})
	if err != nil {
		return state.Renewal{}, fmt.Errorf("enrol: encode: %w", err)
	}
	var rn state.Renewal
	if err := call(ctx, client, base+"/v1/certificates/renew", body, http.StatusOK, &rn); err != nil {
		return state.Renewal{}, err
	}
	if rn.Certificate == "" || rn.Device != device {
		return state.Renewal{}, fmt.Errorf("enrol: renewal answer without a certificate for %s", device)
	}
	return rn, nil
}

// SaveCertificate replaces the certificate (and cert_auth) in the stored
// enrolment, atomically, so the next boot starts with the newest one.
func SaveCertificate(dataDir string, rn state.Renewal) error {
	path := filepath.Join(dataDir, CredentialsFile)
	e, err := load(path)
	if err != nil {
		return err
	}
	e.Certificate, e.CertAuth = rn.Certificate, rn.CertAuth
	return store(path, e)
}

func call(ctx context.Context, client *http.Client, url string, body []byte, want int, out any) error {
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("enrol: %w", err)
	}
	hr.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(hr)
	if err != nil {
		return fmt.Errorf("enrol: %w", err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	switch {
	case resp.StatusCode == want:
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("enrol: undecodable answer from %s: %w", url, err)
		}
		return nil
	case resp.StatusCode >= 400 && resp.StatusCode < 500:
		var m struct{ Error string }
		_ = json.Unmarshal(data, &m)
		return fmt.Errorf("enrol: %w: %s: %s", ErrRefused, resp.Status, m.Error)
	default:
		return fmt.Errorf("enrol: %s answered %s", url, resp.Status)
	}
}
