package client

import (
	"bufio"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/pushd/pushd/appliance/wire"
)

// fakeServer is a device port for tests, speaking the wire protocol over
// raw TCP (tcp:// URLs) or, with ws set, over a minimal WebSocket. It does
// nothing by itself: every accepted connection is handed to the test
// through next, and the test reads and writes frames on it.
type fakeServer struct {
	ln    net.Listener
	ws    bool
	conns chan *serverConn
	wg    sync.WaitGroup

	mu      sync.Mutex
	accepts int
	all     []net.Conn
}

func newFakeServer(t *testing.T) *fakeServer { return startFakeServer(t, false) }

func startFakeServer(t *testing.T, ws bool) *fakeServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &fakeServer{ln: ln, ws: ws, conns: make(chan *serverConn, 64)}
	s.wg.Add(1)
	go s.accept()
	t.Cleanup(func() {
		_ = ln.Close()
		s.mu.Lock()
		for _, c := range s.all {
			_ = c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

func (s *fakeServer) url() string {
	if s.ws {
		return "ws://" + s.ln.Addr().String() + "/v1/ws"
	}
	return "tcp://" + s.ln.Addr().String()
}

func (s *fakeServer) accept() {
	defer s.wg.Done()
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.accepts++
		s.all = append(s.all, nc)
		s.mu.Unlock()
		sc := &serverConn{nc: nc, ws: s.ws, br: bufio.NewReader(nc), dec: wire.Decoder{Max: maxInbound}}
		select {
		case s.conns <- sc:
		default:
			_ = nc.Close() // the test is not taking connections
		}
	}
}

// acceptCount returns how many connections have been accepted so far.
func (s *fakeServer) acceptCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.accepts
}

// settle returns the number of connections accepted once every connect
// that completed before the call has been accepted: it connects once more
// and waits for that connection, which the kernel queues behind the
// earlier ones. The probe itself is not counted.
func (s *fakeServer) settle(t *testing.T) int {
	t.Helper()
	probe, err := net.Dial("tcp", s.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer probe.Close()
	for {
		select {
		case sc := <-s.conns:
			if sc.nc.RemoteAddr().String() == probe.LocalAddr().String() {
				_ = sc.nc.Close()
				return s.acceptCount() - 1
			}
			t.Fatalf("a connection from %s arrived while settling", sc.nc.RemoteAddr())
		case <-time.After(5 * time.Second):
			t.Fatal("probe connection not accepted")
		}
	}
}

// next returns the next accepted connection, failing the test after 5 s.
func (s *fakeServer) next(t *testing.T) *serverConn {
	t.Helper()
	select {
	case sc := <-s.conns:
		if s.ws {
			sc.upgrade(t)
		}
		return sc
	case <-time.After(5 * time.Second):
		t.Fatal("no connection from the client within 5 s")
		return nil
	}
}

// serverConn is the server end of one connection. Reads belong to the
// test goroutine; writes are serialized.
type serverConn struct {
	nc  net.Conn
	ws  bool
	br  *bufio.Reader
	dec wire.Decoder
	wmu sync.Mutex
}

// upgrade answers the WebSocket upgrade request.
func (c *serverConn) upgrade(t *testing.T) {
	t.Helper()
	_ = c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	req, err := http.ReadRequest(c.br)
	if err != nil {
		t.Fatalf("websocket upgrade request: %v", err)
	}
	sum := sha1.Sum([]byte(req.Header.Get("Sec-WebSocket-Key") + wsGUID))
	resp := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Accept: " + base64.StdEncoding.EncodeToString(sum[:]) + "\r\n\r\n"
	if _, err := io.WriteString(c.nc, resp); err != nil {
		t.Fatalf("websocket upgrade answer: %v", err)
	}
}

// read returns the next frame from the client within timeout.
func (c *serverConn) read(timeout time.Duration) (wire.Frame, error) {
	_ = c.nc.SetReadDeadline(time.Now().Add(timeout))
	if c.ws {
		return c.readWS()
	}
	for {
		f, err := c.dec.Next()
		if f != nil || err != nil {
			return f, err
		}
		var buf [4096]byte
		n, err := c.br.Read(buf[:])
		if n > 0 {
			c.dec.Write(buf[:n])
		}
		if err != nil && n == 0 {
			return nil, err
		}
	}
}

// readWS reads one masked WebSocket message from the client and decodes
// the frame it holds. Control messages other than close are skipped.
func (c *serverConn) readWS() (wire.Frame, error) {
	for {
		var h [2]byte
		if _, err := io.ReadFull(c.br, h[:]); err != nil {
			return nil, err
		}
		op := h[0] & 0x0F
		n, err := readWSLength(c.br, h[1])
		if err != nil {
			return nil, err
		}
		var mask [4]byte
		if _, err := io.ReadFull(c.br, mask[:]); err != nil {
			return nil, err
		}
		payload := make([]byte, n)
		if _, err := io.ReadFull(c.br, payload); err != nil {
			return nil, err
		}
		for i := range payload {
			payload[i] ^= mask[i&3]
		}
		switch op {
		case opClose:
			return nil, io.EOF
		case opBinary:
			f, _, err := wire.Decode(payload, maxInbound)
			return f, err
		}
	}
}

// expect reads frames until one of type T arrives, failing the test on an
// error or after 5 s.
func expect[T wire.Frame](t *testing.T, c *serverConn) T {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		f, err := c.read(time.Until(deadline))
		if err != nil {
			var zero T
			t.Fatalf("waiting for %T: %v", zero, err)
		}
		if x, ok := f.(T); ok {
			return x
		}
	}
}

// send writes frames to the client: one frame as is, several as one BATCH.
func (c *serverConn) send(frames ...wire.Frame) error {
	var b []byte
	if len(frames) == 1 {
		b = wire.Append(nil, frames[0])
	} else {
		var inner []byte
		for _, f := range frames {
			inner = wire.Append(inner, f)
		}
		b = wire.AppendBatch(nil, inner, false)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if c.ws {
		hdr := []byte{0x80 | opBinary}
		switch n := len(b); {
		case n < 126:
			hdr = append(hdr, byte(n))
		case n <= 0xFFFF:
			hdr = binary.BigEndian.AppendUint16(append(hdr, 126), uint16(n))
		default:
			hdr = binary.BigEndian.AppendUint64(append(hdr, 127), uint64(n))
		}
		b = append(hdr, b...)
	}
	_, err := c.nc.Write(b)
	return err
}

// mustSend is send that fails the test.
func (c *serverConn) mustSend(t *testing.T, frames ...wire.Frame) {
	t.Helper()
	if err := c.send(frames...); err != nil {
		t.Fatalf("send to client: %v", err)
	}
}

// welcome reads the HELLO and answers WELCOME, returning the HELLO.
func (c *serverConn) welcome(t *testing.T, w *wire.Welcome) *wire.Hello {
	t.Helper()
	f, err := c.read(5 * time.Second)
	if err != nil {
		t.Fatalf("waiting for HELLO: %v", err)
	}
	h, ok := f.(*wire.Hello)
	if !ok {
		t.Fatalf("first frame %s, want HELLO", f.Type())
	}
	c.mustSend(t, w)
	return h
}

func (c *serverConn) close() { _ = c.nc.Close() }

// waitClosed waits until the client has closed its end.
func (c *serverConn) waitClosed(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := c.read(time.Until(deadline))
		var ne net.Error
		switch {
		case err == nil:
		case errors.As(err, &ne) && ne.Timeout():
			t.Fatal("client did not close the connection within 5 s")
		default:
			return
		}
	}
}

// testConfig returns a Config for srv with short timeouts.
func testConfig(srv *fakeServer) Config {
	return Config{URL: srv.url(), App: "app1", Device: "dev-1", Token: "tok",
		BackoffMin: 10 * time.Millisecond, BackoffMax: 20 * time.Millisecond,
		DialTimeout: 5 * time.Second, HandshakeTimeout: 5 * time.Second}
}

// run starts c.Run on ctx in the background and returns a channel that
// gets its result. Cleanup cancels ctx and waits for Run to return.
func run(t *testing.T, c *Client) (<-chan error, context.CancelFunc) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-c.Done():
		case <-time.After(5 * time.Second):
			t.Error("Run did not return within 5 s of cancel")
		}
	})
	return errc, cancel
}

// runResult waits for Run's result, failing the test after 5 s.
func runResult(t *testing.T, errc <-chan error) error {
	t.Helper()
	select {
	case err := <-errc:
		return err
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return within 5 s")
		return nil
	}
}

// recorder collects callback events in order, safe for concurrent use.
type recorder struct {
	mu  sync.Mutex
	evs []string
}

func (r *recorder) add(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.evs = append(r.evs, fmt.Sprintf(format, args...))
}

func (r *recorder) events() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.evs...)
}

// has returns nil once ev was recorded.
func (r *recorder) has(ev string) func() error {
	return func() error {
		for _, e := range r.events() {
			if e == ev {
				return nil
			}
		}
		return fmt.Errorf("no %q in %q", ev, r.events())
	}
}
