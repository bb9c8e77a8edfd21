package client

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/pushd/pushd/appliance/wire"
	"github.com/pushd/pushd/internal/poll"
)

// bigUp is an UP payload far larger than what the socket buffers of a
// loopback connection hold once the server stops reading, so writing it
// blocks until a deadline or a close.
const bigUp = 16 << 20

// stopReading shrinks the server's receive buffer so that the client's
// writes back up soon once the server no longer reads.
func stopReading(t *testing.T, sc *serverConn) {
	t.Helper()
	if err := sc.nc.(*net.TCPConn).SetReadBuffer(16 << 10); err != nil {
		t.Fatal(err)
	}
}

func waitConnected(t *testing.T, c *Client) {
	t.Helper()
	poll.Until(t, 5*time.Second, func() error {
		if !c.Connected() {
			return errors.New("not connected")
		}
		return nil
	})
}

// TestClient_WriteTimeoutClosesConnection: a write to a server that does
// not read fails after WriteTimeout, and the connection is given up and
// made again.
func TestClient_WriteTimeoutClosesConnection(t *testing.T) {
	srv := newFakeServer(t)
	cfg := testConfig(srv)
	cfg.WriteTimeout = 200 * time.Millisecond
	c := newClient(t, cfg)
	run(t, c)
	sc := srv.next(t)
	stopReading(t, sc)
	sc.welcome(t, &wire.Welcome{Session: "s1", Heartbeat: 10_000, Recovered: true})
	waitConnected(t, c)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	_, err := c.Up(ctx, "b", make([]byte, bigUp))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || ctx.Err() != nil {
		t.Fatalf("Up to a server that does not read returned %v, want a write timeout", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("write timed out after %s, want about 200ms", d)
	}
	sc = srv.next(t) // the stuck connection was dropped and made again
	expect[*wire.Hello](t, sc)
}

// TestClient_CloseNotStuckBehindWrite: on WebSocket, closing sends a close
// frame under the write lock; with a write stuck on a server that does not
// read, Run still returns promptly on cancel.
func TestClient_CloseNotStuckBehindWrite(t *testing.T) {
	srv := startFakeServer(t, true)
	cfg := testConfig(srv)
	cfg.WriteTimeout = time.Minute
	c := newClient(t, cfg)
	errc, cancel := run(t, c)
	sc := srv.next(t)
	stopReading(t, sc)
	sc.welcome(t, &wire.Welcome{Session: "s1", Heartbeat: 10_000, Recovered: true})
	waitConnected(t, c)

	upErr := make(chan error, 1)
	go func() {
		_, err := c.Up(context.Background(), "b", make([]byte, bigUp))
		upErr <- err
	}()
	// Once the start of the UP is in, its write is under way, and it
	// cannot finish: the server reads nothing more.
	// The deadline only guards against a hang: under -race on a busy
	// machine the client can take seconds to write that much.
	_ = sc.nc.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.ReadFull(sc.br, make([]byte, 64<<10)); err != nil {
		t.Fatalf("reading the start of the UP: %v", err)
	}

	start := time.Now()
	cancel()
	if err := runResult(t, errc); !errors.Is(err, context.Canceled) {
		t.Errorf("Run returned %v, want context.Canceled", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Run returned %s after cancel", d)
	}
	select {
	case err := <-upErr:
		if err == nil {
			t.Error("the stuck UP succeeded")
		}
	case <-time.After(5 * time.Second):
		t.Error("the stuck UP did not end with the connection")
	}
}

// TestWSConn_CloseSendsCloseFrame: without a stuck write, close still
// says goodbye with 1000.
func TestWSConn_CloseSendsCloseFrame(t *testing.T) {
	srv := startFakeServer(t, true)
	conns := make(chan *Conn, 1)
	go func() {
		c, err := DialConn(context.Background(), srv.url(), DialOptions{})
		if err != nil {
			t.Error(err)
		}
		conns <- c
	}()
	sc := srv.next(t)
	c := <-conns
	if c == nil {
		t.FailNow()
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := sc.read(5 * time.Second); !errors.Is(err, io.EOF) {
		t.Fatalf("server read %v, want the close frame", err)
	}
	if err := c.Close(); err == nil {
		t.Error("a second Close of a closed connection reported no error")
	}
}
