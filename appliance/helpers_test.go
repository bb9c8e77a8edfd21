package appliance

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lesismal/nbio/logging"
	"github.com/redis/go-redis/v9"

	"github.com/pushd/pushd/appliance/api"
	"github.com/pushd/pushd/appliance/client"
	"github.com/pushd/pushd/appliance/token"
	"github.com/pushd/pushd/appliance/wire"
	"github.com/pushd/pushd/internal/testmain"
)

func init() { logging.SetLevel(logging.LevelNone) }

// TestMain runs at least four tests at a time: most wait on timers, Redis and
// sockets (-parallel overrides).
func TestMain(m *testing.M) { os.Exit(testmain.Run(m, 4)) }

var testSecret = bytes.Repeat([]byte("s"), 32)

const testApp = "app1"

// testConfig is a node configuration with timings short enough for tests.
func testConfig() Config {
	return Config{
		NodeID:            "n1",
		WSAddr:            "127.0.0.1:0",
		TCPAddr:           "127.0.0.1:0",
		HandshakeTimeout:  time.Second,
		HeartbeatInterval: 400 * time.Millisecond,
		TimerTick:         20 * time.Millisecond,
		AckTimeout:        300 * time.Millisecond,
		AckBackoffMax:     time.Second,
		ConnectRate:       -1,
		Apps: []AppConfig{{
			ID:      testApp,
			Secrets: map[string][]byte{"k1": testSecret},
			APIKeys: []string{"test-api-key-0123456789"},
		}},
	}
}

// startNode starts a node with its nbio listeners on loopback and stops
// it with the test. The race detector cannot follow nbio's hand-over of a
// connection between goroutines (see race_test.go): under -race it skips
// the test. Tests of what lies above the transport use startServing.
func startNode(t testing.TB, cfg Config, deps Deps) *Node {
	t.Helper()
	if underRace {
		t.Skip("real nbio listeners trip the race detector inside nbio (see race_test.go)")
	}
	return startTestNode(t, cfg, deps, nil)
}

// startServing starts a node whose devices connect to deviceURL(n): its
// nbio WebSocket listener normally, and under -race a std listener that
// hands connections to ServeConn, so the session, delivery and store
// logic runs under the race detector.
func startServing(t testing.TB, cfg Config, deps Deps) *Node {
	t.Helper()
	if !underRace {
		return startTestNode(t, cfg, deps, nil)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.WSAddr, cfg.TCPAddr, cfg.AdvertiseTCP = "", "", ln.Addr().String()
	return startTestNode(t, cfg, deps, ln)
}

// connURLs maps a node started by startServing under -race to its std
// listener's URL.
var connURLs sync.Map // *Node → string

// deviceURL is where a device of n connects.
func deviceURL(n *Node) string {
	if u, ok := connURLs.Load(n); ok {
		return u.(string)
	}
	return n.wsURL()
}

// startTestNode starts a node, serving ln's connections through ServeConn
// when ln is set, waits until it is ready, and stops it with the test.
func startTestNode(t testing.TB, cfg Config, deps Deps, ln net.Listener) *Node {
	t.Helper()
	n, err := New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	stopServing := func() {}
	if ln != nil {
		stopServing = serveConns(n, ln)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := n.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		stopServing()
	})
	select {
	case <-n.Ready():
	case <-time.After(30 * time.Second):
		t.Fatal("node not ready 30 s after its start")
	}
	return n
}

// serveConns serves ln's connections with n.Serve, records ln's URL as
// n's deviceURL, and returns a func that closes ln and waits for Serve
// (call it after n's Shutdown, which ends the connections).
func serveConns(n *Node, ln net.Listener) func() {
	connURLs.Store(n, "tcp://"+ln.Addr().String())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = n.Serve(ln)
	}()
	return func() {
		_ = ln.Close()
		<-done
		connURLs.Delete(n)
	}
}

// deviceURLs are every device listener of n: WebSocket and TCP, or under
// -race the std listener of startServing alone.
func deviceURLs(n *Node) []string {
	if u, ok := connURLs.Load(n); ok {
		return []string{u.(string)}
	}
	return []string{n.wsURL(), n.tcpURL()}
}

