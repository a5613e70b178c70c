package transfer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// A mirror that sends headers and a few bytes, then stalls: the download
// is abandoned after the idle timeout (it used to wait for the server to
// close, 156 s in the field), keeps its bytes, and the next try resumes
// from them with a range request.
func TestStalledDownloadIsAbandonedAndResumed(t *testing.T) {
	artifact := []byte("0123456789abcdefghijklmnopqrstuvwxyz")
	sum := sha256.Sum256(artifact)
	want := Expect{Length: int64(len(artifact)), SHA256: hex.EncodeToString(sum[:])}
	stall := make(chan struct{})
	defer close(stall)
	stalling := true
	var ranges []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ranges = append(ranges, r.Header.Get("Range"))
		if stalling {
			w.Header().Set("Content-Length", strconv.Itoa(len(artifact)))
			w.Write(artifact[:10])
			w.(http.Flusher).Flush()
			select {
			case <-stall:
			case <-r.Context().Done():
			}
			return
		}
		http.ServeContent(w, r, "a", time.Time{}, bytes.NewReader(artifact))
	}))
	defer srv.Close()
	dst := filepath.Join(t.TempDir(), "a.tar")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // a guard, not a measurement
	defer cancel()
	err := DownloadIdle(ctx, srv.Client(), srv.URL, dst, want, 200*time.Millisecond)
	if !errors.Is(err, ErrStalled) {
		t.Fatalf("stalled download: err %v, want ErrStalled", err)
	}
	if ctx.Err() != nil {
		t.Fatal("the stalled download was not abandoned before the guard")
	}
	if fi, err := os.Stat(dst + ".part"); err != nil || fi.Size() != 10 {
		t.Fatalf("staging file after the stall: %v, %v; want the 10 bytes kept", fi, err)
	}
	stalling = false
	if err := DownloadIdle(ctx, srv.Client(), srv.URL, dst, want, 200*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(dst)
	if string(got) != string(artifact) || ranges[len(ranges)-1] != "bytes=10-" {
		t.Fatalf("resumed download %q with range %q", got, ranges[len(ranges)-1])
	}
}
