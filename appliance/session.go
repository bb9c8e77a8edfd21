package appliance

import (
	"errors"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pushd/pushd/appliance/token"
	"github.com/pushd/pushd/appliance/wire"
)

// sessionState is where a connection is in the protocol.
type sessionState uint8

const (
	stateHandshake sessionState = iota // waiting for HELLO
	stateChecking                      // HELLO received, its token and app being checked
	stateOpening                       // HELLO accepted, route and inbox being set up
	stateOpen                          // WELCOME sent; frames flow both ways
	stateClosed
)

// session is the protocol state of one device connection, above its
// transport. Inbound frames arrive serially from the transport's read
// callback; outbound frames arrive from any goroutine (delivery, fan-out,
// timers) through send.
//
// Lock order: session.wmu, then shard.mu, then session.mu, then
// shard.dirtyMu and wheel.mu. A session never takes a shard's mu while
// holding its own mu, and never calls transport.close or write while
// holding mu. wmu is held only around handing output to the transport,
// whose writes do not block (nbio queues what the socket does not take).
type session struct {
	node  *Node
	t     transport
	wheel *wheel

	accepted time.Time    // when the connection was accepted; bounds the handshake
	lastSeen atomic.Int64 // coarse unix nanos of the last inbound frame
	// published is stored last by newSession and loaded first by the read
	// callbacks. nbio creates a session on its accepting goroutine and
	// reads on a poller goroutine, handing the connection over through
	// epoll, which the race detector cannot see; this pair makes the
	// hand-over explicit.
	published atomic.Bool
	wheelDue  int64 // tick of the armed timer check. Guarded by wheel.mu.

	dec *wire.Decoder // stream transports only; touched by the read path only

	// wmu orders the hand-over of output to the transport: frames taken
	// from the queue by a flush reach the transport before a later
	// close's last frame, and none after the close.
	wmu sync.Mutex

	mu        sync.Mutex
	state     sessionState
	closing   bool        // close requested; the transport has not reported the end yet
	reason    closeReason // why, once closing
	shard     *shard      // set when HELLO is accepted; fixed after
	id        string
	app       string
	device    string
	key       string // inbox key app/device: the registry and Redis identity
	connEpoch uint64 // route epoch claimed for this connection; 0 without a Store
	caps      uint64
	groups    []membership
	// businesses are those the HELLO declared; they decide whether the
	// degrade policy concerns this connection, and which messages it
	// takes (takes). platform and version are the HELLO's, tags and user
	// (an inbox-style key, app/user; "" for none) the token's: what push
	// filters match. All are set before the session is registered and
	// never change, so fan-out reads them without the lock.
	businesses []string
	platform   string
	version    string
	tags       []string
	user       string
	// cursors are the HELLO's group cursors, kept when the device offered
	// CapGroupCursors: a JOIN of one of those groups catches up from it.
	cursors   []wire.GroupCursor
	out       *[]byte // pending output: HeaderLen reserved bytes, then frames. nil when empty.
	outFrames int
	// outTraced lists the unicast PUSHes in out, whose write their
	// trace records; nil when tracing is off or out holds none.
	outTraced *[]tracedFrame
	dirty     dirtyClass // the shard's lists the session is queued on for the flusher

	// early holds, in order, the requests (PING, ACK, JOIN, LEAVE, UP) the
	// device sent after HELLO while the session was opening, and those
	// that arrive while they are handled after WELCOME (draining);
	// earlyBytes is the size of their variable fields. See holdEarly.
	early      []wire.Frame
	earlyBytes int
	draining   bool

	// recheckDeadline is when the read deadline is cleared once more
	// after opening: nbio's listener may arm its HTTP deadline after the
	// upgrade completed (see wsTransport.clearReadDeadline). Zero once done.
	recheckDeadline time.Time

	inflight // delivery state (inflight.go); guarded by mu
}

func (n *Node) newSession(t transport) *session {
	s := &session{node: n, t: t, accepted: time.Now()}
	s.wheel = n.wheels[n.wheelNext.Add(1)%uint64(len(n.wheels))]
	s.lastSeen.Store(n.coarseNow())
	n.conns[t.kind()].Add(1)
	s.wheel.schedule(s, s.accepted.Add(n.cfg.HandshakeTimeout))
	s.published.Store(true)
	return s
}

