package api

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"
)

// The admin client's retries, against a server that fails on demand the
// ways a region does now and then: a connection dropped before the
// answer, 503 not_leader or unavailable while Raft has no leader. (A
// real region cannot be made to do either at a chosen request; pushctl's
// tests run the client against real ones.)

// scriptedAdmin is an admin API whose answers a test scripts; it records
// what the client sent.
type scriptedAdmin struct {
	srv *httptest.Server

	mu   sync.Mutex
	reqs []adminRequest
	// answer returns the status, extra headers and body of the n-th
	// request (0-based); dropConnection closes it unanswered.
	answer func(n int, r adminRequest) (int, http.Header, string)
}

type adminRequest struct {
	method, path, requestID string
	body                    map[string]any
}

// dropConnection, as a scriptedAdmin answer's status, closes the
// connection without answering.
const dropConnection = -1

func newScriptedAdmin(t *testing.T, answer func(n int, r adminRequest) (int, http.Header, string)) *scriptedAdmin {
	t.Helper()
	f := &scriptedAdmin{answer: answer}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, _ := io.ReadAll(r.Body)
		req := adminRequest{method: r.Method, path: r.URL.Path, requestID: r.Header.Get("X-Request-ID")}
		if len(raw) > 0 {
			if err := json.Unmarshal(raw, &req.body); err != nil {
				t.Errorf("%s %s: body is not a JSON object: %q", r.Method, r.URL.Path, raw)
			}
		}
		f.mu.Lock()
		n := len(f.reqs)
		f.reqs = append(f.reqs, req)
		f.mu.Unlock()
		status, h, body := f.answer(n, req)
		if status == dropConnection {
			if conn, _, err := w.(http.Hijacker).Hijack(); err == nil {
				_ = conn.Close()
			}
			return
		}
		for k, v := range h {
			w.Header()[k] = v
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *scriptedAdmin) requests() []adminRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]adminRequest(nil), f.reqs...)
}

// client returns a client of the server that records the retries it
// announces.
func (f *scriptedAdmin) client(t *testing.T) (*Client, func() []Retry) {
	t.Helper()
	cl, err := NewClient(f.srv.URL, "tok", nil)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var retries []Retry
	cl.OnRetry(func(r Retry) {
		mu.Lock()
		defer mu.Unlock()
		retries = append(retries, r)
	})
	return cl, func() []Retry {
		mu.Lock()
		defer mu.Unlock()
		return append([]Retry(nil), retries...)
	}
}

// busy is a 503 answer with Retry-After 0.
func busy(code, msg string) (int, http.Header, string) {
	b, _ := json.Marshal(map[string]any{"error": map[string]string{"code": code, "message": msg}})
	return http.StatusServiceUnavailable, http.Header{"Retry-After": {"0"}}, string(b)
}

// TestClient_WritesRetryWithTheSameRequestID: while the region has no
// leader, a write is sent again with the same request id, so the region
// applies it once; each pause doubles the one before.
func TestClient_WritesRetryWithTheSameRequestID(t *testing.T) {
	t.Parallel()
	f := newScriptedAdmin(t, func(n int, _ adminRequest) (int, http.Header, string) {
		switch n {
		case 0:
			return busy("not_leader", "no leader known right now; retry")
		case 1:
			return busy("unavailable", "leadership lost while committing")
		}
		return 200, nil, `{"index":12,"replayed":true}`
	})
	cl, retries := f.client(t)
	applied, err := cl.DrainNode(context.Background(), "n2", true)
	if err != nil || *applied != (Applied{Index: 12, Replayed: true}) {
		t.Fatalf("drain: %+v, %v", applied, err)
	}
	want := []Retry{
		{Method: "POST", Path: "/v1/admin/nodes/n2/drain", Reason: "not_leader: no leader known right now; retry", Wait: 100 * time.Millisecond, SameRequestID: true},
		{Method: "POST", Path: "/v1/admin/nodes/n2/drain", Reason: "unavailable: leadership lost while committing", Wait: 200 * time.Millisecond, SameRequestID: true},
	}
	if got := retries(); !slices.Equal(got, want) {
		t.Errorf("retries\n%+v\nwant\n%+v", got, want)
	}
	reqs := f.requests()
	if len(reqs) != 3 {
		t.Fatalf("%d attempts, want 3", len(reqs))
	}
	for _, req := range reqs {
		if req.requestID == "" || req.requestID != reqs[0].requestID || req.path != "/v1/admin/nodes/n2/drain" || req.body["draining"] != true {
			t.Fatalf("attempt %+v differs from the first %+v", req, reqs[0])
		}
	}
	// A second call is a new request.
	if _, err := cl.DrainNode(context.Background(), "n2", false); err != nil {
		t.Fatal(err)
	}
	if last := f.requests()[3]; last.requestID == reqs[0].requestID || last.body["draining"] != false {
		t.Fatalf("second call sent %+v", last)
	}
}

