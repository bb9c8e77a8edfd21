package ctl

import (
	"net"
	"sync"
	"testing"
	"time"

	"github.com/pushd/pushd/appliance/token"
	"github.com/pushd/pushd/appliance/wire"
)

// fakeDeviceServer speaks the device side of the wire protocol on raw
// TCP: HELLO (token verified), WELCOME, PING/PONG and cumulative ACK, and
// sends whatever frame a test gives it. It is for what a real node sends
// only in rare states or never (a sequence gap, a degraded CONTROL on
// demand, repeats and out-of-order PUSHes, an ERROR): listen's tests of
// those lines. Everything else runs against real nodes (appliancetest).
type fakeDeviceServer struct {
	ln        net.Listener
	heartbeat time.Duration
	wg        sync.WaitGroup

	mu    sync.Mutex
	conns map[string]net.Conn // device → live connection
	acked map[string]uint64
	all   []net.Conn
}

func newFakeDeviceServer(t *testing.T, heartbeat time.Duration) *fakeDeviceServer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &fakeDeviceServer{ln: ln, heartbeat: heartbeat, conns: map[string]net.Conn{}, acked: map[string]uint64{}}
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

func (s *fakeDeviceServer) url() string { return "tcp://" + s.ln.Addr().String() }

type testKeys struct{}

func (testKeys) TokenSecret(app, keyID string) ([]byte, bool) {
	if app != testApp {
		return nil, false
	}
	if keyID != testKeyID {
		return nil, true
	}
	return testSecret, true
}

func (s *fakeDeviceServer) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.all = append(s.all, c)
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serveConn(c)
		}()
	}
}

func (s *fakeDeviceServer) serveConn(c net.Conn) {
	defer c.Close()
	dec := wire.Decoder{}
	buf := make([]byte, 4096)
	device := ""
	for {
		n, err := c.Read(buf)
		if err != nil {
			s.mu.Lock()
			if device != "" && s.conns[device] == c {
				delete(s.conns, device)
			}
			s.mu.Unlock()
			return
		}
		dec.Write(buf[:n])
		for {
			f, err := dec.Next()
			if err != nil {
				return
			}
			if f == nil {
				break
			}
			switch f := f.(type) {
			case *wire.Hello:
				if _, err := token.Verify(f.Token, testKeys{}, f.App, f.Device, time.Now()); err != nil {
					_, _ = c.Write(wire.Append(nil, &wire.Error{Code: wire.CodeTokenSignature, Message: err.Error()}))
					return
				}
				device = f.Device
				s.mu.Lock()
				acked := s.acked[device]
				s.conns[device] = c
				s.mu.Unlock()
				_, _ = c.Write(wire.Append(nil, &wire.Welcome{Session: "s-" + device, Node: "fake",
					Heartbeat: uint64(s.heartbeat.Milliseconds()), Recovered: true, Epoch: "e1", Acked: acked}))
			case *wire.Ping:
				_, _ = c.Write(wire.Append(nil, &wire.Pong{Time: f.Time}))
			case *wire.Ack:
				s.mu.Lock()
				s.acked[device] = max(s.acked[device], f.Seq)
				s.mu.Unlock()
			}
		}
	}
}

// send writes a frame to device's connection and reports whether it had
// one.
func (s *fakeDeviceServer) send(device string, f wire.Frame) bool {
	s.mu.Lock()
	c := s.conns[device]
	s.mu.Unlock()
	if c == nil {
		return false
	}
	_, err := c.Write(wire.Append(nil, f))
	return err == nil
}

func (s *fakeDeviceServer) ackedOf(device string) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.acked[device]
}

func (s *fakeDeviceServer) connected(device string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns[device] != nil
}