// onMessage handles one WebSocket message: exactly one frame (possibly a
// BATCH).
func (s *session) onMessage(data []byte) {
	if !s.published.Load() {
		return
	}
	s.lastSeen.Store(s.node.coarseNow())
	s.node.metrics.bytesIn.Add(float64(len(data)))
	f, n, err := wire.Decode(data, s.node.cfg.MaxFrame)
	if err != nil {
		s.frameError(err)
		return
	}
	if n != len(data) {
		s.protocolError("a WebSocket message must hold exactly one frame; use BATCH for several")
		return
	}
	s.onFrame(f)
}

// onStreamData handles bytes from a stream transport, which may hold any
// number of frames and partial frames.
func (s *session) onStreamData(data []byte) {
	if !s.published.Load() {
		return
	}
	s.lastSeen.Store(s.node.coarseNow())
	s.node.metrics.bytesIn.Add(float64(len(data)))
	if s.dec == nil {
		s.dec = &wire.Decoder{Max: s.node.cfg.MaxFrame}
	}
	err := s.dec.Feed(data, func(f wire.Frame) error {
		s.onFrame(f)
		if s.isClosing() {
			return errSessionClosing // the frames after it are not for a session
		}
		return nil
	})
	if err != nil && err != errSessionClosing {
		s.frameError(err)
	}
}

// errSessionClosing stops decoding a stream whose session is closing.
var errSessionClosing = errors.New("session closing")

func (s *session) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing || s.state == stateClosed
}

func (s *session) onFrame(f wire.Frame) {
	s.node.metrics.framesIn[f.Type()].Inc()
	switch f := f.(type) {
	case *wire.Batch:
		err := f.Each(s.node.cfg.MaxFrame, func(inner wire.Frame) error {
			s.onFrame(inner)
			return nil
		})
		if err != nil {
			s.frameError(err)
		}
	case *wire.Hello:
		s.onHello(f)
	case *wire.Ping, *wire.Ack, *wire.Join, *wire.Leave, *wire.Up:
		if !s.holdEarly(f) {
			s.onRequest(f)
		}
	case *wire.Error:
		s.onDeviceError(f)
	default:
		s.protocolError(f.Type().String() + " is a server-to-device frame")
	}
}

// onRequest handles a frame that needs an open session. Before HELLO it is
// a protocol error; after HELLO and before WELCOME, holdEarly keeps it for
// handleEarly.
func (s *session) onRequest(f wire.Frame) {
	switch f := f.(type) {
	case *wire.Ping:
		if s.isOpen() {
			s.send(wire.Append(nil, &wire.Pong{Time: f.Time}))
		} else {
			s.protocolError("PING before HELLO")
		}
	case *wire.Ack:
		if s.isOpen() {
			s.onAck(f.Seq)
		} else {
			s.protocolError("ACK before HELLO")
		}
	case *wire.Join:
		s.onGroup(f.Request, f.Group, true)
	case *wire.Leave:
		s.onGroup(f.Request, f.Group, false)
	case *wire.Up:
		s.onUp(f)
	}
}

// Bounds of what holdEarly keeps for one session: frames, and bytes of
// their variable fields (the device's MaxFrame, whichever is larger).
const (
	maxEarlyFrames = 64
	minEarlyBytes  = 4 << 10
)

// holdEarly keeps a request that arrives after HELLO while the session is
// opening (its route and inbox are set up by an open worker), or while the
// requests kept that way are being handled, and reports whether it did.
// A device may send requests right after HELLO: they are handled after
// WELCOME, in the order sent, however long the open takes, so the outcome
// does not depend on Redis's latency. Past maxEarlyFrames frames or
// MaxFrame bytes held, the device is cut with protocol_violation.
func (s *session) holdEarly(f wire.Frame) bool {
	s.mu.Lock()
	if s.state != stateChecking && s.state != stateOpening && !s.draining {
		s.mu.Unlock()
		return false
	}
	if s.closing || s.state == stateClosed {
		s.mu.Unlock()
		return true
	}
	s.earlyBytes += earlyCost(f)
	over := len(s.early) >= maxEarlyFrames || s.earlyBytes > max(s.node.cfg.MaxFrame, minEarlyBytes)
	if !over {
		s.early = append(s.early, f)
	}
	s.mu.Unlock()
	if over {
		s.protocolError("too many frames sent before WELCOME; wait for it")
	}
	return true
}

