// Package transfer downloads update artifacts: streamed to a staging file
// (never held in memory), resumed with an HTTP range request after an
// interruption, and accepted only when length and sha256 match what the
// signed metadata says.
package transfer

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"
)

// IdleTimeout is how long a download may go without a byte before it is
// abandoned; the bytes it has are kept, and the next try resumes there.
const IdleTimeout = 30 * time.Second

// Transport is an HTTP transport with the timeouts every outbound call of
// a device needs: a mirror that accepts a connection and then says
// nothing must not hold the update loop. tc may be nil.
func Transport(tc *tls.Config) *http.Transport {
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       tc,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 15 * time.Second,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConns:          4,
	}
}

var (
	// ErrVerify means the downloaded bytes are not the expected ones; the
	// staging file is removed so the next try starts clean.
	ErrVerify = errors.New("transfer: artifact does not verify")
	// ErrHTTP means the server answered with an error.
	ErrHTTP = errors.New("transfer: server error")
)

// Expect is what the signed metadata says the artifact is.
type Expect struct {
	Length int64
	SHA256 string // hex
}

// Download fetches url into dst. Bytes already in dst+".part" from an
// earlier, interrupted try are kept and the rest requested with a Range
// header. On success dst holds exactly the expected bytes, renamed into
// place and synced; on a verification failure the staging file is gone.
func Download(ctx context.Context, client *http.Client, url, dst string, want Expect) error {
	return DownloadIdle(ctx, client, url, dst, want, IdleTimeout)
}

// DownloadIdle is Download with its own idle timeout.
func DownloadIdle(ctx context.Context, client *http.Client, url, dst string, want Expect, idle time.Duration) error {
	if client == nil {
		client = http.DefaultClient
	}
	part := dst + ".part"
	f, err := os.OpenFile(part, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return fmt.Errorf("transfer: staging: %w", err)
	}
	defer f.Close()
	have, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return fmt.Errorf("transfer: staging: %w", err)
	}
	if have > want.Length { // longer than it can be: start over
		if err := f.Truncate(0); err != nil {
			return fmt.Errorf("transfer: staging: %w", err)
		}
		have = 0
	}
	if have < want.Length {
		if err := fetch(ctx, client, url, f, have, want.Length, idle); err != nil {
			return err
		}
	}
	if err := verify(f, want); err != nil {
		f.Close()
		os.Remove(part)
		return err
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("transfer: sync: %w", err)
	}
	if err := os.Rename(part, dst); err != nil {
		return fmt.Errorf("transfer: %w", err)
	}
	return syncDir(filepath.Dir(dst))
}

// fetch appends bytes [have, length) of url to f.
func fetch(ctx context.Context, client *http.Client, url string, f *os.File, have, length int64, idle time.Duration) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("transfer: %w", err)
	}
	if have > 0 {
		req.Header.Set("Range", "bytes="+strconv.FormatInt(have, 10)+"-")
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("transfer: %s: %w", url, err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusPartialContent && have > 0:
	case resp.StatusCode == http.StatusOK:
		// No range support (or a fresh start): take the whole body.
		if err := f.Truncate(0); err != nil {
			return fmt.Errorf("transfer: staging: %w", err)
		}
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return fmt.Errorf("transfer: staging: %w", err)
		}
		have = 0
	default:
		return fmt.Errorf("%w: %s: %s", ErrHTTP, url, resp.Status)
	}
	// Never take more than the metadata allows: an endless-data attack
	// stops at the signed length.
	// Every idle period without a byte read ends the request; the bytes
	// so far stay in the staging file for the next try.
	body := &progress{r: io.LimitReader(resp.Body, length-have)}
	var stalled *time.Timer
	stalled = time.AfterFunc(idle, func() {
		if body.reads.Swap(0) == 0 {
			cancel(fmt.Errorf("%w: no data for %s", ErrStalled, idle))
			return
		}
		stalled.Reset(idle)
	})
	defer stalled.Stop()
	n, err := io.Copy(f, body)
	if cause := context.Cause(ctx); err != nil && errors.Is(cause, ErrStalled) {
		err = cause
	}
	if err != nil {
		return fmt.Errorf("transfer: %s after %d bytes: %w", url, have+n, err)
	}
	if have+n < length {
		return fmt.Errorf("transfer: %s: %w after %d of %d bytes", url, io.ErrUnexpectedEOF, have+n, length)
	}
	return nil
}

// ErrStalled means a download went IdleTimeout without a byte.
var ErrStalled = errors.New("transfer: download stalled")

// progress counts reads, for the idle timer.
type progress struct {
	r     io.Reader
	reads atomic.Int64
}

func (p *progress) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if n > 0 {
		p.reads.Add(1)
	}
	return n, err
}

func verify(f *os.File, want Expect) error {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("transfer: %w", err)
	}
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return fmt.Errorf("transfer: %w", err)
	}
	if n != want.Length {
		return fmt.Errorf("%w: %d bytes, want %d", ErrVerify, n, want.Length)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want.SHA256 {
		return fmt.Errorf("%w: sha256 %s, want %s", ErrVerify, got, want.SHA256)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("transfer: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("transfer: sync %s: %w", dir, err)
	}
	return nil
}
