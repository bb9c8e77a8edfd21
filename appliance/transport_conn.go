package appliance

import (
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// connTransport carries frames, as on the raw TCP listener, on a net.Conn
// handed to ServeConn, read by the goroutine that called it.
type connTransport struct {
	c net.Conn
}

// write writes b before returning. A write that fails, the write
// deadline's included (a peer that stopped reading), closes the
// connection, as nbio does past its write timeout.
func (t connTransport) write(b []byte, off int, deadline time.Time) error {
	_ = t.c.SetWriteDeadline(deadline)
	_, err := t.c.Write(b[off:])
	if err != nil {
		_ = t.c.Close()
	}
	return err
}

func (t connTransport) close(closeReason) { _ = t.c.Close() }

func (connTransport) clearReadDeadline() {}

func (t connTransport) remoteAddr() string { return t.c.RemoteAddr().String() }

func (connTransport) kind() transportKind { return kindConn }

// ServeConn runs the device protocol on conn, framed as on the raw TCP
// listener, until the connection ends, reading on the calling goroutine.
// It returns nil when the device or the node closed the connection.
//
// The node's own listeners run on nbio event loops, a few goroutines for
// any number of connections; ServeConn is for connections they cannot
// take: an embedder's own listener or a net.Pipe, and the tests, because
// the race detector cannot follow nbio's hand-over of a connection from
// its accepting goroutine to its poller. A connection served this way
// costs a goroutine and a read buffer, and its writes block (up to the
// write timeout) instead of queueing: use it for a few connections.
// The per-IP connect limit and MaxConns apply as on the listeners.
func (n *Node) ServeConn(conn net.Conn) error {
	if e := n.admit(conn.RemoteAddr().String()); e != nil {
		_ = conn.Close()
		return errors.New(e.Message)
	}
	s := n.newSession(connTransport{conn})
	buf := make([]byte, 16<<10)
	for {
		k, err := conn.Read(buf)
		if k > 0 {
			s.onStreamData(buf[:k])
		}
		if err != nil {
			s.onTransportClosed(err)
			if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
	}
}

// Serve hands every connection ln accepts to ServeConn, each on a
// goroutine of its own, until ln is closed; then it waits for those
// connections to end (Shutdown ends them) and returns. The same caveats
// as ServeConn's apply: it is for tests, embedders and a few connections.
func (n *Node) Serve(ln net.Listener) error {
	var conns sync.WaitGroup
	defer conns.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		conns.Add(1)
		go func() {
			defer conns.Done()
			_ = n.ServeConn(c)
		}()
	}
}