// earlyCost is the size of a held frame's variable fields.
func earlyCost(f wire.Frame) int {
	switch f := f.(type) {
	case *wire.Up:
		return len(f.Business) + len(f.Payload)
	case *wire.Join:
		return len(f.Group)
	case *wire.Leave:
		return len(f.Group)
	}
	return 0
}

// handleEarly handles the requests holdEarly kept, in order, with those
// that arrive meanwhile, then lets requests through again. The opener
// calls it once WELCOME (and the replay) is queued.
func (s *session) handleEarly() {
	for {
		s.mu.Lock()
		if len(s.early) == 0 || s.closing || s.state != stateOpen {
			s.early, s.earlyBytes, s.draining = nil, 0, false
			s.mu.Unlock()
			return
		}
		f := s.early[0]
		s.early[0] = nil
		s.early = s.early[1:]
		s.earlyBytes -= earlyCost(f)
		s.mu.Unlock()
		s.onRequest(f)
	}
}

// onDeviceError logs an ERROR frame from the device at warn, through the
// node's rate limit (a fleet running a buggy SDK must not flood the log),
// and otherwise ignores it: no answer, the connection stays as it is.
func (s *session) onDeviceError(e *wire.Error) {
	n := s.node
	ok, suppressed := n.deviceErrors.allow(time.Now())
	if !ok {
		return
	}
	s.mu.Lock()
	app, device := s.app, s.device
	s.mu.Unlock()
	msg := e.Message
	if len(msg) > maxLoggedDeviceMessage {
		msg = msg[:maxLoggedDeviceMessage] + "…"
	}
	n.log.Warn("device reported an error", "app", app, "device", device, "remote", s.t.remoteAddr(),
		"code", uint16(e.Code), "code_name", e.Code.String(), "request", e.Request, "message", msg,
		"suppressed_before", suppressed)
}

func (s *session) isOpen() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state == stateOpen
}

func (s *session) appID() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.app
}

func (s *session) deviceID() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.device
}

// onHello authenticates the connection and hands it to the opener.
func (s *session) onHello(h *wire.Hello) {
	s.mu.Lock()
	state := s.state
	s.mu.Unlock()
	if state != stateHandshake {
		s.protocolError("HELLO on an authenticated connection")
		return
	}
	n := s.node
	if code, msg := validateHello(h); code != wire.CodeOK {
		s.refuse(code, msg)
		return
	}
	if !n.ready.Load() {
		s.refuse(wire.CodeUnavailable, "node starting: its region metadata is not caught up yet; retry with backoff")
		return
	}
	if n.stopping.Load() || n.draining.Load() {
		// Its devices are being sent elsewhere: so is this one.
		s.refuse(wire.CodeDraining, "node draining or shutting down: connect to another node")
		return
	}
	s.mu.Lock()
	if s.state != stateHandshake || s.closing {
		s.mu.Unlock()
		return
	}
	s.state = stateChecking
	s.mu.Unlock()
	s.admitHello(h, false)
}

