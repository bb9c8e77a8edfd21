package appliance

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pushd/pushd/appliance/client"
	"github.com/pushd/pushd/appliance/token"
	"github.com/pushd/pushd/appliance/wire"
	"github.com/pushd/pushd/internal/poll"
)

// TestSDK_BothTransportsEndToEnd connects one device per transport through
// the SDK, fans out a broadcast and a group message, and round-trips an
// upstream message through a webhook.
func TestSDK_BothTransportsEndToEnd(t *testing.T) {
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var sb strings.Builder
		_, _ = bufio.NewReader(r.Body).WriteTo(&sb)
		fmt.Fprintf(w, "echo:%d", len(sb.String()))
	}))
	defer hook.Close()
	cfg := testConfig()
	cfg.Upstreams = map[string]string{"chat": hook.URL}
	n := startNode(t, cfg, Deps{})

	for _, tc := range []struct{ name, url string }{{"ws", n.wsURL()}, {"tcp", n.tcpURL()}} {
		t.Run(tc.name, func(t *testing.T) {
			device := "dev-" + tc.name
			got := make(chan client.Message, 10)
			welcomed := make(chan client.Welcome, 1)
			c, err := client.New(client.Config{
				URL: tc.url, App: testApp, Device: device, Token: issue(t, device), LZ4: true,
				OnMessage: func(m client.Message) { got <- m },
				OnWelcome: func(w client.Welcome) { welcomed <- w },
			})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- c.Run(ctx) }()
			defer func() { cancel(); <-done }()

			w := <-welcomed
			if w.Node != "n1" || w.Heartbeat != cfg.HeartbeatInterval {
				t.Fatalf("welcome = %+v", w)
			}
			if err := c.Join(ctx, "room-1"); err != nil {
				t.Fatalf("join: %v", err)
			}
			poll.Until(t, 2*time.Second, func() error {
				if n.hub.lookup(inboxKey(testApp, device)) == nil {
					return errors.New("session not registered")
				}
				return nil
			})
			n.hub.fanout(wire.AppendPush(nil, &wire.Push{ID: "b-" + tc.name, Payload: []byte("to everyone")}), 1, "", audience{})
			n.hub.fanout(wire.AppendPush(nil, &wire.Push{ID: "g-" + tc.name, Group: "room-1", Payload: []byte("to the room")}), 1, groupKey(testApp, "room-1"), audience{})
			for _, want := range []string{"to everyone", "to the room"} {
				select {
				case m := <-got:
					if string(m.Payload) != want {
						t.Fatalf("payload %q, want %q", m.Payload, want)
					}
				case <-time.After(2 * time.Second):
					t.Fatalf("no message %q", want)
				}
			}
			reply, err := c.Up(ctx, "chat", []byte("hello"))
			if err != nil || string(reply) != "echo:"+fmt.Sprint(len(`{"app":"app1","device":"`+device+`","business":"chat","request":2,"payload":"aGVsbG8="}`)) {
				t.Fatalf("up reply %q, %v", reply, err)
			}
			if _, err := c.Up(ctx, "nohook", []byte("x")); err == nil {
				t.Fatal("UP to a business without a webhook succeeded")
			}
			if err := c.Leave(ctx, "room-1"); err != nil {
				t.Fatalf("leave: %v", err)
			}
			if k := n.hub.fanout(wire.AppendPush(nil, &wire.Push{ID: "g2"}), 1, groupKey(testApp, "room-1"), audience{}); k != 0 {
				t.Fatalf("left group still has %d members", k)
			}
		})
	}
	body := scrape(t, n)
	for _, m := range []string{`pushd_handshakes_total{outcome="ok"}`, `pushd_device_frames_in_total{type="HELLO"}`, `pushd_device_frames_out_total{type="PUSH"}`} {
		if _, err := metricValue(body, m); err != nil {
			t.Error(err)
		}
	}
}

