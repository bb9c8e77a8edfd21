package ctl

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
)

// tap sits between pushctl and a real node's API: it records every
// request pushctl sends (so a test can check what went out exactly) and
// forwards it. Its hooks inject what a healthy node does not do on
// demand — an answer lost on the way, a failure answered instead — and
// nothing else: every answer not injected is the node's own.
type tap struct {
	t      *testing.T
	target string
	hooks  tapHooks
	srv    *httptest.Server

	mu   sync.Mutex
	reqs []tapped
}

// tapHooks inject failures into a tap's exchanges; nil hooks inject
// nothing.
type tapHooks struct {
	// answer, returning true, answers the n-th request (from 0) with
	// status and body instead of forwarding it.
	answer func(n int, r tapped) (status int, body string, ok bool)
	// drop, returning true, forwards the n-th request and then closes
	// the connection without passing the node's answer on.
	drop func(n int, r tapped) bool
	// rewrite may change the body of the node's answer to the n-th
	// request before it is passed on.
	rewrite func(n int, r tapped, body []byte) []byte
}

// tapped is one request as pushctl sent it.
type tapped struct {
	method, path, query, requestID, auth, contentType string
	body                                              []byte
}

// newTap starts a tap in front of the API at target (http://host:port).
func newTap(t *testing.T, target string, hooks tapHooks) *tap {
	t.Helper()
	tp := &tap{t: t, target: target, hooks: hooks}
	tp.srv = httptest.NewServer(http.HandlerFunc(tp.serve))
	t.Cleanup(tp.srv.Close)
	return tp
}

func (tp *tap) url() string { return tp.srv.URL }

func (tp *tap) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	req := tapped{method: r.Method, path: r.URL.Path, query: r.URL.RawQuery, requestID: r.Header.Get("X-Request-ID"),
		auth: r.Header.Get("Authorization"), contentType: r.Header.Get("Content-Type"), body: body}
	tp.mu.Lock()
	n := len(tp.reqs)
	tp.reqs = append(tp.reqs, req)
	tp.mu.Unlock()
	if tp.hooks.answer != nil {
		if status, b, ok := tp.hooks.answer(n, req); ok {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			_, _ = io.WriteString(w, b)
			return
		}
	}
	out, err := http.NewRequestWithContext(r.Context(), r.Method, tp.target+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		tp.t.Errorf("tap: %v", err)
		return
	}
	out.Header = r.Header.Clone()
	resp, err := http.DefaultTransport.RoundTrip(out)
	if err != nil && r.Context().Err() != nil {
		// pushctl gave up on the request (a devices-file run that
		// stopped cancels the batches in flight): nobody reads an answer.
		return
	}
	if err != nil {
		tp.t.Errorf("tap: %s %s: %v", r.Method, r.URL, err)
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(resp.Body)
	if tp.hooks.drop != nil && tp.hooks.drop(n, req) {
		if conn, _, err := w.(http.Hijacker).Hijack(); err == nil {
			_ = conn.Close()
		}
		return
	}
	if tp.hooks.rewrite != nil {
		answer = tp.hooks.rewrite(n, req, answer)
	}
	for k, v := range resp.Header {
		if k != "Content-Length" {
			w.Header()[k] = v
		}
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(answer)
}

// requests returns what pushctl sent so far.
func (tp *tap) requests() []tapped {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	return append([]tapped(nil), tp.reqs...)
}
