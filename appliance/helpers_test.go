package appliance

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/lesismal/nbio/logging"
	"github.com/redis/go-redis/v9"

	"github.com/pushd/pushd/appliance/client"
	"github.com/pushd/pushd/appliance/token"
	"github.com/pushd/pushd/appliance/wire"
)

func init() { logging.SetLevel(logging.LevelNone) }

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

// startNode starts a node on loopback and stops it with the test.
func startNode(t testing.TB, cfg Config, deps Deps) *Node {
	t.Helper()
	if underRace {
		t.Skip("real nbio listeners trip the race detector inside nbio (see race_test.go)")
	}
	n, err := New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := n.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	select {
	case <-n.Ready():
	case <-time.After(30 * time.Second):
		t.Fatal("node not ready 30 s after its start")
	}
	return n
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

// scrape returns the node's /metrics text.
func scrape(t testing.TB, n *Node) string {
	t.Helper()
	resp, err := plainHTTP.Get("http://" + n.Addrs().WS + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
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