// TestHandshake_RefusesEveryBadToken checks each way a token or HELLO can be
// wrong is refused with its stable code and the connection closed, on both
// transports.
func TestHandshake_RefusesEveryBadToken(t *testing.T) {
	n := startServing(t, testConfig(), Deps{})
	now := time.Now()
	otherSecret := []byte(strings.Repeat("o", 32))
	forged, _ := token.Issue(token.Claims{App: testApp, Device: "d", KeyID: "k1", Expires: now.Add(time.Hour).Unix()}, otherSecret)
	cases := []struct {
		name  string
		hello wire.Hello
		want  wire.Code
	}{
		{"expired", wire.Hello{Device: "d", Token: issue(t, "d", func(c *token.Claims) { c.Expires = now.Add(-time.Hour).Unix() })}, wire.CodeTokenExpired},
		{"not yet valid", wire.Hello{Device: "d", Token: issue(t, "d", func(c *token.Claims) {
			c.NotBefore = now.Add(time.Hour).Unix()
			c.Expires = now.Add(2 * time.Hour).Unix()
		})}, wire.CodeTokenNotYetValid},
		{"forged", wire.Hello{Device: "d", Token: forged}, wire.CodeTokenSignature},
		{"wrong app", wire.Hello{App: "app2", Device: "d", Token: issue(t, "d")}, wire.CodeTokenWrongApp},
		{"wrong device", wire.Hello{Device: "other", Token: issue(t, "d")}, wire.CodeTokenWrongDevice},
		{"malformed", wire.Hello{Device: "d", Token: "v1.garbage"}, wire.CodeTokenMalformed},
		{"empty", wire.Hello{Device: "d"}, wire.CodeTokenMalformed},
		{"unknown key id", wire.Hello{Device: "d", Token: issue(t, "d", func(c *token.Claims) { c.KeyID = "k9" })}, wire.CodeTokenUnknownKey},
		{"lifetime too long", wire.Hello{Device: "d", Token: issue(t, "d", func(c *token.Claims) { c.Expires = now.Add(48 * time.Hour).Unix() })}, wire.CodeTokenLifetime},
		{"unknown app", wire.Hello{App: "app9", Device: "d", Token: mustIssueFor(t, "app9", "d")}, wire.CodeUnknownApp},
		{"bad device id", wire.Hello{Device: "a b", Token: issue(t, "d")}, wire.CodeBadHello},
		{"seq without epoch", wire.Hello{Device: "d", Token: issue(t, "d"), Seq: 5}, wire.CodeBadHello},
	}
	for _, url := range deviceURLs(n) {
		for _, tc := range cases {
			t.Run(url[:2]+"/"+tc.name, func(t *testing.T) {
				c := dialRaw(t, url)
				h := tc.hello
				f := hello(t, c, &h)
				e, ok := f.(*wire.Error)
				if !ok || e.Code != tc.want {
					t.Fatalf("answer %#v, want ERROR %s", f, tc.want)
				}
				_, err := expectClosed(t, c, 2*time.Second)
				var ce *client.CloseError
				if strings.HasPrefix(url, "ws") && (!errors.As(err, &ce) || ce.Code != 1008) {
					t.Fatalf("close %v, want WebSocket 1008 (policy violation)", err)
				}
			})
		}
	}
	poll.Until(t, 2*time.Second, func() error {
		if got := n.hub.count.Load(); got != 0 {
			return fmt.Errorf("%d sessions registered after refusals", got)
		}
		return nil
	})
}

