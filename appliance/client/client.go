// Package client is the Go device SDK for pushd: it keeps one connection
// to a pushd node open on behalf of a device, receives its messages in
// order, acknowledges them, and comes back after every failure.
//
// The simplest use:
//
//	c, err := client.New(client.Config{
//		URL: "ws://push.example.com:8080/v1/ws", App: "app1", Device: "dev-1",
//		Token: tok,
//		OnMessage: func(m client.Message) { fmt.Printf("%s\n", m.Payload) },
//	})
//	err = c.Run(ctx) // until ctx is done, the device is kicked, or auth fails
//
// Delivery is at least once on the wire and exactly once to OnMessage for
// messages of one inbox: the client drops replays by its resume cursor
// (the last inbox sequence number handled) and other repeats by message id
// within a window. Persist the cursor in OnCursor and pass it back in
// Config.Cursor after a restart; the server then replays only what came
// after it, and says in Welcome.Recovered whether anything was lost.
//
// Group messages are not acked. For a group that keeps a catch-up stream
// the client keeps a cursor (OnGroupCursor, Client.GroupCursor; pass them
// back in Config.GroupCursors after a restart) and sends it at every
// connect: the server replays what the device missed, then OnCatchUp says
// whether anything of the group was lost.
//
// OnMessage and the other callbacks run on the connection's read
// goroutine, one at a time and in order; a slow callback slows delivery.
// Methods of Client are safe for concurrent use.
package client

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pushd/pushd/appliance/wire"
)

// Cursor is the resume position of a device: the inbox epoch and the last
// sequence number handled.
type Cursor struct {
	Epoch string
	Seq   uint64
}

// Message is one message handed to OnMessage.
type Message struct {
	ID       string
	Seq      uint64 // inbox sequence number; 0 for group or unstored messages
	Business string
	Priority wire.Priority
	Created  time.Time
	Group    string
	// GroupEpoch and GroupSeq are the message's place in its group's
	// catch-up stream (protocol §10.2); empty and 0 for a group without
	// one and for every other message.
	GroupEpoch string
	GroupSeq   uint64
	Payload    []byte
	// Redelivered is set when the server sent this message before; the
	// client still hands it over only once.
	Redelivered bool
}

// DropReason says why a received PUSH was not handed to OnMessage.
type DropReason uint8

const (
	// DropRepeat is a message already handled: its seq is at or below
	// the cursor, or its id was seen within the dedupe window.
	DropRepeat DropReason = iota + 1
	// DropOutOfOrder is an inbox message whose seq skips past the next
	// expected one without FlagGap: a frame was lost on the way, so the
	// client re-acks its cursor and the server resends in order.
	DropOutOfOrder
)

// String returns the reason's name: "repeat" or "out_of_order".
func (r DropReason) String() string {
	switch r {
	case DropRepeat:
		return "repeat"
	case DropOutOfOrder:
		return "out_of_order"
	}
	return fmt.Sprintf("DropReason(%d)", uint8(r))
}

// Welcome describes an accepted session.
type Welcome struct {
	Session   string
	Node      string
	Recovered bool // false: messages after the cursor were lost; resync the app
	Epoch     string
	Heartbeat time.Duration
}

