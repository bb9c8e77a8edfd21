package appliance

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pushd/pushd/appliance/api"
	"github.com/pushd/pushd/appliance/client"
	"github.com/pushd/pushd/internal/poll"
)

// TestDevicePort_FreshRequestsNeverEOF sends fresh requests, each on a new
// connection that asks to be closed after its answer, to /healthz and
// /v1/dispatch from four goroutines for a few seconds: every one must be
// answered. nbio v1.6.12 closed ~1 in 2,500 of them before answering
// (the client saw EOF): the hang-up of a connection just closed on a
// handler goroutine was reported under its descriptor number after that
// number had gone to a new connection (third_party/nbio/PUSHD.md).
func TestDevicePort_FreshRequestsNeverEOF(t *testing.T) {
	t.Parallel()
	n := startNode(t, testConfig(), Deps{})
	base := "http://" + n.Addrs().WS
	paths := []string{"/healthz", "/v1/dispatch?app=" + testApp + "&device=d1"}
	deadline := time.Now().Add(5 * time.Second)
	var sent, failed atomic.Int64
	var mu sync.Mutex
	var errs []string
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Now().Before(deadline); i++ {
				err := getOK(base + paths[i%len(paths)])
				sent.Add(1)
				if err == nil {
					continue
				}
				failed.Add(1)
				mu.Lock()
				if len(errs) < 5 {
					errs = append(errs, err.Error())
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if f := failed.Load(); f > 0 {
		t.Fatalf("%d of %d fresh requests to the device port failed: %v", f, sent.Load(), errs)
	}
	t.Logf("%d fresh requests answered", sent.Load())
}

// getOK GETs url on a new connection and reads the whole answer, which
// must be 200.
func getOK(url string) error {
	resp, err := plainHTTP.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return fmt.Errorf("GET %s: body: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: HTTP %d", url, resp.StatusCode)
	}
	return nil
}

// TestWS_AtCapacityRefusesUpgradesAndStillAnswersHTTP fills a node
// (MaxConns 5) with WebSocket sessions: further upgrades get 503
// at_capacity with Retry-After and a JSON error, and are closed, while
// /healthz answers 200 with at_capacity, and /metrics and /v1/dispatch
// answer. nbio's MaxLoad used to equal MaxConns, so the full listener
// reset every new connection, health checks included.
func TestWS_AtCapacityRefusesUpgradesAndStillAnswersHTTP(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.MaxConns = 5
	cfg.HeartbeatInterval = time.Minute // the devices here stay silent
	n := startNode(t, cfg, Deps{})
	devices := make([]*client.Conn, cfg.MaxConns)
	for i := range devices {
		devices[i] = openRaw(t, n.wsURL(), fmt.Sprint("d", i))
	}
	addr := n.Addrs().WS
	const refusals = 10
	for i := 0; i < refusals; i++ {
		resp, body := rawUpgrade(t, addr)
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("upgrade %d at capacity: HTTP %d %s, want 503", i, resp.StatusCode, body)
		}
		if ra := resp.Header.Get("Retry-After"); ra != "5" {
			t.Fatalf("upgrade at capacity: Retry-After %q, want 5", ra)
		}
		if code := errorCode(t, resp, body); code != "at_capacity" {
			t.Fatalf("upgrade at capacity: error code %q, want at_capacity", code)
		}
		if !resp.Close {
			t.Fatal("a refused upgrade's answer keeps the connection open")
		}
		if h := health(t, addr); h.Status != "ok" || !h.AtCapacity {
			t.Fatalf("/healthz at capacity: %+v, want status ok and at_capacity", h)
		}
	}
	if err := getOK("http://" + addr + "/v1/dispatch?app=" + testApp + "&device=d9"); err != nil {
		t.Fatalf("dispatch at capacity: %v", err)
	}
	_, err := client.DialConn(context.Background(), n.wsURL(), client.DialOptions{})
	var ue *client.UpgradeError
	if !errors.As(err, &ue) || ue.Status != http.StatusServiceUnavailable {
		t.Fatalf("SDK dial at capacity: %v, want an UpgradeError 503", err)
	}
	if v, err := metricValue(scrape(t, n), `pushd_connects_refused_total{reason="capacity"}`); err != nil || v != fmt.Sprint(refusals+1) {
		t.Fatalf("capacity refusals counted: %q (%v), want %d", v, err, refusals+1)
	}

	// One device leaves: the node takes one again and is no longer full.
	_ = devices[0].Close()
	poll.Until(t, 5*time.Second, func() error {
		if h := health(t, addr); h.AtCapacity {
			return errors.New("still at capacity after a device left")
		}
		return nil
	})
	openRaw(t, n.wsURL(), "newcomer")
	if h := health(t, addr); !h.AtCapacity {
		t.Fatalf("/healthz full again: %+v, want at_capacity", h)
	}
}