func mustIssueFor(t *testing.T, app, device string) string {
	t.Helper()
	tok, err := token.Issue(token.Claims{App: app, Device: device, KeyID: "k1", Expires: time.Now().Add(time.Hour).Unix()}, testSecret)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestHandshake_FramesBeforeHelloAreRefused(t *testing.T) {
	n := startServing(t, testConfig(), Deps{})
	c := dialRaw(t, deviceTCPURL(n))
	if err := c.Send(&wire.Ping{Time: 1}); err != nil {
		t.Fatal(err)
	}
	last, _ := expectClosed(t, c, 2*time.Second)
	if e, ok := last.(*wire.Error); !ok || e.Code != wire.CodeProtocol {
		t.Fatalf("last frame %#v, want ERROR protocol_violation", last)
	}
}

func TestFrame_OversizeIsRefused(t *testing.T) {
	n := startNode(t, testConfig(), Deps{})
	big := wire.Append(nil, &wire.Up{Business: "chat", Payload: make([]byte, wire.DefaultMaxFrame+1)})

	t.Run("ws closes 1009", func(t *testing.T) {
		c := openRaw(t, n.wsURL(), "big-ws")
		if err := c.WriteRaw(big); err != nil {
			t.Fatal(err)
		}
		_, err := expectClosed(t, c, 2*time.Second)
		var ce *client.CloseError
		if !errors.As(err, &ce) || ce.Code != 1009 {
			t.Fatalf("close = %v, want 1009", err)
		}
	})
	t.Run("ws: a header declaring too much inside a small message", func(t *testing.T) {
		// Within nbio's message limit, but the frame header inside it
		// declares more than MaxFrame: ERROR frame_too_large, then 1009.
		c := openRaw(t, n.wsURL(), "lying-ws")
		if err := c.WriteRaw(big[:wire.HeaderLen+16]); err != nil {
			t.Fatal(err)
		}
		last, err := expectClosed(t, c, 2*time.Second)
		if e, ok := last.(*wire.Error); !ok || e.Code != wire.CodeFrameTooLarge {
			t.Fatalf("last frame %#v, want ERROR frame_too_large", last)
		}
		var ce *client.CloseError
		if !errors.As(err, &ce) || ce.Code != 1009 {
			t.Fatalf("close = %v, want 1009", err)
		}
	})
	t.Run("tcp gets frame_too_large", func(t *testing.T) {
		c := openRaw(t, n.tcpURL(), "big-tcp")
		if err := c.WriteRaw(big[:wire.HeaderLen]); err != nil {
			t.Fatal(err)
		}
		last, _ := expectClosed(t, c, 2*time.Second)
		if e, ok := last.(*wire.Error); !ok || e.Code != wire.CodeFrameTooLarge {
			t.Fatalf("last frame %#v, want ERROR frame_too_large", last)
		}
	})
}

// TestHandshake_Slowloris checks that connections that never authenticate
// are closed within the handshake timeout plus a second: a silent TCP
// socket, a half-sent HTTP upgrade, and an upgraded WebSocket without
// HELLO.
func TestHandshake_Slowloris(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	n := startNode(t, cfg, Deps{})
	limit := cfg.HandshakeTimeout + time.Second

	closedWithin := func(t *testing.T, nc net.Conn) time.Duration {
		start := time.Now()
		_ = nc.SetReadDeadline(start.Add(limit + time.Second))
		buf := make([]byte, 4096)
		for {
			if _, err := nc.Read(buf); err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					t.Fatalf("still open after %s", time.Since(start))
				}
				return time.Since(start)
			}
		}
	}
	t.Run("silent tcp", func(t *testing.T) {
		nc, err := net.Dial("tcp", n.Addrs().TCP)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		if d := closedWithin(t, nc); d > limit {
			t.Fatalf("closed after %s, limit %s", d, limit)
		}
	})
	t.Run("half http upgrade", func(t *testing.T) {
		nc, err := net.Dial("tcp", n.Addrs().WS)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		fmt.Fprintf(nc, "GET /v1/ws HTTP/1.1\r\nHost: x\r\n")
		if d := closedWithin(t, nc); d > limit {
			t.Fatalf("closed after %s, limit %s", d, limit)
		}
	})
	t.Run("dripping http upgrade", func(t *testing.T) {
		nc, err := net.Dial("tcp", n.Addrs().WS)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		start := time.Now()
		req := "GET /v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-Pad: " + strings.Repeat("a", 200)
		for i := 0; i < len(req); i++ {
			if _, err := nc.Write([]byte{req[i]}); err != nil {
				break // closed: what is wanted
			}
			if time.Since(start) > limit+time.Second {
				t.Fatalf("still accepting bytes after %s", time.Since(start))
			}
			time.Sleep(50 * time.Millisecond) // the drip is the attack
		}
		if d := time.Since(start) + closedWithin(t, nc); d > limit+100*time.Millisecond {
			t.Fatalf("closed after %s, limit %s", d, limit)
		}
	})
	t.Run("partial frame header", func(t *testing.T) {
		nc, err := net.Dial("tcp", n.Addrs().TCP)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		if _, err := nc.Write(wire.Append(nil, &wire.Ping{})[:3]); err != nil {
			t.Fatal(err)
		}
		if d := closedWithin(t, nc); d > limit {
			t.Fatalf("closed after %s, limit %s", d, limit)
		}
	})
	t.Run("upgraded ws without hello", func(t *testing.T) {
		c := dialRaw(t, n.wsURL())
		start := time.Now()
		last, _ := expectClosed(t, c, limit+time.Second)
		if d := time.Since(start); d > limit {
			t.Fatalf("closed after %s, limit %s", d, limit)
		}
		if e, ok := last.(*wire.Error); !ok || e.Code != wire.CodeHandshakeTimeout {
			t.Fatalf("last frame %#v, want ERROR handshake_timeout", last)
		}
	})
}