// admitHello checks the HELLO's token and businesses against the apps
// this node knows and opens the session. A HELLO naming an app, token key
// or business the node does not know may come right after an admin
// changed it, before this node applied the change: unless synced, it is
// handed to a recheck worker, which syncs the metadata with the region's
// and admits it again (never on an nbio callback, which must not block).
func (s *session) admitHello(h *wire.Hello, synced bool) {
	n := s.node
	apps := n.apps.Load()
	if synced {
		apps = n.currentApps()
	}
	claims, err := token.Verify(h.Token, apps, h.App, h.Device, time.Now())
	code, msg := wire.CodeOK, ""
	if err != nil {
		code, msg = tokenCode(err), err.Error()
	} else if b, ok := apps.businessAllowed(h.App, h.Businesses); !ok {
		code, msg = wire.CodeUnknownBusiness, "business "+b+" is not enabled for app "+h.App
	}
	switch {
	case code == wire.CodeOK:
	case !synced && n.meta != nil && mayBeUnsynced(code):
		select {
		case n.rechecks <- openJob{s: s, h: h}:
		default:
			s.refuse(wire.CodeUnavailable, "node busy checking sessions; retry with backoff")
		}
		return
	default:
		s.refuse(code, msg)
		return
	}
	s.mu.Lock()
	if s.state != stateChecking || s.closing {
		s.mu.Unlock()
		return
	}
	s.state = stateOpening
	s.app, s.device = h.App, h.Device
	s.key = inboxKey(h.App, h.Device)
	s.caps = h.Caps & (wire.CapLZ4 | wire.CapGroupCursors)
	s.businesses = h.Businesses
	s.platform, s.version, s.tags = h.Platform, h.Version, claims.Tags
	if claims.User != "" {
		s.user = inboxKey(h.App, claims.User)
	}
	if s.caps&wire.CapGroupCursors != 0 {
		s.cursors = h.GroupCursors
	}
	s.shard = n.hub.shardFor(s.key)
	s.mu.Unlock()
	n.open(s, h)
}

// mayBeUnsynced reports whether a handshake refusal could come from
// metadata this node has not applied yet, rather than from the device.
func mayBeUnsynced(code wire.Code) bool {
	return code == wire.CodeUnknownApp || code == wire.CodeTokenUnknownKey || code == wire.CodeUnknownBusiness
}

// validateHello checks the HELLO fields a token does not cover.
func validateHello(h *wire.Hello) (wire.Code, string) {
	switch {
	case !token.ValidID(h.App):
		return wire.CodeBadHello, "app id must be 1-128 letters, digits or ._:-"
	case !token.ValidID(h.Device):
		return wire.CodeBadHello, "device id must be 1-128 letters, digits or ._:-"
	case len(h.Platform) > 32 || len(h.Version) > 32:
		return wire.CodeBadHello, "platform and version are at most 32 bytes"
	case h.Epoch == "" && h.Seq != 0:
		return wire.CodeBadHello, "a resume sequence number needs its epoch"
	case len(h.Epoch) > 64:
		return wire.CodeBadHello, "epoch is at most 64 bytes"
	}
	for _, b := range h.Businesses {
		if !token.ValidID(b) {
			return wire.CodeBadHello, "business ids must be 1-128 letters, digits or ._:-"
		}
	}
	for i, c := range h.GroupCursors {
		switch {
		case !token.ValidID(c.Group):
			return wire.CodeBadHello, "group cursor groups must be 1-128 letters, digits or ._:-"
		case len(c.Epoch) > 64:
			return wire.CodeBadHello, "a group cursor's epoch is at most 64 bytes"
		case c.Epoch == "" && c.Seq != 0:
			return wire.CodeBadHello, "a group cursor's seq needs its epoch"
		case slices.ContainsFunc(h.GroupCursors[:i], func(o wire.GroupCursor) bool { return o.Group == c.Group }):
			return wire.CodeBadHello, "one cursor per group"
		}
	}
	return wire.CodeOK, ""
}

// tokenCode maps a token verification error to its wire code.
func tokenCode(err error) wire.Code {
	switch {
	case errors.Is(err, token.ErrExpired):
		return wire.CodeTokenExpired
	case errors.Is(err, token.ErrNotYetValid):
		return wire.CodeTokenNotYetValid
	case errors.Is(err, token.ErrSignature):
		return wire.CodeTokenSignature
	case errors.Is(err, token.ErrWrongApp):
		return wire.CodeTokenWrongApp
	case errors.Is(err, token.ErrWrongDevice):
		return wire.CodeTokenWrongDevice
	case errors.Is(err, token.ErrUnknownKey):
		return wire.CodeTokenUnknownKey
	case errors.Is(err, token.ErrUnknownApp):
		return wire.CodeUnknownApp
	case errors.Is(err, token.ErrLifetime):
		return wire.CodeTokenLifetime
	}
	return wire.CodeTokenMalformed
}

