package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestClient_DecodesTypedErrors(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/push":
			apiError(w, http.StatusTooManyRequests, "rate_limited", "over 100/s")
		case "/v1/devices/proxy":
			w.WriteHeader(http.StatusBadGateway)
			_, _ = w.Write([]byte("<html>bad gateway</html>"))
		default:
			apiError(w, http.StatusNotFound, "not_found", r.URL.EscapedPath())
		}
	}))
	defer srv.Close()
	cl, err := NewClient(srv.URL+"/", "k", nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	_, err = cl.Push(ctx, &PushRequest{App: Ptr("a")})
	var ae *APIError
	if !errors.As(err, &ae) || ae.Status != 429 || ae.Code != "rate_limited" || ae.RetryAfter != 2*time.Second {
		t.Fatalf("push error = %#v", err)
	}
	if got, want := err.Error(), "POST /v1/push: HTTP 429 rate_limited: over 100/s (retry after 2s)"; got != want {
		t.Errorf("message %q, want %q", got, want)
	}
	_, err = cl.Device(ctx, "a", "proxy")
	if !errors.As(err, &ae) || ae.Status != 502 || ae.Code != "http_502" || ae.Message != "<html>bad gateway</html>" {
		t.Fatalf("non-JSON error = %#v", err)
	}
	// An id with a slash or a space stays one escaped path segment.
	_, err = cl.Device(ctx, "a", "x/y z")
	if !errors.As(err, &ae) || ae.Message != "/v1/devices/x%2Fy%20z" {
		t.Fatalf("escaped path error = %#v", err)
	}
}

func TestClient_SendsBearerAndJSON(t *testing.T) {
	t.Parallel()
	var got http.Header
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Header.Clone()
		_, _ = w.Write([]byte(`{"id":"m1","stored":true,"results":[]}`))
	}))
	defer srv.Close()
	cl, err := NewClient(srv.URL, "secret-key", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Push(context.Background(), &PushRequest{App: Ptr("a")}); err != nil {
		t.Fatal(err)
	}
	if got.Get("Authorization") != "Bearer secret-key" || got.Get("Content-Type") != "application/json" {
		t.Fatalf("headers %v", got)
	}
	for _, bad := range []string{"ftp://x", "localhost:8090", "http://"} {
		if _, err := NewClient(bad, "", nil); err == nil {
			t.Errorf("NewClient(%q) accepted", bad)
		}
	}
}

// apiError writes an error answer the way pushd's APIs do.
func apiError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	if status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "2")
	}
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": code, "message": msg}})
}