// DispatchFrom returns a Config.Dispatch function that asks a region's
// dispatch endpoint (GET /v1/dispatch on any node's device port, e.g.
// "http://push.example.com:8080") which node app's device should use,
// before every connect. Several bases (one per node, or a load balancer
// and a node) are tried in turn, starting after the last one that
// answered, until one answers. The URL to avoid is passed on, so the
// region names another node than the one the device just lost. With tcp
// set it returns the node's raw TCP URL when it has one.
func DispatchFrom(bases []string, app, device string, tcp bool) func(ctx context.Context, avoid string) (string, error) {
	hc := &http.Client{Timeout: 10 * time.Second}
	var mu sync.Mutex
	next := 0 // the base to try first
	ask := func(ctx context.Context, base, avoid string) (string, error) {
		q := url.Values{"app": {app}, "device": {device}}
		if avoid != "" {
			q.Set("avoid", avoid)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(base, "/")+"/v1/dispatch?"+q.Encode(), nil)
		if err != nil {
			return "", err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return "", fmt.Errorf("dispatch at %s answered %s", base, resp.Status)
		}
		var a struct {
			WSURL  string `json:"ws_url"`
			TCPURL string `json:"tcp_url"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
			return "", fmt.Errorf("dispatch answer from %s: %w", base, err)
		}
		if tcp && a.TCPURL != "" {
			return a.TCPURL, nil
		}
		if a.WSURL == "" {
			return "", fmt.Errorf("dispatch answer from %s names no URL", base)
		}
		return a.WSURL, nil
	}
	return func(ctx context.Context, avoid string) (string, error) {
		if len(bases) == 0 {
			return "", errors.New("dispatch: no endpoint configured")
		}
		mu.Lock()
		first := next
		mu.Unlock()
		var errs []error
		for i := range bases {
			k := (first + i) % len(bases)
			u, err := ask(ctx, bases[k], avoid)
			if err == nil {
				mu.Lock()
				next = k
				mu.Unlock()
				return u, nil
			}
			errs = append(errs, err)
			if ctx.Err() != nil {
				break
			}
		}
		return "", errors.Join(errs...)
	}
}

// Errors that end Run.
var (
	// ErrKicked means another connection of this device took over.
	ErrKicked = errors.New("kicked: another connection of this device took over")
	// ErrClosed means Close was called.
	ErrClosed = errors.New("client closed")
)

// RefusedError is a handshake the server refused (bad token, unknown app).
// Run returns it unless TokenFunc can mint a new token.
type RefusedError struct {
	Code    wire.Code
	Message string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("server refused the session: %s (%d): %s", e.Code, e.Code, e.Message)
}

// Config configures a Client. Every field documents its zero value.
type Config struct {
	// URL of the node: ws://host:port/v1/ws, wss://…, tcp://host:port or
	// tls://host:port. Required unless Dispatch is set.
	URL string
	// Dispatch, when set, is called before every connect to choose the
	// URL (for example from a region's /v1/dispatch answer: see
	// DispatchFrom). avoid is the URL the previous attempt failed to
	// reach or lost its connection to, "" otherwise: a dispatcher names
	// another node when there is one, so a device of a node that died
	// comes back at once instead of retrying it until the region notices.
	Dispatch func(ctx context.Context, avoid string) (string, error)

	App, Device string
	// Token authenticates the device. TokenFunc, when set, is called for
	// a fresh token before each connect and after a token refusal.
	Token     string
	TokenFunc func(ctx context.Context) (string, error)

	Platform, Version string
	Businesses        []string
	// LZ4 offers lz4-compressed batches. Zero: not offered.
	LZ4 bool
	// Origin is sent on WebSocket upgrades, as a browser would.
	Origin string

	// Cursor is where to resume, as last persisted by OnCursor.
	// Zero: a fresh install.
	Cursor Cursor
	// OnCursor is called with the new cursor before the client acks it.
	// Persist it there; a crash after OnCursor returns loses nothing.
	OnCursor func(Cursor)
	// GroupCursors are the positions to resume the device's groups'
	// catch-up streams from, as last handed to OnGroupCursor. Zero: none
	// (a new member starts from the end of each stream).
	GroupCursors []GroupCursor
	// OnGroupCursor is called when a group's cursor moves; persist it
	// there. Group messages are not acked, so persisting late only makes
	// the next catch-up replay more (which the client drops by id).
	OnGroupCursor func(GroupCursor)
	// OnCatchUp is called when a group's catch-up is done, after its
	// replayed messages went to OnMessage. Recovered false: some of the
	// group's messages may be lost; resync it.
	OnCatchUp func(CatchUp)

	OnMessage func(Message)
	OnWelcome func(Welcome)
	OnControl func(wire.Control)
	// OnGap is called when a message arrives whose sequence number skips
	// past the next expected one within a session (expired or shed on
	// the server); from is the first missing, to the last.
	OnGap func(from, to uint64)
	// OnDisconnect is called after a connection ends, with why.
	OnDisconnect func(error)
	// OnFrame is called with every frame received, before the client acts
	// on it: the WELCOME or ERROR answering HELLO, every PUSH (repeats
	// the client then drops included), PONG, UP_REPLY, CONTROL, ERROR,
	// and frames the client rejects as unexpected. A BATCH is unwrapped:
	// OnFrame gets its inner frames, in order, never the BATCH. It runs
	// on the read goroutine like the other callbacks and must not block,
	// modify the frame, or keep its byte slices after it returns (copy
	// what it needs). Zero: not called.
	OnFrame func(wire.Frame)
	// OnDrop is called, instead of OnMessage, for a received PUSH the
	// client does not hand over, with why. Zero: not called.
	OnDrop func(m Message, why DropReason)

	// DedupeWindow is how many recent message ids are remembered to drop
	// repeats that the cursor cannot catch. Zero: 4096.
	DedupeWindow int
	// BackoffMin and BackoffMax bound the reconnect delay, which doubles
	// with full jitter. Zero: 250 ms and 30 s.
	BackoffMin, BackoffMax time.Duration
	// DialTimeout bounds a connect including TLS and the HTTP upgrade;
	// HandshakeTimeout bounds the wait for WELCOME. Zero: 10 s each.
	DialTimeout, HandshakeTimeout time.Duration
	// WriteTimeout bounds every write to the connection. A write that
	// times out (a server or path that stopped reading) closes the
	// connection, and Run reconnects. Zero: 10 s.
	WriteTimeout time.Duration
	// TLS configures wss:// and tls://. Zero: system roots.
	TLS *tls.Config
	// LocalAddr binds the local end (load tools spread source addresses).
	LocalAddr net.Addr
}

// Client keeps a device connected. Create it with New and drive it with
// Run.
type Client struct {
	cfg Config

	mu      sync.Mutex
	conn    frameConn // current connection; nil between connections
	cursor  Cursor
	groups  groupCursors
	dedupe  *idWindow
	pending map[uint64]chan *wire.UpReply
	nextReq uint64
	closed  bool
	stop    context.CancelFunc // ends Run's current attempt; nil until Run starts
	welcome Welcome
	jitter  func(n int64) int64 // rand.Int64N; tests make it deterministic

	connected atomic.Bool
	done      chan struct{}
}

// New checks cfg and returns a client; it does not connect.
func New(cfg Config) (*Client, error) {
	if cfg.URL == "" && cfg.Dispatch == nil {
		return nil, errors.New("client: URL or Dispatch is required")
	}
	if cfg.App == "" || cfg.Device == "" {
		return nil, errors.New("client: App and Device are required")
	}
	if cfg.Token == "" && cfg.TokenFunc == nil {
		return nil, errors.New("client: Token or TokenFunc is required")
	}
	if cfg.DedupeWindow == 0 {
		cfg.DedupeWindow = 4096
	}
	if cfg.BackoffMin == 0 {
		cfg.BackoffMin = 250 * time.Millisecond
	}
	if cfg.BackoffMax == 0 {
		cfg.BackoffMax = 30 * time.Second
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 10 * time.Second
	}
	if cfg.HandshakeTimeout == 0 {
		cfg.HandshakeTimeout = 10 * time.Second
	}
	if cfg.WriteTimeout == 0 {
		cfg.WriteTimeout = defaultWriteTimeout
	}
	return &Client{
		cfg:     cfg,
		cursor:  cfg.Cursor,
		groups:  newGroupCursors(cfg.GroupCursors),
		dedupe:  newIDWindow(cfg.DedupeWindow),
		pending: map[uint64]chan *wire.UpReply{},
		jitter:  rand.Int64N,
		done:    make(chan struct{}),
	}, nil
}

// Cursor returns the current resume cursor.
func (c *Client) Cursor() Cursor {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cursor
}

// GroupCursor returns the cursor of group's catch-up stream, and whether
// the client holds one.
func (c *Client) GroupCursor(group string) (GroupCursor, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st := c.groups.m[group]; st != nil {
		return st.GroupCursor, true
	}
	return GroupCursor{}, false
}

// Connected reports whether a session is open right now.
func (c *Client) Connected() bool { return c.connected.Load() }

// Run connects and stays connected until ctx is done (it returns
// ctx.Err()), Close is called (ErrClosed), the device is kicked
// (ErrKicked), or the server refuses the session for a reason a retry
// cannot fix (*RefusedError).
func (c *Client) Run(ctx context.Context) error {
	defer close(c.done)
	// sctx ends the current dial, handshake, session or backoff wait on
	// Close as well as on ctx.
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c.mu.Lock()
	c.stop = cancel
	c.mu.Unlock()
	bo := backoff{min: c.cfg.BackoffMin, max: c.cfg.BackoffMax, cur: c.cfg.BackoffMin, rand: c.jitter}
	redirects := 0 // sessions in a row that ended with CONTROL redirect
	avoid := ""    // the URL to ask dispatch for an alternative to
	for {
		if err := c.stopped(ctx); err != nil {
			return err
		}
		url, err := c.target(sctx, avoid, &bo)
		if err == nil {
			err = c.session(sctx, url)
		}
		if c.cfg.OnDisconnect != nil {
			c.cfg.OnDisconnect(err)
		}
		if err := c.stopped(ctx); err != nil {
			return err
		}
		var refused *RefusedError
		switch {
		case errors.Is(err, ErrKicked):
			return err
		case errors.As(err, &refused) && !c.retryable(refused):
			return err
		case errors.Is(err, errWelcomed):
			bo.reset()
		}
		var delay time.Duration
		var redirect *redirectError
		switch {
		case errors.As(err, &redirect) && redirect.now:
			// The first redirect is followed at once. A server that keeps
			// redirecting gets the backoff, so a loop of redirects is not
			// a tight loop of connects.
			redirects++
			if redirects == 1 {
				continue
			}
			delay = bo.next()
		case errors.As(err, &redirect):
			// A draining node sends all its devices away at once; spread
			// their arrival elsewhere over a few seconds.
			redirects = 0
			bo.next()
			delay = time.Duration(c.jitter(int64(drainJitter)))
		case url != "" && c.cfg.Dispatch != nil && nodeFailed(err):
			// The node is unreachable, lost, or not taking devices: ask
			// dispatch for another one after a short jitter, which
			// spreads a dead node's devices over BackoffMin. The backoff
			// still grows, for when dispatch has no other node to name.
			redirects = 0
			avoid = url
			bo.next()
			delay = time.Duration(c.jitter(int64(c.cfg.BackoffMin) + 1))
		default:
			redirects = 0
			delay = bo.next()
		}
		if !c.wait(sctx, delay) {
			continue // stopped: the loop's first check returns
		}
	}
}

// target returns the URL to connect to: the configured one, or
// dispatch's answer. When dispatch names the very node to avoid (the
// region has no other for this device right now), the backoff is waited
// first: that node just failed.
func (c *Client) target(ctx context.Context, avoid string, bo *backoff) (string, error) {
	if c.cfg.Dispatch == nil {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.cfg.URL, nil
	}
	u, err := c.cfg.Dispatch(ctx, avoid)
	if err != nil {
		return "", fmt.Errorf("%w: dispatch: %w", errNoAttempt, err)
	}
	if avoid != "" && u == avoid && !c.wait(ctx, bo.next()) {
		return "", ctx.Err()
	}
	return u, nil
}

// wait sleeps for d and reports false if ctx ended first.
func (c *Client) wait(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// nodeFailed reports whether a session ended because its node failed the
// device, rather than because of the device or the server's deliberate
// choice: the dial or handshake failed, the connection was lost, or the
// node refused for now (starting, busy, draining).
func nodeFailed(err error) bool {
	var refused *RefusedError
	switch {
	case errors.As(err, &refused):
		return refused.Code == wire.CodeUnavailable || refused.Code == wire.CodeDraining
	case errors.Is(err, errWelcomed):
		return errors.Is(err, errConnLost)
	case errors.Is(err, errNoAttempt):
		return false
	}
	return true
}

// stopped returns why Run must not make another attempt: ctx's error or
// ErrClosed; nil when it may.
func (c *Client) stopped(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if c.isClosed() {
		return ErrClosed
	}
	return nil
}

// backoff is the reconnect delay: full jitter in [0, cur], with cur
// doubling from min up to max.
type backoff struct {
	min, max, cur time.Duration
	rand          func(n int64) int64 // uniform in [0, n), as rand.Int64N
}

// next returns the delay before the next attempt and doubles the bound.
func (b *backoff) next() time.Duration {
	d := time.Duration(b.rand(int64(b.cur) + 1))
	b.cur = min(2*b.cur, b.max)
	return d
}

// reset puts the bound back to min, after a connection that worked.
func (b *backoff) reset() { b.cur = b.min }

// retryable reports whether a refusal may pass on a later attempt: token
// refusals when a fresh token can be minted, and transient server states.
func (c *Client) retryable(e *RefusedError) bool {
	switch e.Code {
	case wire.CodeUnavailable, wire.CodeDraining, wire.CodeRateLimited, wire.CodeInternal, wire.CodeHandshakeTimeout:
		return true
	case wire.CodeTokenExpired, wire.CodeTokenNotYetValid, wire.CodeTokenUnknownKey:
		return c.cfg.TokenFunc != nil
	}
	return false
}

// drainJitter bounds the random delay before reconnecting after CONTROL
// drain.
const drainJitter = 3 * time.Second

// errWelcomed wraps the end of a connection that had reached WELCOME, so
// Run resets its backoff.
var errWelcomed = errors.New("session ended")

// errConnLost wraps, with errWelcomed, the end of a session whose
// connection failed (as opposed to one the server ended).
var errConnLost = errors.New("connection lost")

// errNoAttempt wraps a failure before any node was tried (dispatch, or
// the token function), which says nothing about a node.
var errNoAttempt = errors.New("no node tried")

// redirectError asks Run to reconnect to addr (drain and redirect).
type redirectError struct {
	addr string
	now  bool
}

func (e *redirectError) Error() string { return "server asked to reconnect to " + e.addr }

// session runs one connection to url from dial to its end.
func (c *Client) session(ctx context.Context, url string) error {
	tok := c.cfg.Token
	if c.cfg.TokenFunc != nil {
		t, err := c.cfg.TokenFunc(ctx)
		if err != nil {
			return fmt.Errorf("%w: token: %w", errNoAttempt, err)
		}
		tok = t
	}
	dctx, cancel := context.WithTimeout(ctx, c.cfg.DialTimeout)
	conn, err := dial(dctx, url, &c.cfg)
	cancel()
	if err != nil {
		return err
	}
	// Close and ctx end the connection in any state, the wait for WELCOME
	// included.
	stopClosing := context.AfterFunc(ctx, func() { _ = conn.close() })
	defer func() {
		stopClosing()
		_ = conn.close()
	}()

	c.mu.Lock()
	cur := c.cursor
	hello := &wire.Hello{Token: tok, App: c.cfg.App, Device: c.cfg.Device, Platform: c.cfg.Platform,
		Version: c.cfg.Version, Businesses: c.cfg.Businesses, Epoch: cur.Epoch, Seq: cur.Seq,
		Caps: wire.CapGroupCursors, GroupCursors: c.groups.hello()}
	c.mu.Unlock()
	if c.cfg.LZ4 {
		hello.Caps |= wire.CapLZ4
	}
	if err := conn.writeFrame(wire.Append(nil, hello)); err != nil {
		return err
	}
	_ = conn.setReadDeadline(time.Now().Add(c.cfg.HandshakeTimeout))
	f, err := conn.readFrame()
	if err != nil {
		return err
	}
	// WELCOME may arrive merged with the first replayed messages in one
	// BATCH: take it from the front and handle the rest once the session
	// is set up.
	var rest []wire.Frame
	if b, ok := f.(*wire.Batch); ok {
		var inner []wire.Frame
		if err := b.Each(maxInbound, func(x wire.Frame) error { inner = append(inner, x); return nil }); err != nil {
			return err
		}
		if len(inner) == 0 {
			return errors.New("empty BATCH instead of WELCOME")
		}
		f, rest = inner[0], inner[1:]
	}
	c.seen(f)
	var w *wire.Welcome
	switch f := f.(type) {
	case *wire.Welcome:
		w = f
	case *wire.Error:
		return &RefusedError{Code: f.Code, Message: f.Message}
	default:
		return fmt.Errorf("expected WELCOME, got %s", f.Type())
	}
	c.onWelcome(w)

	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return ErrClosed
	}
	c.conn = conn
	c.mu.Unlock()
	c.connected.Store(true)
	defer func() {
		c.connected.Store(false)
		c.mu.Lock()
		c.conn = nil
		for id, ch := range c.pending {
			close(ch)
			delete(c.pending, id)
		}
		c.mu.Unlock()
	}()

	// Heartbeats: PING every interval from a ticker; the server answers
	// each, so silence past two and a half intervals means the path is
	// dead.
	hb := time.Duration(w.Heartbeat) * time.Millisecond
	if hb <= 0 {
		hb = 30 * time.Second
	}
	stop := make(chan struct{})
	var pinger sync.WaitGroup
	defer func() {
		// Closing first ends a PING stuck in a write.
		close(stop)
		_ = conn.close()
		pinger.Wait()
	}()
	pinger.Add(1)
	go func() {
		defer pinger.Done()
		t := time.NewTicker(hb)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case now := <-t.C:
				if conn.writeFrame(wire.Append(nil, &wire.Ping{Time: uint64(now.UnixMilli())})) != nil {
					_ = conn.close()
					return
				}
			}
		}
	}()

	if len(rest) > 0 {
		if err := c.onFrame(conn, &wire.Batch{Frames: appendFrames(rest)}); err != nil {
			return err
		}
	}
	for {
		_ = conn.setReadDeadline(time.Now().Add(2*hb + hb/2))
		f, err := conn.readFrame()
		if err != nil {
			return fmt.Errorf("%w: %w: %w", errWelcomed, errConnLost, err)
		}
		if err := c.onFrame(conn, f); err != nil {
			return err
		}
	}
}

// appendFrames re-encodes frames for handing them on as one batch.
func appendFrames(fs []wire.Frame) []byte {
	var b []byte
	for _, f := range fs {
		b = wire.Append(b, f)
	}
	return b
}

func (c *Client) onWelcome(w *wire.Welcome) {
	c.mu.Lock()
	switch {
	case w.Epoch == "":
		// The server keeps no inbox for this session; keep the cursor.
	case w.Epoch != c.cursor.Epoch:
		c.cursor = Cursor{Epoch: w.Epoch, Seq: w.Acked}
	case w.Acked > c.cursor.Seq:
		// Acked on an earlier connection but not persisted here: the
		// server will not replay those, and skipping them is no gap.
		c.cursor.Seq = w.Acked
	}
	c.welcome = Welcome{Session: w.Session, Node: w.Node, Recovered: w.Recovered, Epoch: w.Epoch,
		Heartbeat: time.Duration(w.Heartbeat) * time.Millisecond}
	welcome := c.welcome
	c.mu.Unlock()
	if c.cfg.OnWelcome != nil {
		c.cfg.OnWelcome(welcome)
	}
}

// seen hands a received frame to OnFrame.
func (c *Client) seen(f wire.Frame) {
	if c.cfg.OnFrame != nil {
		c.cfg.OnFrame(f)
	}
}

func (c *Client) onFrame(conn frameConn, f wire.Frame) error {
	if _, ok := f.(*wire.Batch); !ok {
		c.seen(f)
	}
	switch f := f.(type) {
	case *wire.Batch:
		// One ack for the whole batch: the highest cursor it reached. If
		// a frame was missing in it, the ack is repeated so the server sees
		// a duplicate ack and retransmits at once.
		var ackTo uint64
		var ackAny, jumped bool
		err := f.Each(maxInbound, func(inner wire.Frame) error {
			if p, ok := inner.(*wire.Push); ok {
				c.seen(p)
				seq, ok := c.onPush(p)
				if ok {
					ackTo, ackAny = max(ackTo, seq), true
				}
				jumped = jumped || (ok && seq < p.Seq && !p.Gap)
				return nil
			}
			return c.onFrame(conn, inner)
		})
		if ackAny {
			c.ack(conn, ackTo)
			if jumped {
				c.ack(conn, ackTo)
			}
		}
		return err
	case *wire.Push:
		if seq, ok := c.onPush(f); ok {
			c.ack(conn, seq)
		}
	case *wire.Pong:
	case *wire.CatchUp:
		c.mu.Lock()
		cur := c.groups.caughtUp(f)
		c.mu.Unlock()
		if c.cfg.OnGroupCursor != nil {
			c.cfg.OnGroupCursor(cur)
		}
		if c.cfg.OnCatchUp != nil {
			c.cfg.OnCatchUp(CatchUp{Group: f.Group, Recovered: f.Recovered, Epoch: f.Epoch, Seq: f.Seq})
		}
	case *wire.UpReply:
		c.mu.Lock()
		ch := c.pending[f.Request]
		delete(c.pending, f.Request)
		c.mu.Unlock()
		if ch != nil {
			ch <- f
		}
	case *wire.Control:
		if c.cfg.OnControl != nil {
			c.cfg.OnControl(*f)
		}
		switch f.Kind {
		case wire.ControlKick:
			return ErrKicked
		case wire.ControlRedirect:
			c.redirectTo(f.Addr)
			return &redirectError{addr: f.Addr, now: true}
		case wire.ControlDrain:
			c.redirectTo(f.Addr)
			return &redirectError{addr: f.Addr}
		case wire.ControlResync:
			return fmt.Errorf("%w: server asked to resync", errWelcomed)
		}
	case *wire.Error:
		// After WELCOME an ERROR ends this connection (missed heartbeat,
		// protocol error), not the device's right to connect: reconnect.
		return fmt.Errorf("%w: server closed the session: %s (%d): %s", errWelcomed, f.Code, f.Code, f.Message)
	default:
		return fmt.Errorf("unexpected %s frame from server", f.Type())
	}
	return nil
}

// redirectTo points later connects at addr, when the server named one.
func (c *Client) redirectTo(addr string) {
	if addr == "" || c.cfg.Dispatch != nil {
		return
	}
	c.mu.Lock()
	c.cfg.URL = addr
	c.mu.Unlock()
}

// onPush hands a message to the app unless it is a repeat, advances the
// cursor, and returns the sequence number to ack and whether to ack at all
// (group and unstored messages are not acked).
//
// Inbox messages are taken strictly in sequence. A jump the server flags
// (FlagGap) is accepted and reported through OnGap; an unflagged jump
// means a frame was lost on the way, so the message is dropped and the
// cursor re-acked, which the server answers by retransmitting in order.
func (c *Client) onPush(p *wire.Push) (uint64, bool) {
	c.mu.Lock()
	deliver := true
	var gapFrom, gapTo uint64
	if p.Seq != 0 {
		switch {
		case p.Seq <= c.cursor.Seq:
			deliver = false
		case p.Seq > c.cursor.Seq+1 && !p.Gap:
			seq := c.cursor.Seq
			c.mu.Unlock()
			if c.cfg.OnDrop != nil {
				c.cfg.OnDrop(message(p), DropOutOfOrder)
			}
			return seq, true // a repeat of the last ack
		case p.Seq > c.cursor.Seq+1:
			gapFrom, gapTo = c.cursor.Seq+1, p.Seq-1
		}
	}
	if deliver && !c.dedupe.add(p.ID) {
		deliver = false
	}
	if p.Seq > c.cursor.Seq {
		c.cursor.Seq = p.Seq
	}
	cur := c.cursor
	var group GroupCursor
	groupMoved := false
	if p.GroupEpoch != "" && p.Group != "" {
		group, groupMoved = c.groups.received(p.Group, p.GroupEpoch, p.GroupSeq)
	}
	c.mu.Unlock()

	if gapTo != 0 && c.cfg.OnGap != nil {
		c.cfg.OnGap(gapFrom, gapTo)
	}
	switch {
	case deliver && c.cfg.OnMessage != nil:
		c.cfg.OnMessage(message(p))
	case !deliver && c.cfg.OnDrop != nil:
		c.cfg.OnDrop(message(p), DropRepeat)
	}
	if groupMoved && c.cfg.OnGroupCursor != nil {
		c.cfg.OnGroupCursor(group)
	}
	if p.Seq == 0 {
		return 0, false
	}
	if c.cfg.OnCursor != nil {
		c.cfg.OnCursor(cur)
	}
	return cur.Seq, true
}

func message(p *wire.Push) Message {
	return Message{ID: p.ID, Seq: p.Seq, Business: p.Business, Priority: p.Priority,
		Created: time.UnixMilli(int64(p.Created)), Group: p.Group, GroupEpoch: p.GroupEpoch, GroupSeq: p.GroupSeq,
		Payload: p.Payload, Redelivered: p.Redelivery}
}

func (c *Client) ack(conn frameConn, seq uint64) {
	_ = conn.writeFrame(wire.Append(nil, &wire.Ack{Seq: seq}))
}

// Up sends payload to business's webhook and waits for its answer.
func (c *Client) Up(ctx context.Context, business string, payload []byte) ([]byte, error) {
	reply, err := c.request(ctx, func(id uint64) wire.Frame {
		return &wire.Up{Request: id, Business: business, Payload: payload}
	})
	if err != nil {
		return nil, err
	}
	return reply.Payload, nil
}

// Join subscribes this connection to group, for an app that lets its
// devices join groups themselves (otherwise a *RefusedError with
// wire.CodeJoinRefused). Such a membership lasts for the connection:
// rejoin after a reconnect (OnWelcome is a good place). The groups the
// business adds the device or its user to are joined at every connect
// without it.
func (c *Client) Join(ctx context.Context, group string) error {
	_, err := c.request(ctx, func(id uint64) wire.Frame { return &wire.Join{Request: id, Group: group} })
	return err
}

// Leave unsubscribes this connection from group.
func (c *Client) Leave(ctx context.Context, group string) error {
	_, err := c.request(ctx, func(id uint64) wire.Frame { return &wire.Leave{Request: id, Group: group} })
	return err
}

// ErrNotConnected is returned by requests made between connections.
var ErrNotConnected = errors.New("not connected")

func (c *Client) request(ctx context.Context, build func(id uint64) wire.Frame) (*wire.UpReply, error) {
	c.mu.Lock()
	conn := c.conn
	if conn == nil {
		c.mu.Unlock()
		return nil, ErrNotConnected
	}
	c.nextReq++
	id := c.nextReq
	ch := make(chan *wire.UpReply, 1)
	c.pending[id] = ch
	c.mu.Unlock()
	if err := conn.writeFrame(wire.Append(nil, build(id))); err != nil {
		return nil, err
	}
	select {
	case <-ctx.Done():
		c.mu.Lock()
		delete(c.pending, id)
		c.mu.Unlock()
		return nil, ctx.Err()
	case r, ok := <-ch:
		if !ok {
			return nil, ErrNotConnected
		}
		if r.Code != wire.CodeOK {
			return r, &RefusedError{Code: r.Code, Message: string(r.Payload)}
		}
		return r, nil
	}
}

// Close ends the current connection, dial or backoff wait and makes Run
// return ErrClosed without connecting again. It does not wait for Run to
// return: Done does. Called before Run, it makes Run return at once.
func (c *Client) Close() error {
	c.mu.Lock()
	c.closed = true
	stop := c.stop
	c.mu.Unlock()
	if stop != nil {
		stop()
	}
	return nil
}

func (c *Client) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// Done is closed when Run has returned.
func (c *Client) Done() <-chan struct{} { return c.done }