// TestTCP_AtCapacityRefusesCleanly fills a node (MaxConns 5) with raw TCP
// sessions: a further TCP connection is closed right after accept without
// a byte, counted as a capacity refusal; the WebSocket port, full too
// (the cap counts both transports), refuses upgrades with 503 and keeps
// answering /healthz.
func TestTCP_AtCapacityRefusesCleanly(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.MaxConns = 5
	cfg.HeartbeatInterval = time.Minute // the devices here stay silent
	n := startNode(t, cfg, Deps{})
	devices := make([]*client.Conn, cfg.MaxConns)
	for i := range devices {
		devices[i] = openRaw(t, n.tcpURL(), fmt.Sprint("d", i))
	}
	for i := 0; i < 3; i++ {
		c, err := net.Dial("tcp", n.Addrs().TCP)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		k, err := c.Read(make([]byte, 64))
		_ = c.Close()
		var ne net.Error
		if k != 0 || err == nil || (errors.As(err, &ne) && ne.Timeout()) {
			t.Fatalf("TCP connect %d at capacity: read %d bytes, %v; want the connection closed without a byte", i, k, err)
		}
	}
	resp, body := rawUpgrade(t, n.Addrs().WS)
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("upgrade with the node full of TCP sessions: HTTP %d %s, want 503", resp.StatusCode, body)
	}
	if h := health(t, n.Addrs().WS); h.Status != "ok" || !h.AtCapacity {
		t.Fatalf("/healthz at capacity: %+v", h)
	}
	if v, err := metricValue(scrape(t, n), `pushd_connects_refused_total{reason="capacity"}`); err != nil || v != "4" {
		t.Fatalf("capacity refusals counted: %q (%v), want 4", v, err)
	}
	_ = devices[0].Close()
	poll.Until(t, 5*time.Second, func() error {
		if h := health(t, n.Addrs().WS); h.AtCapacity {
			return errors.New("still at capacity after a device left")
		}
		return nil
	})
	openRaw(t, n.tcpURL(), "newcomer")
}

// TestWS_HTTPSlackBoundsConnectionsAboveTheCap: with the node full, the
// WebSocket listener takes HTTPSlack more connections and closes any
// further one as it accepts it; idle ones are closed after the HTTP
// deadline, and the port answers again.
func TestWS_HTTPSlackBoundsConnectionsAboveTheCap(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.MaxConns = 2
	cfg.HTTPSlack = 3
	cfg.HeartbeatInterval = time.Minute // the devices here stay silent
	// Long enough that the idle connections outlive the check of the
	// one past the slack on a busy machine.
	cfg.HandshakeTimeout = 3 * time.Second
	n := startNode(t, cfg, Deps{})
	for i := 0; i < cfg.MaxConns; i++ {
		openRaw(t, n.wsURL(), fmt.Sprint("d", i))
	}
	addr := n.Addrs().WS
	idle := make([]net.Conn, cfg.HTTPSlack)
	start := time.Now()
	for i := range idle {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		idle[i] = c
	}
	// nbio counts a connection once its listener goroutine has taken it:
	// the one past the slack may be accepted only once the idle ones are.
	poll.Until(t, 2*time.Second, func() error {
		if k := n.ws.Online(); k != cfg.MaxConns+cfg.HTTPSlack {
			return fmt.Errorf("%d connections on the WebSocket listener", k)
		}
		return nil
	})
	extra, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	_ = extra.SetReadDeadline(time.Now().Add(cfg.HandshakeTimeout))
	if k, err := extra.Read(make([]byte, 64)); k != 0 || err == nil || isTimeout(err) {
		t.Fatalf("connection past MaxConns + HTTPSlack: read %d bytes, %v; want it closed at accept", k, err)
	}
	deadline := cfg.HandshakeTimeout + httpDeadlineSlack
	for i, c := range idle {
		_ = c.SetReadDeadline(start.Add(deadline + 5*time.Second))
		if _, err := c.Read(make([]byte, 64)); err == nil || isTimeout(err) {
			t.Fatalf("idle connection %d: %v, want it closed by the HTTP deadline", i, err)
		}
	}
	if took := time.Since(start); took < deadline-100*time.Millisecond {
		t.Fatalf("idle connections closed after %s, before the %s deadline", took, deadline)
	}
	poll.Until(t, 5*time.Second, func() error {
		h, err := healthErr(addr)
		if err == nil && !h.AtCapacity {
			err = fmt.Errorf("healthz %+v, want at_capacity", h)
		}
		return err
	})
}