// TestClient_WritesRetryAfterAConnectionFails: a write whose connection
// drops before an answer (it may or may not have arrived) is sent again
// with the same request id, after a pause that doubles each time, and so
// is one the region answers 503 not_leader; a read is sent again after a
// dropped connection too, without a request id.
func TestClient_WritesRetryAfterAConnectionFails(t *testing.T) {
	t.Parallel()
	f := newScriptedAdmin(t, func(n int, r adminRequest) (int, http.Header, string) {
		switch {
		case r.method == http.MethodGet && n < 5:
			// Two drops: Go's transport itself sends a GET again once
			// when a pooled connection fails, so at least one reaches
			// the client.
			return dropConnection, nil, ""
		case r.method == http.MethodGet:
			return 200, nil, `{"active":false}`
		case n == 0:
			return dropConnection, nil, ""
		case n == 1:
			return busy("not_leader", "no leader took the write within 10s: no leader known right now; retry")
		}
		return 200, nil, `{"index":7}`
	})
	cl, retries := f.client(t)
	if _, err := cl.SetDegrade(context.Background(), &DegradeRequest{Priority: "low", Reason: "drill"}); err != nil {
		t.Fatal(err)
	}
	want := []Retry{
		{Method: "POST", Path: "/v1/admin/degrade", Reason: "connection closed before an answer", Wait: 100 * time.Millisecond, SameRequestID: true},
		{Method: "POST", Path: "/v1/admin/degrade", Reason: "not_leader: no leader took the write within 10s: no leader known right now; retry", Wait: 200 * time.Millisecond, SameRequestID: true},
	}
	if got := retries(); !slices.Equal(got, want) {
		t.Errorf("retries\n%+v\nwant\n%+v", got, want)
	}
	reqs := f.requests()
	if len(reqs) != 3 {
		t.Fatalf("%d attempts, want 3", len(reqs))
	}
	for _, req := range reqs {
		if req.requestID == "" || req.requestID != reqs[0].requestID || req.body["priority"] != "low" {
			t.Fatalf("attempt %+v differs from the first %+v", req, reqs[0])
		}
	}

	st, err := cl.Degrade(context.Background())
	if err != nil || st.Active {
		t.Fatalf("degrade: %+v, %v", st, err)
	}
	read := Retry{Method: "GET", Path: "/v1/admin/degrade", Reason: "connection closed before an answer", Wait: 100 * time.Millisecond}
	if got := retries(); len(got) < 3 || got[2] != read {
		t.Errorf("the read's retries %+v, want %+v first", got[2:], read)
	}
	reqs = f.requests()
	if len(reqs) != 6 {
		t.Fatalf("the read's attempts: %+v, want 3", reqs[3:])
	}
	for _, req := range reqs[3:] {
		if req.requestID != "" || req.method != http.MethodGet || req.path != "/v1/admin/degrade" {
			t.Fatalf("a read's attempt %+v", req)
		}
	}
}

// TestClient_GivesUpWhenTheRegionStaysUnavailable: a Retry-After longer
// than the retry budget ends the retries at once.
func TestClient_GivesUpWhenTheRegionStaysUnavailable(t *testing.T) {
	t.Parallel()
	f := newScriptedAdmin(t, func(int, adminRequest) (int, http.Header, string) {
		s, _, b := busy("not_leader", "no leader known right now; retry")
		return s, http.Header{"Retry-After": {"60"}}, b
	})
	cl, retries := f.client(t)
	_, err := cl.DegradeOff(context.Background(), "")
	want := "POST /v1/admin/degrade/off: HTTP 503 not_leader: no leader known right now; retry (retry after 1m0s); gave up after 1 attempt"
	var ae *APIError
	if err == nil || err.Error() != want || !errors.As(err, &ae) || ae.Code != "not_leader" {
		t.Fatalf("error %v, want %q wrapping the *APIError", err, want)
	}
	if n := len(f.requests()); n != 1 {
		t.Errorf("%d attempts", n)
	}
	if r := retries(); len(r) != 0 {
		t.Errorf("announced retries %+v", r)
	}
}
