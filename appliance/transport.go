package appliance

import (
	"syscall"
	"time"

	"github.com/lesismal/nbio"

	"github.com/pushd/pushd/appliance/wire"
)

// transport is the connection layer under a session: it moves encoded
// frames and knows nothing of the protocol. A new transport (QUIC, say)
// implements this and feeds received bytes to the session; nothing else
// changes.
//
// Implementations never block on the peer: write either writes at once or
// copies what the socket did not take into a bounded buffer; close is
// immediate. After close, the transport reports the end through
// session.onTransportClosed exactly once, never from inside close itself
// while a caller might hold a lock it needs.
type transport interface {
	// write sends one complete frame or BATCH, b[off:], and may use the
	// off bytes before it (at least writeHeadroom) for its own framing, so
	// the frame is never copied to be framed. What the socket does not
	// take the transport queues (a copy: b may be reused once write
	// returns); if queued data is still unsent at deadline, the transport
	// closes itself. The deadline is armed when the queue was empty: a
	// later write does not push it back.
	write(b []byte, off int, deadline time.Time) error
	// close ends the connection, telling the peer why where the transport
	// can (a WebSocket close code).
	close(reason closeReason)
	// clearReadDeadline removes any read deadline the listener set while
	// the connection spoke HTTP: from HELLO on, the timing wheel bounds
	// the session's silence.
	clearReadDeadline()
	remoteAddr() string
	kind() transportKind
}

// writeHeadroom is the room a write leaves before its frame: a server
// WebSocket frame header takes at most 10 bytes (no mask).
const writeHeadroom = 10

// transportKind names a transport in metrics and in `pushctl device show`.
type transportKind uint8

const (
	kindWS transportKind = iota
	kindTCP
	kindConn // a connection handed to ServeConn
	kindSink // in-process, for tests and benchmarks
	transportKindCount
)

func (k transportKind) String() string {
	switch k {
	case kindWS:
		return "ws"
	case kindTCP:
		return "tcp"
	case kindConn:
		return "conn"
	}
	return "sink"
}

// closeReason is why a connection ended: the typed reason a slow consumer,
// a missed heartbeat or a kick is counted and logged under.
type closeReason uint8

const (
	closePeer             closeReason = iota // the device closed or the network failed
	closeHandshakeTimeout                    // no valid HELLO in time
	closeAuth                                // HELLO refused
	closeProtocol                            // undecodable or out-of-place frame
	closeTooLarge                            // frame over the size limit
	closeSlow                                // output queue or write deadline exceeded
	closeHeartbeat                           // silent past the idle limit
	closeKicked                              // a newer connection of the device took over
	closeShutdown                            // the node is shutting down
	closeResync                              // the inbox lost continuity while connected
	closeDrain                               // the node is draining; the device was sent elsewhere
	closeReasonCount
)

var closeReasonNames = [closeReasonCount]string{
	closePeer: "peer", closeHandshakeTimeout: "handshake_timeout", closeAuth: "auth",
	closeProtocol: "protocol", closeTooLarge: "frame_too_large", closeSlow: "slow_consumer",
	closeHeartbeat: "heartbeat_missed", closeKicked: "kicked", closeShutdown: "shutdown",
	closeResync: "resync", closeDrain: "drain",
}

func (r closeReason) String() string { return closeReasonNames[r] }

// wsCloseCode maps a reason to a WebSocket close code. Where the close has
// a wire error code of its own (handshake timeout, protocol, slow
// consumer, missed heartbeat) it is sent as 4000 + that code, in the range
// RFC 6455 leaves to applications, so a browser that only sees the close
// event still learns it; a refused HELLO closes with 1008 after an ERROR
// frame that carries the exact code.
func (r closeReason) wsCloseCode() int {
	switch r {
	case closePeer, closeShutdown, closeDrain:
		return 1001 // going away
	case closeTooLarge:
		return 1009
	case closeHandshakeTimeout:
		return 4000 + int(wire.CodeHandshakeTimeout)
	case closeAuth:
		return 1008 // policy violation; the ERROR frame before it has the detail
	case closeProtocol:
		return 4000 + int(wire.CodeProtocol)
	case closeSlow:
		return 4000 + int(wire.CodeSlowConsumer)
	case closeHeartbeat:
		return 4000 + int(wire.CodeHeartbeatMissed)
	}
	return 1000
}

// closeOnExec marks a connection's descriptor close-on-exec, before nbio
// adds it to epoll. nbio duplicates every accepted socket with dup(2),
// which drops the flag, so a child started later (pushd --dev restarting
// its redis-server) would inherit every connection open at that moment:
// the socket would outlive its close here, and epoll, which follows the
// open socket rather than its number, would go on reporting its hang-up
// under a number this process has since given to a new connection, which
// nbio then closes. Only a child forked between the dup and this call
// still inherits the socket.
func closeOnExec(c *nbio.Conn) {
	if rc, err := c.SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) { syscall.CloseOnExec(int(fd)) })
	}
}