// refuse ends a handshake with an ERROR frame carrying code.
func (s *session) refuse(code wire.Code, msg string) {
	s.node.metrics.handshakes.WithLabelValues(code.String()).Inc()
	s.node.log.Debug("handshake refused", "remote", s.t.remoteAddr(), "code", code.String(), "reason", msg)
	s.closeWith(closeAuth, &wire.Error{Code: code, Message: msg})
}

func (s *session) frameError(err error) {
	reason := closeProtocol
	if errors.Is(err, wire.ErrTooLarge) {
		reason = closeTooLarge
	}
	s.closeWith(reason, &wire.Error{Code: wire.CodeOf(err), Message: err.Error()})
}

func (s *session) protocolError(msg string) {
	s.closeWith(closeProtocol, &wire.Error{Code: wire.CodeProtocol, Message: msg})
}

// welcome makes an opening session live: it registers it, kicks the
// device's previous local connection, and queues WELCOME. It reports false
// when the connection closed while opening.
func (s *session) welcome(w *wire.Welcome) bool {
	n := s.node
	s.mu.Lock()
	if s.state != stateOpening || s.closing {
		s.mu.Unlock()
		return false
	}
	// WELCOME is queued in the step that opens the session, so nothing
	// offered to an open session can be queued ahead of it. Requests held
	// while opening stay held, with any that follow, until handleEarly.
	s.state = stateOpen
	s.draining = len(s.early) > 0
	s.recheckDeadline = time.Now().Add(n.cfg.HandshakeTimeout / 2)
	businesses := s.businesses
	ok := s.enqueueLocked(wire.Append(nil, w))
	degrade := n.degrade.Load()
	if degrade.affects(businesses) && ok {
		ok = s.enqueueLocked(degrade.frame)
	}
	s.mu.Unlock()
	if !ok {
		s.closeSlow()
		return false
	}
	s.t.clearReadDeadline()
	if prev := n.hub.register(s); prev != nil {
		prev.kick("another connection of this device took over")
	}
	// A policy change announced between the load above and the register
	// did not reach this session: catch up.
	if cur := n.degrade.Load(); cur != degrade {
		s.announceDegrade(degrade, cur, businesses)
	}
	n.metrics.handshakes.WithLabelValues(wire.CodeOK.String()).Inc()
	s.wheel.schedule(s, s.recheckDeadline)
	s.wheel.schedule(s, time.Now().Add(n.cfg.idleTimeout()))
	return true
}

// kick tells the device another connection replaced this one, then closes.
func (s *session) kick(reason string) {
	s.closeWith(closeKicked, &wire.Control{Kind: wire.ControlKick, Reason: reason})
}

// onTimer runs the session's due checks from its wheel and re-arms the
// next one.
func (s *session) onTimer(now time.Time) {
	n := s.node
	s.mu.Lock()
	state, closing := s.state, s.closing
	recheck := !s.recheckDeadline.IsZero() && !now.Before(s.recheckDeadline)
	if recheck {
		s.recheckDeadline = time.Time{}
	}
	s.mu.Unlock()
	if state == stateClosed || closing {
		return
	}
	if recheck {
		s.t.clearReadDeadline()
	}
	if state != stateOpen {
		deadline := s.accepted.Add(n.cfg.HandshakeTimeout)
		if !now.Before(deadline) {
			n.metrics.handshakes.WithLabelValues(wire.CodeHandshakeTimeout.String()).Inc()
			s.closeWith(closeHandshakeTimeout, &wire.Error{Code: wire.CodeHandshakeTimeout, Message: "no session opened within " + n.cfg.HandshakeTimeout.String()})
			return
		}
		s.wheel.schedule(s, deadline)
		return
	}
	idleAt := time.Unix(0, s.lastSeen.Load()).Add(n.cfg.idleTimeout())
	if !now.Before(idleAt) {
		s.closeWith(closeHeartbeat, &wire.Error{Code: wire.CodeHeartbeatMissed, Message: "no frame within " + n.cfg.idleTimeout().String()})
		return
	}
	next := idleAt
	if at := s.retransmit(now); !at.IsZero() && at.Before(next) {
		next = at
	}
	s.wheel.schedule(s, next)
}

