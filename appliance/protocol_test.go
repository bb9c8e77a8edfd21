package appliance

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pushd/pushd/appliance/client"
	"github.com/pushd/pushd/appliance/wire"
	"github.com/pushd/pushd/internal/poll"
	"github.com/pushd/pushd/streams"
	"github.com/pushd/pushd/streams/streamstest"
)

// Tests of the rules docs/protocol.md states about the session: what a
// device may send before WELCOME, what the server does with a device's
// ERROR, what a resume cursor ahead of its inbox gets, which HELLO
// businesses an app accepts.

// gatedStore holds every session's open until the test lets it through,
// to make a session stay in its opening state for as long as a slow Redis
// would.
type gatedStore struct {
	Store
	opening chan string   // receives the device of each session opened
	release chan struct{} // a send lets one session's open through; close, all
}

func newGatedStore(st Store) *gatedStore {
	return &gatedStore{Store: st, opening: make(chan string, 16), release: make(chan struct{})}
}

func (g *gatedStore) OpenMany(ctx context.Context, reqs []streams.OpenRequest) []streams.Opened {
	for _, r := range reqs {
		g.opening <- r.Device
		select {
		case <-g.release:
		case <-ctx.Done():
		}
	}
	return g.Store.OpenMany(ctx, reqs)
}

