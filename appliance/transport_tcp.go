package appliance

import (
	"net"
	"sync"
	"time"

	"github.com/lesismal/llib/std/crypto/tls"
	"github.com/lesismal/nbio"
	"github.com/lesismal/nbio/mempool"
)

// tcpTransport carries frames on a raw TCP (or TLS) byte stream. The
// frame header holds the body length, so frames need no further framing.
type tcpTransport struct {
	c net.Conn // *nbio.Conn, or *tls.Conn over one
}

func (t tcpTransport) write(b []byte, off int, deadline time.Time) error {
	if nc, ok := t.c.(*nbio.Conn); ok {
		_, err := nc.WriteQueueDeadline(b[off:], deadline)
		return err
	}
	// TLS: its records are written through to the connection below, whose
	// timer the deadline arms.
	_ = t.c.SetWriteDeadline(deadline)
	_, err := t.c.Write(b[off:])
	return err
}

func (t tcpTransport) close(closeReason) { _ = t.c.Close() }

// clearReadDeadline is a no-op: raw TCP connections never had one.
func (tcpTransport) clearReadDeadline() {}

func (t tcpTransport) remoteAddr() string { return t.c.RemoteAddr().String() }

func (tcpTransport) kind() transportKind { return kindTCP }

// tlsPlain pools the buffers TLS records are decrypted into on the poller
// goroutine, so a TLS connection holds no plaintext buffer between reads.
var tlsPlain = sync.Pool{New: func() any { b := make([]byte, 16<<10); return &b }}

// newTCPEngine builds the raw TCP listener on an nbio engine. Its OnData
// runs on the poller goroutine with a buffer nbio reuses: the session's
// decoder copies what it keeps, and nothing here blocks.
func (n *Node) newTCPEngine() *nbio.Engine {
	g := nbio.NewEngine(nbio.Config{
		Name:               "pushd-tcp",
		Network:            "tcp",
		Addrs:              []string{n.cfg.TCPAddr},
		MaxWriteBufferSize: n.cfg.QueueBytes,
		Listen: func(network, addr string) (net.Listener, error) {
			l, err := net.Listen(network, addr)
			if err != nil {
				return nil, err
			}
			return admittingListener{l, n}, nil
		},
	})
	g.OnOpen(func(c *nbio.Conn) {
		closeOnExec(c)
		var under net.Conn = c
		if n.cfg.TLS != nil {
			under = tls.NewConn(c, n.cfg.TLS, false, true, mempool.DefaultMemPool)
		}
		c.SetSession(n.newSession(tcpTransport{under}))
	})
	g.OnData(func(c *nbio.Conn, data []byte) {
		s, _ := c.Session().(*session)
		if s == nil || !s.published.Load() {
			return
		}
		tc, ok := s.t.(tcpTransport).c.(*tls.Conn)
		if !ok {
			s.onStreamData(data)
			return
		}
		if _, err := tc.Append(data); err != nil {
			_ = c.Close()
			return
		}
		pbuf := tlsPlain.Get().(*[]byte)
		defer tlsPlain.Put(pbuf)
		for {
			k, err := tc.Read(*pbuf)
			if err != nil {
				_ = c.Close()
				return
			}
			if k == 0 {
				return
			}
			s.onStreamData((*pbuf)[:k])
		}
	})
	g.OnClose(func(c *nbio.Conn, err error) {
		if s, _ := c.Session().(*session); s != nil {
			s.onTransportClosed(err)
		}
	})
	return g
}

// admittingListener applies admit to the raw TCP listener as it accepts:
// a connection refused (per-IP rate, capacity) is closed at once, without
// a byte, and never reaches nbio. Closing it in nbio's OnOpen instead
// would free its descriptor number while nbio goes on to register that
// number with epoll, by then perhaps another connection's.
type admittingListener struct {
	net.Listener
	n *Node
}

func (l admittingListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.n.admit(c.RemoteAddr().String()) == nil {
			return c, nil
		}
		_ = c.Close()
	}
}