// closeWith sends a last frame (after whatever is queued) and closes the
// connection for reason. The session's own cleanup runs when the transport
// reports the close (onTransportClosed).
func (s *session) closeWith(reason closeReason, last wire.Frame) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.mu.Lock()
	if s.closing || s.state == stateClosed {
		s.mu.Unlock()
		return
	}
	s.closing, s.reason = true, reason
	pending, frames, traced := s.takeOutLocked()
	s.mu.Unlock()

	if last != nil {
		if pending == nil {
			pending = getOutBuf()
		}
		*pending = wire.Append(*pending, last)
		frames++
	}
	if pending != nil {
		s.node.metrics.bytesOut.Add(float64(s.writeOut(pending, frames, traced)))
	}
	s.t.close(reason)
}

// onTransportClosed is the one place a session ends: the transport calls
// it once, whoever started the close.
func (s *session) onTransportClosed(err error) {
	n := s.node
	s.mu.Lock()
	if s.state == stateClosed {
		s.mu.Unlock()
		return
	}
	wasOpen := s.state == stateOpen
	s.state = stateClosed
	reason := s.reason
	if !s.closing {
		reason = closeReasonOf(err)
		s.closing, s.reason = true, reason
	}
	if s.out != nil {
		putOutBuf(s.out)
		s.out, s.outFrames = nil, 0
	}
	if s.outTraced != nil {
		putTraced(s.outTraced)
		s.outTraced = nil
	}
	s.early, s.earlyBytes = nil, 0
	device := s.device
	s.mu.Unlock()

	n.conns[s.t.kind()].Add(-1)
	n.metrics.closes[reason].Inc()
	if wasOpen {
		n.hub.unregister(s)
		n.sessionClosed(s)
	}
	if reason != closePeer && reason != closeShutdown {
		n.log.Debug("connection closed", "device", device, "reason", reason.String(), "remote", s.t.remoteAddr(), slog.Any("err", err))
	}
}

// send queues one encoded frame for the connection; the shard's flusher
// writes it within a flush tick. A connection whose queue is over its caps
// is closed as a slow consumer.
func (s *session) send(frame []byte) {
	s.mu.Lock()
	ok := s.enqueueLocked(frame)
	s.mu.Unlock()
	if !ok {
		s.closeSlow()
	}
}

// enqueueLocked appends frame to the output queue, to be written at the
// flusher's next pass, ahead of fan-out, and reports false when that would
// exceed the caps (the frame is then dropped and the caller must close the
// connection as slow). Frames to a closing session are dropped silently.
// Lock must be held.
func (s *session) enqueueLocked(frame []byte) bool {
	if !s.queueLocked(frame, 1, dirtyUrgent) {
		return false
	}
	s.node.metrics.framesOut[frame[1]].Inc()
	return true
}

// queueLocked is enqueueLocked for count frames, concatenated, of class
// (dirtyBulk for fan-out and catch-up, which the flusher writes in chunks
// after the urgent ones), without counting them in the metrics: a fan-out
// counts its frames once. Lock must be held.
func (s *session) queueLocked(frames []byte, count int, class dirtyClass) bool {
	if s.closing || s.state == stateClosed {
		return true
	}
	tun := s.node.tun.Load()
	if s.out == nil {
		s.out = getOutBuf()
	}
	if s.outFrames+count > tun.queueFrames || len(*s.out)+len(frames) > tun.queueBytes+outHead {
		return false
	}
	*s.out = append(*s.out, frames...)
	s.outFrames += count
	if s.dirty&class == 0 {
		s.dirty |= class
		s.shard.markDirty(s, class)
	}
	return true
}

func (s *session) closeSlow() {
	s.closeWith(closeSlow, nil)
}

// takeOutLocked detaches the pending output and the list of its traced
// frames. Lock must be held.
func (s *session) takeOutLocked() (*[]byte, int, *[]tracedFrame) {
	out, frames, traced := s.out, s.outFrames, s.outTraced
	s.out, s.outFrames, s.outTraced, s.dirty = nil, 0, nil, 0
	return out, frames, traced
}