// logBuffer is a slog destination that tests read while the node writes.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// lines returns the log lines containing s.
func (b *logBuffer) lines(s string) []string {
	var out []string
	for _, l := range strings.Split(b.String(), "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return out
}

func warnLogger(b *logBuffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// readFlat reads frames, BATCHes unwrapped, until it has n or the
// connection ends.
func readFlat(t *testing.T, c *client.Conn, n int, timeout time.Duration) []wire.Frame {
	t.Helper()
	var out []wire.Frame
	deadline := time.Now().Add(timeout)
	for len(out) < n {
		f, err := c.Read(time.Until(deadline))
		if err != nil {
			t.Fatalf("after %d frames %s: read: %v", len(out), describe(out), err)
		}
		if b, ok := f.(*wire.Batch); ok {
			_ = b.Each(1<<22, func(in wire.Frame) error { out = append(out, in); return nil })
			continue
		}
		out = append(out, f)
	}
	return out
}

func describe(fs []wire.Frame) string {
	var parts []string
	for _, f := range fs {
		parts = append(parts, fmt.Sprintf("%s%+v", f.Type(), f))
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// requestsAfterHello is what the tests below send right behind HELLO: a
// JOIN, a PING and an UP to a business without a webhook.
func requestsAfterHello() []byte {
	var b []byte
	b = wire.Append(b, &wire.Join{Request: 1, Group: "news"})
	b = wire.Append(b, &wire.Ping{Time: 7})
	b = wire.Append(b, &wire.Up{Request: 2, Business: "nowhere", Payload: []byte("x")})
	return b
}

// expectAnswersAfterWelcome reads WELCOME and then the answers to
// requestsAfterHello, in the order they were sent.
func expectAnswersAfterWelcome(t *testing.T, c *client.Conn) {
	t.Helper()
	fs := readFlat(t, c, 4, 5*time.Second)
	if _, ok := fs[0].(*wire.Welcome); !ok {
		t.Fatalf("first frame %s, want WELCOME", describe(fs))
	}
	r1, ok1 := fs[1].(*wire.UpReply)
	p, ok2 := fs[2].(*wire.Pong)
	r2, ok3 := fs[3].(*wire.UpReply)
	if !ok1 || !ok2 || !ok3 || r1.Request != 1 || r1.Code != wire.CodeOK || p.Time != 7 || r2.Request != 2 || r2.Code != wire.CodeUnknownBusiness {
		t.Fatalf("frames %s, want WELCOME, UP_REPLY 1 ok, PONG 7, UP_REPLY 2 unknown_business", describe(fs))
	}
}

// TestHandshake_RequestsAfterHelloWaitForWelcome: requests a device sends
// right after HELLO are handled after WELCOME, in order, whether the
// session opens at once (no store, or a fast Redis) or only after a slow
// Open. The slow path used to refuse them with protocol_violation.
func TestHandshake_RequestsAfterHelloWaitForWelcome(t *testing.T) {
	t.Parallel()
	t.Run("no store", func(t *testing.T) {
		n := startServing(t, testConfig(), Deps{})
		for _, url := range deviceURLs(n) {
			c := dialRaw(t, url)
			hello := wire.Append(nil, &wire.Hello{App: testApp, Device: "fast", Token: issue(t, "fast")})
			if strings.HasPrefix(url, "tcp") {
				// One write: HELLO and the requests may arrive in one read.
				if err := c.WriteRaw(append(hello, requestsAfterHello()...)); err != nil {
					t.Fatal(err)
				}
			} else {
				if err := c.WriteRaw(hello); err != nil {
					t.Fatal(err)
				}
				if err := c.WriteRaw(wire.AppendBatch(nil, requestsAfterHello(), false)); err != nil {
					t.Fatal(err)
				}
			}
			expectAnswersAfterWelcome(t, c)
		}
	})

	srv := streamstest.StartRedis(t)
	t.Run("store", func(t *testing.T) {
		n := startDurable(t, srv, "n1", streams.Config{})
		c := dialRaw(t, deviceTCPURL(n))
		hello := wire.Append(nil, &wire.Hello{App: testApp, Device: "redis", Token: issue(t, "redis")})
		if err := c.WriteRaw(append(hello, requestsAfterHello()...)); err != nil {
			t.Fatal(err)
		}
		expectAnswersAfterWelcome(t, c)
	})

	t.Run("slow open", func(t *testing.T) {
		cfg := testConfig()
		cfg.NodeID = "n2"
		g := newGatedStore(streams.New(srv.Client(t), streams.Config{}))
		n := startServing(t, cfg, Deps{Store: g})
		for i, url := range deviceURLs(n) {
			device := fmt.Sprintf("slow-%d", i)
			c := dialRaw(t, url)
			if err := c.Send(&wire.Hello{App: testApp, Device: device, Token: issue(t, device)}); err != nil {
				t.Fatal(err)
			}
			select {
			case <-g.opening:
			case <-time.After(5 * time.Second):
				t.Fatal("the store's Open was never called")
			}
			// The session is opening: every request now arrives before
			// WELCOME can be sent.
			before := counterValue(n.metrics.framesIn[wire.TypeUp])
			reqs := requestsAfterHello()
			if !strings.HasPrefix(url, "tcp") {
				reqs = wire.AppendBatch(nil, reqs, false) // one frame per message
			}
			if err := c.WriteRaw(reqs); err != nil {
				t.Fatal(err)
			}
			poll.Until(t, 5*time.Second, func() error {
				if got := counterValue(n.metrics.framesIn[wire.TypeUp]); got <= before {
					return fmt.Errorf("UP frames in: %v", got)
				}
				return nil
			})
			g.release <- struct{}{}
			expectAnswersAfterWelcome(t, c)
			// The JOIN took effect: a message to the group arrives.
			pushGroup(t, n, "news", "g-"+device)
			readUntil(t, c, 5*time.Second, func(f wire.Frame) bool {
				p := firstPush(f)
				return p != nil && p.Group == "news"
			})
		}
	})
}

// TestHandshake_TooManyRequestsBeforeWelcome: what a device sends before
// WELCOME is held within bounds; past 64 frames it is cut with
// protocol_violation.
func TestHandshake_TooManyRequestsBeforeWelcome(t *testing.T) {
	t.Parallel()
	srv := streamstest.StartRedis(t)
	g := newGatedStore(streams.New(srv.Client(t), streams.Config{}))
	defer close(g.release)
	n := startServing(t, testConfig(), Deps{Store: g})
	c := dialRaw(t, deviceTCPURL(n))
	if err := c.Send(&wire.Hello{App: testApp, Device: "eager", Token: issue(t, "eager")}); err != nil {
		t.Fatal(err)
	}
	<-g.opening
	var pings []byte
	for i := 0; i <= maxEarlyFrames; i++ {
		pings = wire.Append(pings, &wire.Ping{Time: uint64(i)})
	}
	if err := c.WriteRaw(pings); err != nil {
		t.Fatal(err)
	}
	last, _ := expectClosed(t, c, 5*time.Second)
	if e, ok := last.(*wire.Error); !ok || e.Code != wire.CodeProtocol {
		t.Fatalf("last frame %#v, want ERROR protocol_violation", last)
	}
}

// TestDeviceError_LoggedAtWarn: an ERROR frame from a device is logged at
// warn with its device, code and message, and otherwise ignored (no
// answer, the session stays open). The lines are rate-limited per node;
// the next line logged says how many were held back. It used to be logged
// at debug only.
func TestDeviceError_LoggedAtWarn(t *testing.T) {
	var logs logBuffer
	n, err := New(testConfig(), Deps{Logger: warnLogger(&logs)})
	if err != nil {
		t.Fatal(err)
	}
	n.startLoops()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = n.Shutdown(ctx)
	})
	s, st := openSink(t, n, "erring", true)
	s.onMessage(wire.Append(nil, &wire.Error{Code: wire.CodeBadFrame, Request: 3, Message: "cannot decode PUSH"}))
	lines := logs.lines("device reported an error")
	if len(lines) != 1 || !strings.Contains(lines[0], "level=WARN") || !strings.Contains(lines[0], "device=erring") ||
		!strings.Contains(lines[0], "code=1") || !strings.Contains(lines[0], "code_name=bad_frame") || !strings.Contains(lines[0], `message="cannot decode PUSH"`) {
		t.Fatalf("log lines %q", lines)
	}
	if closed, _ := st.isClosed(); closed || !s.isOpen() {
		t.Fatal("a device's ERROR closed its session")
	}

	// A burst: at most logLimitBurst lines, then the held-back count.
	for i := 0; i < 3*logLimitBurst; i++ {
		s.onMessage(wire.Append(nil, &wire.Error{Code: wire.CodeInternal, Message: strings.Repeat("x", 1000)}))
	}
	if got := len(logs.lines("device reported an error")); got > 1+logLimitBurst {
		t.Fatalf("%d lines logged for a burst of %d, want at most %d", got, 3*logLimitBurst, 1+logLimitBurst)
	}
	poll.Until(t, 2*time.Second, func() error {
		s.onMessage(wire.Append(nil, &wire.Error{Code: wire.CodeInternal, Message: "after"}))
		for _, l := range logs.lines(`message=after`) {
			if !strings.Contains(l, "suppressed_before=0") {
				return nil
			}
		}
		return fmt.Errorf("no line reports the held-back ones")
	})
	for _, l := range logs.lines("device reported an error") {
		if len(l) > 2*maxLoggedDeviceMessage+200 {
			t.Fatalf("a device's message is logged whole (%d bytes)", len(l))
		}
	}
	if f := st.frames(); len(f) != 1 {
		t.Fatalf("the server answered a device's ERROR: %s", describe(f))
	}
}

// TestResume_CursorAheadOfInbox: a HELLO cursor in the inbox's epoch but
// beyond its last seq gets recovered = false, a new epoch and the server's
// ack cursor, as §8.3 says; the next connect in the new epoch is
// recovered; the node logs why at warn.
func TestResume_CursorAheadOfInbox(t *testing.T) {
	t.Parallel()
	srv := streamstest.StartRedis(t)
	var logs logBuffer
	cfg := testConfig()
	n := startServing(t, cfg, Deps{Store: streams.New(srv.Client(t), streams.Config{}), Logger: warnLogger(&logs)})

	// A fresh device gets an inbox epoch; two pushes take seqs 1 and 2.
	c := dialRaw(t, deviceTCPURL(n))
	epoch := welcomeOf(t, hello(t, c, &wire.Hello{Device: "ahead", Token: issue(t, "ahead")})).Epoch
	_ = c.Close()
	mustPush(t, n, []string{"ahead"}, "one")
	mustPush(t, n, []string{"ahead"}, "two")

	// A cursor at seq 1 counts as an ack.
	c = dialRaw(t, deviceTCPURL(n))
	if w := welcomeOf(t, hello(t, c, &wire.Hello{Device: "ahead", Token: issue(t, "ahead"), Epoch: epoch, Seq: 1})); !w.Recovered || w.Acked != 1 {
		t.Fatalf("WELCOME %+v, want recovered, acked 1", w)
	}
	_ = c.Close()
	poll.Until(t, 5*time.Second, func() error {
		if st := deviceState(t, n, "ahead"); st.Acked != 1 || st.Route != nil {
			return fmt.Errorf("acked %d, route %+v", st.Acked, st.Route)
		}
		return nil
	})

	// A cursor at seq 9 of an inbox that assigned 2.
	c = dialRaw(t, deviceTCPURL(n))
	if err := c.Send(&wire.Hello{App: testApp, Device: "ahead", Token: issue(t, "ahead"), Epoch: epoch, Seq: 9}); err != nil {
		t.Fatal(err)
	}
	fs := readFlat(t, c, 2, 5*time.Second)
	w := welcomeOf(t, fs[0])
	if w.Recovered || w.Epoch == epoch || w.Epoch == "" || w.Acked != 1 {
		t.Fatalf("WELCOME %+v; want recovered false, a new epoch, acked 1", w)
	}
	// Seq 2 is replayed in the new epoch.
	if p, ok := fs[1].(*wire.Push); !ok || p.Seq != 2 || string(p.Payload) != "two" {
		t.Fatalf("after WELCOME %s, want PUSH seq 2", describe(fs[1:]))
	}
	lines := logs.lines("resume cursor beyond")
	if len(lines) != 1 || !strings.Contains(lines[0], "level=WARN") || !strings.Contains(lines[0], "lost=cursor_ahead") ||
		!strings.Contains(lines[0], "cursor_seq=9") || !strings.Contains(lines[0], "last=2") {
		t.Fatalf("log lines %q", lines)
	}
	_ = c.Close()

	c = dialRaw(t, deviceTCPURL(n))
	w = welcomeOf(t, hello(t, c, &wire.Hello{Device: "ahead", Token: issue(t, "ahead"), Epoch: w.Epoch, Seq: 2}))
	if !w.Recovered {
		t.Fatalf("WELCOME %+v in the new epoch, want recovered", w)
	}
}

// welcomeOf returns the WELCOME in f, which may be a BATCH.
func welcomeOf(t *testing.T, f wire.Frame) *wire.Welcome {
	t.Helper()
	if b, ok := f.(*wire.Batch); ok {
		var w *wire.Welcome
		_ = b.Each(1<<22, func(in wire.Frame) error {
			if x, ok := in.(*wire.Welcome); ok && w == nil {
				w = x
			}
			return nil
		})
		f = w
	}
	w, ok := f.(*wire.Welcome)
	if !ok || w == nil {
		t.Fatalf("answer to HELLO %#v, want WELCOME", f)
	}
	return w
}

// firstPush returns the first PUSH in f, which may be a BATCH.
func firstPush(f wire.Frame) *wire.Push {
	if b, ok := f.(*wire.Batch); ok {
		var p *wire.Push
		_ = b.Each(1<<22, func(in wire.Frame) error {
			if x, ok := in.(*wire.Push); ok && p == nil {
				p = x
			}
			return nil
		})
		return p
	}
	p, _ := f.(*wire.Push)
	return p
}

// TestHello_Businesses: HELLO business ids are checked as ids for every
// app; an app that lists its businesses refuses others with
// unknown_business, and one that lists none (nil or empty) accepts any id.
func TestHello_Businesses(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.Apps = append(cfg.Apps,
		AppConfig{ID: "listed", Secrets: map[string][]byte{"k1": testSecret}, Businesses: []string{"chat"}},
		AppConfig{ID: "empty", Secrets: map[string][]byte{"k1": testSecret}, Businesses: []string{}},
	)
	n := newSinkNode(t, cfg)
	cases := []struct {
		app        string
		businesses []string
		want       wire.Code
	}{
		{testApp, []string{"anything", "else:1"}, wire.CodeOK},
		{testApp, []string{"not an id"}, wire.CodeBadHello},
		{testApp, []string{""}, wire.CodeBadHello},
		{"empty", []string{"anything"}, wire.CodeOK},
		{"empty", []string{"bad/id"}, wire.CodeBadHello},
		{"listed", []string{"chat"}, wire.CodeOK},
		{"listed", []string{"chat", "ads"}, wire.CodeUnknownBusiness},
		{"listed", []string{"bad id"}, wire.CodeBadHello},
	}
	for i, c := range cases {
		st := &sinkTransport{keep: true}
		s := n.newSession(st)
		st.s = s
		device := fmt.Sprintf("d%d", i)
		s.onMessage(wire.Append(nil, &wire.Hello{App: c.app, Device: device, Token: mustIssueFor(t, c.app, device), Businesses: c.businesses}))
		var frames []wire.Frame
		poll.Until(t, 2*time.Second, func() error {
			if frames = st.frames(); len(frames) == 0 {
				return fmt.Errorf("no answer to HELLO")
			}
			return nil
		})
		var got wire.Code
		switch f := frames[0].(type) {
		case *wire.Welcome:
			got = wire.CodeOK
		case *wire.Error:
			got = f.Code
		}
		if got != c.want {
			t.Errorf("app %s businesses %q: %s, want %s", c.app, c.businesses, got, c.want)
		}
	}
}

// TestRequests_ReplyPayloads pins §4.7 and §10: JOIN and LEAVE replies
// carry no payload whatever their code; UP refusals the node decides carry
// a message.
func TestRequests_ReplyPayloads(t *testing.T) {
	cfg := testConfig()
	cfg.MaxGroups = 1
	n := newSinkNode(t, cfg)
	s, st := openSink(t, n, "asker", true)
	for _, f := range []wire.Frame{
		&wire.Join{Request: 1, Group: "news"},
		&wire.Join{Request: 2, Group: "sport"},  // too_many_groups
		&wire.Join{Request: 3, Group: "no way"}, // bad_group
		&wire.Leave{Request: 4, Group: "no way"},
		&wire.Leave{Request: 5, Group: "news"},
		&wire.Up{Request: 6, Business: "nowhere", Payload: []byte("x")},
	} {
		s.onMessage(wire.Append(nil, f))
	}
	want := map[uint64]wire.Code{1: wire.CodeOK, 2: wire.CodeTooManyGroups, 3: wire.CodeBadGroup, 4: wire.CodeBadGroup,
		5: wire.CodeOK, 6: wire.CodeUnknownBusiness}
	replies := map[uint64]*wire.UpReply{}
	poll.Until(t, 2*time.Second, func() error {
		for _, f := range st.frames() {
			if r, ok := f.(*wire.UpReply); ok {
				replies[r.Request] = r
			}
		}
		if len(replies) < len(want) {
			return fmt.Errorf("%d replies of %d", len(replies), len(want))
		}
		return nil
	})
	for req, code := range want {
		r := replies[req]
		if r.Code != code {
			t.Errorf("request %d: %s, want %s", req, r.Code, code)
		}
		if req <= 5 && len(r.Payload) != 0 {
			t.Errorf("JOIN/LEAVE request %d (%s) has payload %q", req, r.Code, r.Payload)
		}
		if req == 6 && len(r.Payload) == 0 {
			t.Errorf("UP refused with %s carries no message", r.Code)
		}
	}
}