// TestHeartbeat_SilentConnectionIsReaped: a device that stops sending is
// closed after MissedHeartbeats intervals; one that pings stays.
func TestHeartbeat_SilentConnectionIsReaped(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	n := startServing(t, cfg, Deps{})
	// The silent session's idle clock starts at its HELLO, somewhere
	// between these two instants (a loaded machine's handshake took over
	// 100 ms): early reaping is measured from the first, late from the
	// second.
	beforeHello := time.Now()
	silent := openRaw(t, deviceTCPURL(n), "silent")
	afterHello := time.Now()
	talker := openRaw(t, deviceTCPURL(n), "talker")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(cfg.HeartbeatInterval / 2)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				_ = talker.Send(&wire.Ping{Time: 1})
			}
		}
	}()
	defer func() { close(stop); wg.Wait() }()

	last, _ := expectClosed(t, silent, 5*cfg.HeartbeatInterval)
	if e, ok := last.(*wire.Error); !ok || e.Code != wire.CodeHeartbeatMissed {
		t.Fatalf("last frame %#v, want ERROR heartbeat_missed", last)
	}
	// The idle clock reads the wheel's coarse clock, which lags by a tick
	// or more on a loaded machine: allow for that below the idle timeout.
	// Above it, a busy machine delays the wheel's goroutine: anything
	// under one more heartbeat interval is the idle timeout, not a
	// missed check (which would reap at its next due time, twice as late).
	idle := cfg.withDefaults().idleTimeout()
	if d := time.Since(beforeHello); d < idle-100*time.Millisecond {
		t.Fatalf("reaped %s after HELLO began, idle timeout %s", d, idle)
	}
	if d := time.Since(afterHello); d > idle+cfg.HeartbeatInterval {
		t.Fatalf("reaped %s after WELCOME, idle timeout %s", d, idle)
	}
	if n.hub.lookup(inboxKey(testApp, "talker")) == nil {
		t.Fatal("a connection that pings was reaped too")
	}
	poll.Until(t, time.Second, func() error {
		_, err := metricValue(scrape(t, n), `pushd_connection_closes_total{reason="heartbeat_missed"}`)
		return err
	})
}