// TestWS_RefusedUpgradesAnswerJSON: every upgrade the node refuses gets
// the push API's error shape, and a retry hint where waiting helps.
func TestWS_RefusedUpgradesAnswerJSON(t *testing.T) {
	cfg := testConfig()
	cfg.AllowedOrigins = []string{"https://app.example.com"}
	cfg.ConnectRate, cfg.ConnectBurst = 0.01, 1
	n := startNode(t, cfg, Deps{})
	addr := n.Addrs().WS
	for _, want := range []struct {
		origin     string
		status     int
		code       string
		retryAfter string
	}{
		{"https://evil.example.com", http.StatusForbidden, "origin_forbidden", ""},
		{"", http.StatusTooManyRequests, "rate_limited", "1"},
	} {
		resp, body := rawUpgrade(t, addr, "Origin: "+want.origin)
		if resp.StatusCode != want.status {
			t.Fatalf("HTTP %d %s, want %d", resp.StatusCode, body, want.status)
		}
		if code := errorCode(t, resp, body); code != want.code {
			t.Fatalf("HTTP %d: code %q, want %q", resp.StatusCode, code, want.code)
		}
		if ra := resp.Header.Get("Retry-After"); ra != want.retryAfter {
			t.Fatalf("HTTP %d: Retry-After %q, want %q", resp.StatusCode, ra, want.retryAfter)
		}
	}
}

// rawUpgrade sends a WebSocket upgrade request (with extra header lines)
// on a new connection and returns the answer, which must be a refusal,
// and its body; the server must close the connection after it.
func rawUpgrade(t *testing.T, addr string, extra ...string) (*http.Response, []byte) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	req := "GET /v1/ws HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
	for _, h := range extra {
		if !strings.HasSuffix(h, ": ") {
			req += h + "\r\n"
		}
	}
	if _, err := io.WriteString(c, req+"\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("upgrade: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("upgrade answer body: %v", err)
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		t.Fatal("upgrade accepted")
	}
	if k, err := br.Read(make([]byte, 1)); k != 0 || err == nil || isTimeout(err) {
		t.Fatalf("after a refused upgrade: read %d bytes, %v; want the connection closed", k, err)
	}
	return resp, body
}

// errorCode decodes a push-API-shaped JSON error.
func errorCode(t *testing.T, resp *http.Response, body []byte) string {
	t.Helper()
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("HTTP %d: Content-Type %q, want application/json", resp.StatusCode, ct)
	}
	var e struct {
		Error struct{ Code, Message string }
	}
	if err := json.Unmarshal(body, &e); err != nil || e.Error.Code == "" || e.Error.Message == "" {
		t.Fatalf("HTTP %d: body %s is not {\"error\":{\"code\",\"message\"}} (%v)", resp.StatusCode, body, err)
	}
	return e.Error.Code
}

// health GETs /healthz on the device port, which must answer 200.
func health(t *testing.T, addr string) api.Health {
	t.Helper()
	h, err := healthErr(addr)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func healthErr(addr string) (api.Health, error) {
	var h api.Health
	resp, err := plainHTTP.Get("http://" + addr + "/healthz")
	if err != nil {
		return h, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return h, fmt.Errorf("/healthz: HTTP %d", resp.StatusCode)
	}
	return h, json.NewDecoder(resp.Body).Decode(&h)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
