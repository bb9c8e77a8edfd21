package appliance

import (
	"encoding/binary"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/lesismal/nbio"
	"github.com/lesismal/nbio/nbhttp"
	"github.com/lesismal/nbio/nbhttp/websocket"

	"github.com/pushd/pushd/appliance/api"
	"github.com/pushd/pushd/appliance/wire"
)

// wsTransport carries frames as WebSocket binary messages on nbio: one
// frame or one BATCH per message. On a plain connection it writes its
// messages itself, on the nbio connection under the WebSocket layer: the
// message header goes into the headroom before the frame, and nothing is
// copied (nbio's WriteMessage allocates and copies each message). The
// session's wmu orders these writes with the close, which goes through
// the WebSocket layer. Over TLS it writes through that layer.
type wsTransport struct {
	c  *websocket.Conn
	nc *nbio.Conn // nil over TLS
}

func newWSTransport(c *websocket.Conn) wsTransport {
	t := wsTransport{c: c}
	switch u := c.UnderlayerConn().(type) {
	case *nbio.Conn:
		t.nc = u
	case *nbhttp.Conn:
		t.nc, _ = u.Conn.(*nbio.Conn)
	}
	return t
}

func (t wsTransport) write(b []byte, off int, deadline time.Time) error {
	if t.nc == nil {
		_ = t.c.SetWriteDeadline(deadline)
		return t.c.WriteMessage(websocket.BinaryMessage, b[off:])
	}
	h := putWSHeader(b[:off], len(b)-off)
	_, err := t.nc.WriteQueueDeadline(b[off-h:], deadline)
	return err
}

// putWSHeader writes the header of a final, unmasked binary WebSocket
// frame of n bytes at the end of head, and returns its length.
func putWSHeader(head []byte, n int) int {
	var h int
	switch {
	case n < 126:
		h = 2
		head[len(head)-1] = byte(n)
	case n <= 0xFFFF:
		h = 4
		head[len(head)-3] = 126
		binary.BigEndian.PutUint16(head[len(head)-2:], uint16(n))
	default:
		h = 10
		head[len(head)-9] = 127
		binary.BigEndian.PutUint64(head[len(head)-8:], uint64(n))
	}
	head[len(head)-h] = 0x80 | byte(websocket.BinaryMessage)
	return h
}

func (t wsTransport) close(r closeReason) {
	_ = t.c.WriteClose(r.wsCloseCode(), "")
	_ = t.c.Close()
}

// clearReadDeadline undoes the HTTP keep-alive deadline. The upgrade
// clears it too, but nbio's listener arms it only after handing the
// connection to a poller, so a fast client can finish its upgrade first
// and would be cut one HandshakeTimeout later.
func (t wsTransport) clearReadDeadline() { _ = t.c.SetReadDeadline(time.Time{}) }

func (t wsTransport) remoteAddr() string { return t.c.RemoteAddr().String() }

func (wsTransport) kind() transportKind { return kindWS }

// newWSEngine builds the nbio HTTP engine that serves /v1/ws, /healthz,
// /metrics and /v1/dispatch on one port, in non-blocking mode: no
// goroutine per connection.
func (n *Node) newWSEngine(mux *http.ServeMux) *nbhttp.Engine {
	u := websocket.NewUpgrader()
	// The timing wheel reaps idle connections; nbio's keepalive would
	// re-arm a timer on every message.
	u.KeepaliveTime = 0
	u.MessageLengthLimit = n.cfg.MaxFrame + wire.HeaderLen
	u.HandshakeTimeout = n.cfg.HandshakeTimeout
	u.CheckOrigin = n.originAllowed
	u.OnMessage(func(c *websocket.Conn, mt websocket.MessageType, data []byte) {
		s, _ := c.Session().(*session)
		if s == nil {
			_ = c.Close()
			return
		}
		if mt != websocket.BinaryMessage {
			s.protocolError("text messages are not part of the protocol; send binary frames")
			return
		}
		s.onMessage(data)
	})
	u.OnClose(func(c *websocket.Conn, err error) {
		if s, _ := c.Session().(*session); s != nil {
			s.onTransportClosed(err)
		}
	})
	mux.HandleFunc("/v1/ws", func(w http.ResponseWriter, r *http.Request) {
		if e := n.admit(r.RemoteAddr); e != nil {
			refuseUpgrade(w, r, e)
			return
		}
		if !n.originAllowed(r) {
			refuseUpgrade(w, r, &api.APIError{Status: http.StatusForbidden, Code: wire.CodeOriginForbidden.String(),
				Message: "Origin not in the allowlist"})
			return
		}
		c, err := u.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		c.SetSession(n.newSession(newWSTransport(c)))
	})

	conf := nbhttp.Config{
		Network:                 "tcp",
		Handler:                 mux,
		IOMod:                   nbhttp.IOModNonBlocking,
		ReleaseWebsocketPayload: true,
		// The read deadline of a connection still speaking HTTP: a
		// slowloris upgrade request is cut here. It runs a little past
		// the handshake timeout so that an upgraded connection that never
		// sends HELLO, should nbio arm it after the upgrade (see
		// clearReadDeadline), is closed by the session's own timer, with
		// ERROR handshake_timeout, rather than silently by nbio.
		KeepaliveTime:      n.cfg.HandshakeTimeout + httpDeadlineSlack,
		MaxWriteBufferSize: n.cfg.QueueBytes,
		// Device connections are capped by admit at MaxConns, with a
		// 503; the slack above it keeps the port answering HTTP when the
		// node is full. nbio closes a connection past MaxLoad as it
		// accepts it.
		MaxLoad: n.cfg.MaxConns + n.cfg.HTTPSlack,
	}
	if n.cfg.TLS != nil {
		conf.AddrsTLS = []string{n.cfg.WSAddr}
		conf.TLSConfig = n.cfg.TLS
	} else {
		conf.Addrs = []string{n.cfg.WSAddr}
	}
	e := nbhttp.NewEngine(conf)
	e.Engine.OnOpen(closeOnExec)
	return e
}

// refuseUpgrade answers a WebSocket upgrade the node does not take with
// e, in the push API's error shape, and closes the connection after the
// answer (Connection: close): the device will try again later, and
// meanwhile the slot goes back to the listener's slack.
func refuseUpgrade(w http.ResponseWriter, r *http.Request, e *api.APIError) {
	r.Close = true // nbhttp says Connection: close and closes after the answer
	api.WriteError(w, e)
}

// httpDeadlineSlack is how long after the handshake timeout nbio's HTTP
// read deadline falls: several timing-wheel ticks.
const httpDeadlineSlack = 500 * time.Millisecond

// closeReasonOf classifies why nbio closed a connection.
func closeReasonOf(err error) closeReason {
	switch {
	case errors.Is(err, nbio.ErrWriteTimeout), errors.Is(err, nbio.ErrOverflow):
		return closeSlow
	case errors.Is(err, websocket.ErrMessageTooLarge):
		return closeTooLarge
	case errors.Is(err, nbio.ErrReadTimeout):
		// The only read deadline is the HTTP one of a connection that
		// never completed its upgrade.
		return closeHandshakeTimeout
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return closeSlow
	}
	return closePeer
}
