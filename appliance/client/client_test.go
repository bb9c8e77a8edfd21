package client

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/pushd/pushd/appliance/wire"
	"github.com/pushd/pushd/internal/poll"
)

// fullJitter makes the client wait the whole backoff bound every time.
func fullJitter(n int64) int64 { return n - 1 }

func newClient(t *testing.T, cfg Config) *Client {
	t.Helper()
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestClient_HandshakeAndWelcome(t *testing.T) {
	srv := newFakeServer(t)
	var rec recorder
	cfg := testConfig(srv)
	cfg.Platform, cfg.Version, cfg.Businesses, cfg.LZ4 = "iot", "v9", []string{"chat"}, true
	cfg.Cursor = Cursor{Epoch: "old", Seq: 7}
	cfg.OnWelcome = func(w Welcome) {
		rec.add("welcome %s %s %v %s %s", w.Session, w.Node, w.Recovered, w.Epoch, w.Heartbeat)
	}
	c := newClient(t, cfg)
	run(t, c)

	sc := srv.next(t)
	h := sc.welcome(t, &wire.Welcome{Session: "s1", Node: "n1", Heartbeat: 10_000, Recovered: false, Epoch: "e2", Acked: 3})
	if h.Token != "tok" || h.App != "app1" || h.Device != "dev-1" || h.Platform != "iot" || h.Version != "v9" ||
		fmt.Sprint(h.Businesses) != "[chat]" || h.Epoch != "old" || h.Seq != 7 || h.Caps&wire.CapLZ4 == 0 {
		t.Errorf("HELLO %+v", h)
	}
	poll.Until(t, 5*time.Second, rec.has("welcome s1 n1 false e2 10s"))
	poll.Until(t, 5*time.Second, func() error {
		if !c.Connected() {
			return errors.New("not connected after WELCOME")
		}
		return nil
	})
	// A new epoch replaces the cursor with the server's ack cursor.
	if cur := c.Cursor(); cur != (Cursor{Epoch: "e2", Seq: 3}) {
		t.Errorf("cursor %+v after WELCOME, want {e2 3}", cur)
	}
}

func TestClient_ReceiveCallback(t *testing.T) {
	srv := newFakeServer(t)
	msgs := make(chan Message, 4)
	cfg := testConfig(srv)
	cfg.OnMessage = func(m Message) { msgs <- m }
	c := newClient(t, cfg)
	run(t, c)
	sc := srv.next(t)
	sc.welcome(t, &wire.Welcome{Session: "s1", Heartbeat: 10_000, Recovered: true, Epoch: "e1"})
	created := time.UnixMilli(time.Now().UnixMilli())
	sc.mustSend(t, &wire.Push{Seq: 1, ID: "m1", Business: "chat", Priority: wire.PriorityHigh,
		Created: uint64(created.UnixMilli()), Payload: []byte("hello"), Redelivery: true})
	select {
	case m := <-msgs:
		if m.Seq != 1 || m.ID != "m1" || m.Business != "chat" || m.Priority != wire.PriorityHigh ||
			!m.Created.Equal(created) || string(m.Payload) != "hello" || !m.Redelivered || m.Group != "" {
			t.Errorf("message %+v", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("OnMessage not called")
	}
}

// TestClient_AckAfterOnCursor: the client acks a BATCH once, with the
// highest cursor, and only after OnCursor has returned for it.
func TestClient_AckAfterOnCursor(t *testing.T) {
	srv := newFakeServer(t)
	var rec recorder
	inCursor, release := make(chan struct{}), make(chan struct{})
	cfg := testConfig(srv)
	cfg.OnCursor = func(cur Cursor) {
		rec.add("cursor %s %d", cur.Epoch, cur.Seq)
		if cur.Seq == 3 {
			close(inCursor)
			<-release
		}
	}
	c := newClient(t, cfg)
	run(t, c)
	sc := srv.next(t)
	sc.welcome(t, &wire.Welcome{Session: "s1", Heartbeat: 10_000, Recovered: true, Epoch: "e1"})
	sc.mustSend(t,
		&wire.Push{Seq: 1, ID: "m1"},
		&wire.Push{Seq: 2, ID: "m2"},
		&wire.Push{Seq: 3, ID: "m3"},
	)
	select {
	case <-inCursor:
	case <-time.After(5 * time.Second):
		t.Fatal("OnCursor not called for seq 3")
	}
	// OnCursor is still running: nothing may be acked yet.
	if f, err := sc.read(200 * time.Millisecond); err == nil {
		t.Fatalf("%s %+v received while OnCursor runs", f.Type(), f)
	}
	close(release)
	if a := expect[*wire.Ack](t, sc); a.Seq != 3 {
		t.Fatalf("ack %d, want one cumulative ack of 3", a.Seq)
	}
	sc.mustSend(t, &wire.Push{Seq: 4, ID: "m4"})
	if a := expect[*wire.Ack](t, sc); a.Seq != 4 {
		t.Fatalf("ack %d, want 4", a.Seq)
	}
	if got, want := fmt.Sprint(rec.events()), "[cursor e1 1 cursor e1 2 cursor e1 3 cursor e1 4]"; got != want {
		t.Errorf("OnCursor calls %s, want %s", got, want)
	}
}

func TestBackoff_GrowsAndIsCappedWithJitter(t *testing.T) {
	ms := time.Millisecond
	b := backoff{min: 100 * ms, max: time.Second, cur: 100 * ms, rand: fullJitter}
	for i, want := range []time.Duration{100 * ms, 200 * ms, 400 * ms, 800 * ms, time.Second, time.Second} {
		if got := b.next(); got != want {
			t.Errorf("delay %d = %s with full jitter, want %s", i+1, got, want)
		}
	}
	b.reset()
	if got := b.next(); got != 100*ms {
		t.Errorf("delay after reset %s, want 100ms", got)
	}

	// With real jitter the delays spread over [0, bound].
	b = backoff{min: 8 * ms, max: 8 * ms, cur: 8 * ms, rand: rand.Int64N}
	var low, high int
	for range 1000 {
		d := b.next()
		if d < 0 || d > 8*ms {
			t.Fatalf("delay %s outside [0, 8ms]", d)
		}
		if d < 4*ms {
			low++
		} else {
			high++
		}
	}
	if low < 100 || high < 100 {
		t.Errorf("delays not spread over [0, 8ms]: %d below 4ms, %d above", low, high)
	}
}

// TestClient_ReconnectsAfterServerDrops: the client comes back on its own
// and resumes from its cursor.
func TestClient_ReconnectsAfterServerDrops(t *testing.T) {
	srv := newFakeServer(t)
	var rec recorder
	cfg := testConfig(srv)
	cfg.OnWelcome = func(w Welcome) { rec.add("welcome %s", w.Session) }
	cfg.OnDisconnect = func(err error) { rec.add("disconnect") }
	c := newClient(t, cfg)
	run(t, c)

	sc := srv.next(t)
	sc.welcome(t, &wire.Welcome{Session: "s1", Heartbeat: 10_000, Recovered: true, Epoch: "e1"})
	sc.mustSend(t, &wire.Push{Seq: 1, ID: "m1"})
	expect[*wire.Ack](t, sc)
	sc.close()

	sc = srv.next(t)
	h := sc.welcome(t, &wire.Welcome{Session: "s2", Heartbeat: 10_000, Recovered: true, Epoch: "e1", Acked: 1})
	if h.Epoch != "e1" || h.Seq != 1 {
		t.Errorf("second HELLO resumes from %s/%d, want e1/1", h.Epoch, h.Seq)
	}
	poll.Until(t, 5*time.Second, rec.has("welcome s2"))
	if got, want := fmt.Sprint(rec.events()), "[welcome s1 disconnect welcome s2]"; got != want {
		t.Errorf("events %s, want %s", got, want)
	}
}

// TestClient_CloseDuringBackoff: Close interrupts the wait before a
// reconnect, and nothing is dialed after it.
func TestClient_CloseDuringBackoff(t *testing.T) {
	srv := newFakeServer(t)
	cfg := testConfig(srv)
	cfg.BackoffMin, cfg.BackoffMax = time.Minute, time.Minute
	disconnected := make(chan struct{}, 1)
	cfg.OnDisconnect = func(error) { disconnected <- struct{}{} }
	c := newClient(t, cfg)
	c.jitter = fullJitter
	errc, _ := run(t, c)

	sc := srv.next(t)
	sc.welcome(t, &wire.Welcome{Session: "s1", Heartbeat: 10_000, Recovered: true})
	sc.close()
	select {
	case <-disconnected:
	case <-time.After(5 * time.Second):
		t.Fatal("no disconnect after the server dropped the connection")
	}
	start := time.Now()
	_ = c.Close()
	if err := runResult(t, errc); !errors.Is(err, ErrClosed) {
		t.Errorf("Run returned %v, want ErrClosed", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Run returned %s after Close", d)
	}
	if n := srv.settle(t); n != 1 {
		t.Errorf("%d connections, want 1: the client dialed after Close", n)
	}
}

// TestClient_CloseDuringHandshake: Close does not wait for a WELCOME that
// does not come.
func TestClient_CloseDuringHandshake(t *testing.T) {
	srv := newFakeServer(t)
	cfg := testConfig(srv)
	cfg.HandshakeTimeout = time.Minute
	c := newClient(t, cfg)
	errc, _ := run(t, c)
	sc := srv.next(t)
	expect[*wire.Hello](t, sc)
	_ = c.Close()
	if err := runResult(t, errc); !errors.Is(err, ErrClosed) {
		t.Errorf("Run returned %v, want ErrClosed", err)
	}
	if n := srv.settle(t); n != 1 {
		t.Errorf("%d connections, want 1: the client dialed after Close", n)
	}
}

func TestClient_CloseBeforeRun(t *testing.T) {
	srv := newFakeServer(t)
	c := newClient(t, testConfig(srv))
	_ = c.Close()
	errc, _ := run(t, c)
	if err := runResult(t, errc); !errors.Is(err, ErrClosed) {
		t.Errorf("Run returned %v, want ErrClosed", err)
	}
	if n := srv.settle(t); n != 0 {
		t.Errorf("%d connections after Close, want 0", n)
	}
}

// TestClient_RedirectsInARowBackOff: the first redirect is followed at
// once, further ones in a row after the growing backoff.
func TestClient_RedirectsInARowBackOff(t *testing.T) {
	srv := newFakeServer(t)
	cfg := testConfig(srv)
	cfg.BackoffMin, cfg.BackoffMax = 300*time.Millisecond, 600*time.Millisecond
	c := newClient(t, cfg)
	c.jitter = fullJitter
	run(t, c)

	var at []time.Time
	for range 5 {
		sc := srv.next(t)
		sc.welcome(t, &wire.Welcome{Session: "s", Heartbeat: 10_000, Recovered: true})
		at = append(at, time.Now())
		sc.mustSend(t, &wire.Control{Kind: wire.ControlRedirect, Addr: srv.url()})
	}
	gap := func(i int) time.Duration { return at[i].Sub(at[i-1]) }
	if gap(1) >= 300*time.Millisecond {
		t.Errorf("first redirect followed after %s, want at once", gap(1))
	}
	for i, least := range map[int]time.Duration{2: 300 * time.Millisecond, 3: 600 * time.Millisecond, 4: 600 * time.Millisecond} {
		if gap(i) < least {
			t.Errorf("redirect %d in a row followed after %s, want at least %s", i, gap(i), least)
		}
	}
}

// TestClient_RefusalEndsRun: a refusal a retry can fix is retried; one it
// cannot ends Run with *RefusedError.
func TestClient_RefusalEndsRun(t *testing.T) {
	srv := newFakeServer(t)
	c := newClient(t, testConfig(srv))
	errc, _ := run(t, c)

	sc := srv.next(t)
	expect[*wire.Hello](t, sc)
	sc.mustSend(t, &wire.Error{Code: wire.CodeUnavailable, Message: "store unreachable"})
	sc = srv.next(t)
	expect[*wire.Hello](t, sc)
	sc.mustSend(t, &wire.Error{Code: wire.CodeTokenSignature, Message: "bad signature"})

	err := runResult(t, errc)
	var refused *RefusedError
	if !errors.As(err, &refused) || refused.Code != wire.CodeTokenSignature || refused.Message != "bad signature" {
		t.Fatalf("Run returned %v, want a token_bad_signature refusal", err)
	}
	if n := srv.settle(t); n != 2 {
		t.Errorf("%d connections, want 2", n)
	}
}

func TestClient_KickEndsRun(t *testing.T) {
	srv := newFakeServer(t)
	controls := make(chan wire.Control, 1)
	cfg := testConfig(srv)
	cfg.OnControl = func(c wire.Control) { controls <- c }
	c := newClient(t, cfg)
	errc, _ := run(t, c)
	sc := srv.next(t)
	sc.welcome(t, &wire.Welcome{Session: "s1", Heartbeat: 10_000, Recovered: true})
	sc.mustSend(t, &wire.Control{Kind: wire.ControlKick, Reason: "another connection of this device took over"})
	if err := runResult(t, errc); !errors.Is(err, ErrKicked) {
		t.Fatalf("Run returned %v, want ErrKicked", err)
	}
	if k := <-controls; k.Kind != wire.ControlKick {
		t.Errorf("OnControl got %s", k.Kind)
	}
	if n := srv.settle(t); n != 1 {
		t.Errorf("%d connections, want 1: a kicked client must not reconnect", n)
	}
}

// TestClient_ErrorAfterWelcomeReconnects: an ERROR after WELCOME ends the
// connection, not the device's right to connect, whatever its code.
func TestClient_ErrorAfterWelcomeReconnects(t *testing.T) {
	srv := newFakeServer(t)
	c := newClient(t, testConfig(srv))
	run(t, c)
	sc := srv.next(t)
	sc.welcome(t, &wire.Welcome{Session: "s1", Heartbeat: 10_000, Recovered: true})
	sc.mustSend(t, &wire.Error{Code: wire.CodeTokenSignature, Message: "not a refusal after WELCOME"})
	sc.waitClosed(t)
	sc = srv.next(t)
	expect[*wire.Hello](t, sc)
}

// TestClient_OnFrameSeesEveryFrameFirst: OnFrame gets every frame, BATCH
// unwrapped, before the client acts on it; dropped PUSHes go to OnDrop.
func TestClient_OnFrameSeesEveryFrameFirst(t *testing.T) {
	srv := newFakeServer(t)
	var rec recorder
	cfg := testConfig(srv)
	cfg.OnFrame = func(f wire.Frame) { rec.add("frame %s", f.Type()) }
	cfg.OnWelcome = func(w Welcome) { rec.add("welcome %s", w.Session) }
	cfg.OnMessage = func(m Message) { rec.add("msg %d", m.Seq) }
	cfg.OnDrop = func(m Message, why DropReason) { rec.add("drop %d %s", m.Seq, why) }
	cfg.OnControl = func(c wire.Control) { rec.add("control %s", c.Kind) }
	cfg.OnDisconnect = func(err error) { rec.add("disconnect") }
	c := newClient(t, cfg)
	errc, _ := run(t, c)

	sc := srv.next(t)
	expect[*wire.Hello](t, sc)
	sc.mustSend(t, &wire.Welcome{Session: "s1", Heartbeat: 10_000, Recovered: true, Epoch: "e1"}, &wire.Push{Seq: 1, ID: "m1"})
	expect[*wire.Ack](t, sc)
	sc.mustSend(t,
		&wire.Pong{Time: 5},
		&wire.UpReply{Request: 99, Code: wire.CodeOK},
		&wire.Control{Kind: wire.ControlDegraded, Priority: wire.PriorityLow},
		&wire.Push{Seq: 1, ID: "m1", Redelivery: true},
	)
	if a := expect[*wire.Ack](t, sc); a.Seq != 1 {
		t.Fatalf("ack of the repeat %d, want 1", a.Seq)
	}
	sc.mustSend(t, &wire.Push{Seq: 3, ID: "m3"}) // seq 2 lost on the way
	if a := expect[*wire.Ack](t, sc); a.Seq != 1 {
		t.Fatalf("ack after an unflagged jump %d, want the cursor 1", a.Seq)
	}
	sc.mustSend(t, &wire.Error{Code: wire.CodeHeartbeatMissed, Message: "idle"})
	sc = srv.next(t)
	expect[*wire.Hello](t, sc)
	sc.mustSend(t, &wire.Error{Code: wire.CodeUnknownApp, Message: "no such app"})
	var refused *RefusedError
	if err := runResult(t, errc); !errors.As(err, &refused) {
		t.Fatalf("Run returned %v, want a refusal", err)
	}
	want := []string{
		"frame WELCOME", "welcome s1", "frame PUSH", "msg 1",
		"frame PONG", "frame UP_REPLY", "frame CONTROL", "control degraded", "frame PUSH", "drop 1 repeat",
		"frame PUSH", "drop 3 out_of_order",
		"frame ERROR", "disconnect",
		"frame ERROR", "disconnect",
	}
	if got := rec.events(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("events\n%q\nwant\n%q", got, want)
	}
}

// TestClient_UnflaggedJumpInBatchAcksTwice: the first ACK moves the
// server's cursor past the in-order part of the BATCH, the second, equal
// to it, asks for a fast retransmit of what was lost.
func TestClient_UnflaggedJumpInBatchAcksTwice(t *testing.T) {
	srv := newFakeServer(t)
	var rec recorder
	cfg := testConfig(srv)
	cfg.OnMessage = func(m Message) { rec.add("msg %d", m.Seq) }
	cfg.OnGap = func(from, to uint64) { rec.add("gap %d-%d", from, to) }
	c := newClient(t, cfg)
	run(t, c)
	sc := srv.next(t)
	sc.welcome(t, &wire.Welcome{Session: "s1", Heartbeat: 10_000, Recovered: true, Epoch: "e1"})
	sc.mustSend(t, &wire.Push{Seq: 1, ID: "m1"}, &wire.Push{Seq: 3, ID: "m3"})
	for i := range 2 {
		if a := expect[*wire.Ack](t, sc); a.Seq != 1 {
			t.Fatalf("ack %d: %d, want 1", i+1, a.Seq)
		}
	}
	// The retransmit is taken in order; a flagged jump is a gap, acked once.
	sc.mustSend(t, &wire.Push{Seq: 2, ID: "m2"}, &wire.Push{Seq: 3, ID: "m3", Redelivery: true}, &wire.Push{Seq: 5, ID: "m5", Gap: true})
	if a := expect[*wire.Ack](t, sc); a.Seq != 5 {
		t.Fatalf("ack after the retransmit %d, want 5", a.Seq)
	}
	sc.mustSend(t, &wire.Push{Seq: 6, ID: "m6"})
	if a := expect[*wire.Ack](t, sc); a.Seq != 6 {
		t.Fatalf("ack %d, want 6 (a single ack for the previous BATCH)", a.Seq)
	}
	if got, want := fmt.Sprint(rec.events()), "[msg 1 msg 2 msg 3 gap 4-4 msg 5 msg 6]"; got != want {
		t.Errorf("events %s, want %s", got, want)
	}
}