// deviceTCPURL is where a device of n connects over raw TCP: the nbio
// TCP listener, or under -race the std listener of startServing.
func deviceTCPURL(n *Node) string { return "tcp://" + deviceTCPAddr(n) }

// deviceTCPAddr is deviceTCPURL's host:port.
func deviceTCPAddr(n *Node) string {
	if u, ok := connURLs.Load(n); ok {
		return strings.TrimPrefix(u.(string), "tcp://")
	}
	return n.Addrs().TCP
}

func (n *Node) wsURL() string  { return "ws://" + n.Addrs().WS + "/v1/ws" }
func (n *Node) tcpURL() string { return "tcp://" + n.Addrs().TCP }

func issue(t testing.TB, device string, mut ...func(*token.Claims)) string {
	t.Helper()
	c := token.Claims{App: testApp, Device: device, KeyID: "k1", Expires: time.Now().Add(time.Hour).Unix()}
	for _, m := range mut {
		m(&c)
	}
	tok, err := token.Issue(c, testSecret)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// dialRaw opens a raw protocol connection and closes it with the test.
func dialRaw(t testing.TB, url string) *client.Conn {
	t.Helper()
	c, err := client.DialConn(context.Background(), url, client.DialOptions{})
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// hello sends HELLO for device and returns the server's answer.
func hello(t testing.TB, c *client.Conn, h *wire.Hello) wire.Frame {
	t.Helper()
	if h.App == "" {
		h.App = testApp
	}
	if err := c.Send(h); err != nil {
		t.Fatal(err)
	}
	f, err := c.Read(2 * time.Second)
	if err != nil {
		t.Fatalf("read answer to HELLO: %v", err)
	}
	return f
}

// openRaw connects device over url and expects WELCOME.
func openRaw(t testing.TB, url, device string) *client.Conn {
	t.Helper()
	c := dialRaw(t, url)
	f := hello(t, c, &wire.Hello{Device: device, Token: issue(t, device)})
	if _, ok := f.(*wire.Welcome); !ok {
		t.Fatalf("answer to HELLO: %#v", f)
	}
	return c
}

// readUntil reads frames until one satisfies ok, failing after timeout.
func readUntil(t testing.TB, c *client.Conn, timeout time.Duration, ok func(wire.Frame) bool) wire.Frame {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			t.Fatal("no matching frame before the deadline")
		}
		f, err := c.Read(left)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		if ok(f) {
			return f
		}
	}
}

// expectClosed reads until the connection ends and returns what ended it
// (the last frame seen and the read error), failing if it stays open past
// timeout.
func expectClosed(t testing.TB, c *client.Conn, timeout time.Duration) (last wire.Frame, err error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		f, err := c.Read(time.Until(deadline))
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("connection still open after %s", timeout)
			}
			return last, err
		}
		last = f
	}
}

// plainHTTP makes one request per connection: the device port closes idle
// HTTP connections after the handshake timeout, and a pooled connection
// reused at that moment would fail the test for nothing.
var plainHTTP = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}

// scrape returns the node's /metrics text, from its device port's
// handler (no listener needed).
func scrape(t testing.TB, n *Node) string {
	t.Helper()
	rec := httptest.NewRecorder()
	n.HTTPHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("/metrics: HTTP %d", rec.Code)
	}
	return rec.Body.String()
}

// healthOf calls the node's /healthz handler and returns the status and
// the answer.
func healthOf(t testing.TB, n *Node) (int, api.Health) {
	t.Helper()
	rec := httptest.NewRecorder()
	n.ServeHealth(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
	var h api.Health
	if err := json.Unmarshal(rec.Body.Bytes(), &h); err != nil {
		t.Fatalf("/healthz answer %q: %v", rec.Body.String(), err)
	}
	return rec.Code, h
}

// metricValue finds a sample line starting with name (labels included) in
// a scrape.
func metricValue(body, name string) (string, error) {
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, name+" ") {
			return strings.TrimPrefix(line, name+" "), nil
		}
	}
	return "", fmt.Errorf("metric %s not found", name)
}

// quietRedis keeps go-redis's reconnect chatter out of test output: the
// Redis-down tests provoke it on purpose.
type quietRedis struct{}

func (quietRedis) Printf(context.Context, string, ...any) {}

func init() { redis.SetLogger(quietRedis{}) }