// traceOutLocked notes that the frame just queued is message id's PUSH
// of seq, so that its write is traced. Lock must be held.
func (s *session) traceOutLocked(id string, seq uint64) {
	if s.outTraced == nil {
		s.outTraced = getTraced()
	}
	*s.outTraced = append(*s.outTraced, tracedFrame{id: id, seq: seq})
}

// flush writes the pending output as one write: the frame itself when
// there is one, else a BATCH (compressed for devices that offered lz4 when
// it is over the threshold).
// It returns the bytes written, for the flusher to count once a pass.
func (s *session) flush() int {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.mu.Lock()
	out, frames, traced := s.takeOutLocked()
	s.mu.Unlock()
	if out == nil {
		return 0
	}
	return s.writeOut(out, frames, traced)
}

// writeOut writes a detached output buffer, records the write of its
// traced frames, and returns both to their pools: the frame itself when
// it holds one, else a BATCH, in place, or lz4-compressed for devices
// that offered it when it is over the threshold. Either way the transport
// frames it in the headroom. It returns the bytes written.
func (s *session) writeOut(out *[]byte, frames int, traced *[]tracedFrame) int {
	n := s.node
	b := *out
	written := 0
	switch {
	case frames == 0:
	case frames == 1:
		written = s.write(b, outHead)
	case s.caps&wire.CapLZ4 != 0 && n.cfg.CompressThreshold >= 0 && len(b)-outHead >= n.cfg.CompressThreshold:
		scratch := getOutBuf()
		*scratch = wire.AppendBatch((*scratch)[:writeHeadroom], b[outHead:], true)
		written = s.write(*scratch, writeHeadroom)
		putOutBuf(scratch)
	default:
		wire.PutBatchHeader(b[writeHeadroom:])
		written = s.write(b, writeHeadroom)
	}
	putOutBuf(out)
	if traced != nil {
		if written > 0 {
			// id and key were set before the session opened and never
			// change after.
			for _, f := range *traced {
				n.trace.written(f.id, s.key, f.seq, s.id)
			}
		}
		putTraced(traced)
	}
	return written
}

// write hands b[off:] to the transport with the write deadline, and
// returns the bytes written (0 when the write failed).
func (s *session) write(b []byte, off int) int {
	n := s.node
	// The wheels' clock is a tick behind at most: the deadline is a
	// slow-consumer cut, not a timer that needs the exact time.
	deadline := time.Unix(0, n.coarseNow()).Add(n.cfg.WriteTimeout)
	if err := s.t.write(b, off, deadline); err != nil {
		return 0
	}
	return len(b) - off
}

// outHead is the reserved start of an output queue: the transport's
// headroom, then a BATCH header, so several frames become one framed
// write in place.
const outHead = writeHeadroom + wire.HeaderLen

// outBufs pools output queues, each starting with outHead reserved bytes.
// Idle connections hold none.
var outBufs = sync.Pool{New: func() any {
	b := make([]byte, outHead, outBufSize)
	return &b
}}

// outBufSize fits a WELCOME, a few PUSHes of small payloads, or a burst of
// PONGs; larger bursts grow the buffer, and the pool keeps grown ones.
const outBufSize = 1 << 10

// maxPooledOut keeps one burst's huge buffer from being pinned by the pool.
const maxPooledOut = 64 << 10

func getOutBuf() *[]byte {
	b := outBufs.Get().(*[]byte)
	*b = (*b)[:outHead]
	return b
}

func putOutBuf(b *[]byte) {
	if cap(*b) <= maxPooledOut {
		outBufs.Put(b)
	}
}

// tracedBufs pools the lists of traced frames, as outBufs the output.
var tracedBufs = sync.Pool{New: func() any {
	b := make([]tracedFrame, 0, 8)
	return &b
}}

func getTraced() *[]tracedFrame {
	b := tracedBufs.Get().(*[]tracedFrame)
	*b = (*b)[:0]
	return b
}

func putTraced(b *[]tracedFrame) {
	if cap(*b) <= 1024 {
		clear(*b)
		tracedBufs.Put(b)
	}
}