// TestTakeover_NewerConnectionWins: a second connection of a device kicks
// the first with CONTROL kick; the SDK stops on a kick.
func TestTakeover_NewerConnectionWins(t *testing.T) {
	n := startServing(t, testConfig(), Deps{})
	kicked := make(chan error, 1)
	first, err := client.New(client.Config{URL: deviceURL(n), App: testApp, Device: "phone", Token: issue(t, "phone")})
	if err != nil {
		t.Fatal(err)
	}
	go func() { kicked <- first.Run(context.Background()) }()
	poll.Until(t, 2*time.Second, func() error {
		if !first.Connected() {
			return errors.New("first not connected")
		}
		return nil
	})
	second := dialRaw(t, deviceTCPURL(n))
	w, ok := hello(t, second, &wire.Hello{Device: "phone", Token: issue(t, "phone")}).(*wire.Welcome)
	if !ok {
		t.Fatal("the second connection was not welcomed")
	}
	select {
	case err := <-kicked:
		if !errors.Is(err, client.ErrKicked) {
			t.Fatalf("first Run = %v, want ErrKicked", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("first connection was not kicked")
	}
	if s := n.hub.lookup(inboxKey(testApp, "phone")); s == nil || s.id != w.Session {
		t.Fatal("the newer connection is not the registered one")
	}
	if err := second.Send(&wire.Ping{Time: 9}); err != nil {
		t.Fatal(err)
	}
	readUntil(t, second, 2*time.Second, func(f wire.Frame) bool { _, ok := f.(*wire.Pong); return ok })
}

// TestSlowConsumer_CutWhileOthersKeepReceiving: a device that stops reading
// is closed as slow once its queue overflows, and the others get every
// message.
func TestSlowConsumer_CutWhileOthersKeepReceiving(t *testing.T) {
	cfg := testConfig()
	cfg.QueueBytes = 64 << 10
	cfg.QueueFrames = 64
	cfg.WriteTimeout = 500 * time.Millisecond
	// The readers send no PING: the idle limit must not cut them however
	// long a busy machine makes the run.
	cfg.HeartbeatInterval = time.Minute
	n := startNode(t, cfg, Deps{})

	slow := openRaw(t, n.tcpURL(), "slow") // never read from again
	const others = 5
	var received [others]atomic.Int64
	for i := 0; i < others; i++ {
		c := openRaw(t, n.wsURL(), fmt.Sprintf("fast-%d", i))
		go func(i int) {
			for {
				f, err := c.Read(0)
				if err != nil {
					return
				}
				countPushes(f, &received[i])
			}
		}(i)
	}
	const messages = 400
	// The fast readers keep within their queue cap (64 KiB: less than two
	// of these 32 KiB messages) of the sender, however busy the machine
	// is: each message waits until every one of them has the one before.
	// The slow one falls behind by all of them, 12.5 MB, more than the
	// kernel's socket buffers hold, and is cut at its cap.
	const lead = 0
	payload := make([]byte, 32<<10)
	for i := 0; i < messages; i++ {
		poll.Until(t, 10*time.Second, func() error {
			for k := range received {
				if got := received[k].Load(); got < int64(i-lead) {
					return fmt.Errorf("fast-%d received %d of the %d sent", k, got, i)
				}
			}
			return nil
		})
		n.hub.fanout(wire.AppendPush(nil, &wire.Push{ID: fmt.Sprint(i), Payload: payload}), 1, "", audience{})
	}
	poll.Until(t, 5*time.Second, func() error {
		if n.hub.lookup(inboxKey(testApp, "slow")) != nil {
			return errors.New("slow consumer still registered")
		}
		return nil
	})
	poll.Until(t, 5*time.Second, func() error {
		for i := range received {
			if got := received[i].Load(); got != messages {
				return fmt.Errorf("fast-%d received %d of %d", i, got, messages)
			}
		}
		return nil
	})
	if v, err := metricValue(scrape(t, n), `pushd_connection_closes_total{reason="slow_consumer"}`); err != nil || v != "1" {
		t.Fatalf("slow_consumer closes %q (%v), want 1", v, err)
	}
	_ = slow
}

func countPushes(f wire.Frame, k *atomic.Int64) {
	switch f := f.(type) {
	case *wire.Push:
		k.Add(1)
	case *wire.Batch:
		_ = f.Each(1<<20, func(inner wire.Frame) error { countPushes(inner, k); return nil })
	}
}

func TestOrigin_AllowlistRefusesOthers(t *testing.T) {
	cfg := testConfig()
	cfg.AllowedOrigins = []string{"https://app.example.com"}
	n := startNode(t, cfg, Deps{})
	ok, err := client.DialConn(context.Background(), n.wsURL(), client.DialOptions{Origin: "https://app.example.com"})
	if err != nil {
		t.Fatalf("allowed origin refused: %v", err)
	}
	_ = ok.Close()
	_, err = client.DialConn(context.Background(), n.wsURL(), client.DialOptions{Origin: "https://evil.example.com"})
	var ue *client.UpgradeError
	if !errors.As(err, &ue) || ue.Status != http.StatusForbidden {
		t.Fatalf("foreign origin: %v, want HTTP 403", err)
	}
}

func TestConnectRate_LimitsPerAddress(t *testing.T) {
	cfg := testConfig()
	cfg.ConnectRate = 1
	cfg.ConnectBurst = 3
	n := startNode(t, cfg, Deps{})
	refused := 0
	for i := 0; i < 6; i++ {
		c, err := client.DialConn(context.Background(), n.wsURL(), client.DialOptions{})
		var ue *client.UpgradeError
		switch {
		case errors.As(err, &ue) && ue.Status == http.StatusTooManyRequests:
			refused++
		case err != nil:
			t.Fatal(err)
		default:
			_ = c.Close()
		}
	}
	if refused < 2 || refused > 3 {
		t.Fatalf("refused %d of 6 connects with a burst of 3 at 1/s", refused)
	}
}

func TestConfig_RejectsBadValues(t *testing.T) {
	bad := []func(*Config){
		func(c *Config) { c.NodeID = "has space" },
		func(c *Config) { c.MaxFrame = wire.CeilingMaxFrame + 1 },
		func(c *Config) { c.Apps[0].Secrets = map[string][]byte{"k1": []byte("short")} },
		func(c *Config) { c.Apps = append(c.Apps, c.Apps[0]) },
		func(c *Config) { c.Upstreams = map[string]string{"chat": "ftp://x"} },
		func(c *Config) { c.AckBackoffMax = time.Millisecond },
		func(c *Config) { c.Window = -1 },
		func(c *Config) { c.HandshakeTimeout = -time.Second },
		func(c *Config) { c.TimerTick = c.HeartbeatInterval },
		func(c *Config) { c.MaxTargets = 10001 },
		func(c *Config) { c.MaxTTL = time.Millisecond },
		func(c *Config) { c.Apps[0].MaxPayload = CeilingMaxPayload + 1 },
		func(c *Config) { c.HTTPSlack = -1 },
	}
	for i, mut := range bad {
		cfg := testConfig()
		mut(&cfg)
		if _, err := New(cfg, Deps{}); !errors.Is(err, ErrConfig) {
			t.Errorf("case %d: New = %v, want ErrConfig", i, err)
		}
	}
}

// TestSlowConsumer_CutByTheWriteDeadline: a device that stops reading,
// whose queue never reaches its caps, is cut once written data has stayed
// unsent for WriteTimeout: the deadline armed when a write left data
// queued (nbio's WriteQueueDeadline) and not pushed back by later writes.
func TestSlowConsumer_CutByTheWriteDeadline(t *testing.T) {
	cfg := testConfig()
	cfg.QueueBytes = 64 << 20 // never the reason
	cfg.WriteTimeout = 300 * time.Millisecond
	n := startNode(t, cfg, Deps{})
	// A device with a tiny receive window that reads its WELCOME and
	// then nothing more.
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}
	c, err := d.Dial("tcp", n.Addrs().TCP)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(wire.Append(nil, &wire.Hello{App: testApp, Device: "stalled", Token: issue(t, "stalled")})); err != nil {
		t.Fatal(err)
	}
	head := make([]byte, wire.HeaderLen)
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.ReadFull(c, head); err != nil || wire.Type(head[1]) != wire.TypeWelcome {
		t.Fatalf("answer to HELLO: %x, %v", head, err)
	}
	poll.Until(t, 2*time.Second, func() error {
		if n.hub.lookup(inboxKey(testApp, "stalled")) == nil {
			return errors.New("not registered yet")
		}
		return nil
	})
	frame := wire.AppendPush(nil, &wire.Push{ID: "big", Payload: make([]byte, 48<<10)})
	start := time.Now()
	sent := 0
	for n.hub.lookup(inboxKey(testApp, "stalled")) != nil {
		if time.Since(start) > 20*time.Second {
			t.Fatalf("still connected after %s and %d MiB", time.Since(start), sent>>20)
		}
		n.hub.fanout(frame, 1, "", audience{})
		sent += len(frame)
		time.Sleep(5 * time.Millisecond)
	}
	if sent >= cfg.QueueBytes {
		t.Fatalf("cut after %d MiB: the queue cap, not the deadline", sent>>20)
	}
	if v, err := metricValue(scrape(t, n), `pushd_connection_closes_total{reason="slow_consumer"}`); err != nil || v != "1" {
		t.Fatalf("slow_consumer closes %q, %v", v, err)
	}
}
