package ctl

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// TestBusyHubIsAskedAgain: a hub answering 503 with Retry-After (its
// cluster electing leaders) is asked again; other errors are not.
func TestBusyHubIsAskedAgain(t *testing.T) {
	var calls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch n := calls.Add(1); {
		case r.URL.Path == "/v1/models" && n == 1:
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte(`{"error":"the hub's stores are not ready"}`))
		case r.URL.Path == "/v1/models":
			w.Write([]byte(`[{"name":"bearing","latest":2,"versions":2}]`))
		default:
			w.WriteHeader(http.StatusInternalServerError)
			w.Write([]byte(`{"error":"broken"}`))
		}
	}))
	defer srv.Close()
	var out, errb bytes.Buffer
	if code := Main(context.Background(), []string{"--hub", srv.URL, "model", "list"}, &out, &errb); code != 0 || !strings.Contains(out.String(), "bearing") {
		t.Fatalf("exit %d: %s%s", code, out.String(), errb.String())
	}
	if calls.Load() != 2 {
		t.Fatalf("%d requests, want 2 (one 503, one retry)", calls.Load())
	}
	calls.Store(10)
	if code := Main(context.Background(), []string{"--hub", srv.URL, "model", "show", "x"}, &out, &errb); code != 1 || calls.Load() != 11 {
		t.Fatalf("a 500 was retried or not reported: exit %d, %d requests", code, calls.Load()-10)
	}
}
