// Package faultproxy is an in-process fault injector for pushd's raw TCP
// device protocol, in place of tc netem (which this machine lacks): it
// relays connections to a node frame by frame and drops, or lets pass,
// each frame according to a rule the test sets and changes at will.
//
// The simplest use:
//
//	p := faultproxy.Start(t, node.Addrs().TCP)
//	p.SetRule(func(d faultproxy.Direction, f wire.Frame) bool {
//		_, ack := f.(*wire.Ack)
//		return d == faultproxy.Up && ack // drop every ACK
//	})
//	// point the device at "tcp://" + p.Addr()
//
// BATCH frames from the node are opened and each inner frame is judged on
// its own; what passes is re-encoded as a plain BATCH. A Proxy is safe for
// concurrent use. Its connections close with the test.
package faultproxy

import (
	"errors"
	"io"
	"net"
	"sync"
	"testing"

	"github.com/pushd/pushd/appliance/wire"
)

// Direction is the way a frame travels.
type Direction int

const (
	Up   Direction = iota // device to node
	Down                  // node to device
)

// Rule reports whether to drop a frame. It is called for every frame,
// inner frames of a BATCH included, so it can count what passes too.
type Rule func(d Direction, f wire.Frame) (drop bool)

// Proxy relays device connections to one upstream node.
type Proxy struct {
	upstream string
	lis      net.Listener

	mu    sync.Mutex
	rule  Rule
	conns []net.Conn
	wg    sync.WaitGroup
}

// maxFrame bounds frames in either direction: the node's batches can be
// far larger than a device's frames.
const maxFrame = 4 << 20

// Start listens on a loopback port and relays to upstream (host:port of a
// node's TCP listener) until the test ends.
func Start(t testing.TB, upstream string) *Proxy {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{upstream: upstream, lis: lis}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.Close)
	return p
}

// Addr is the address devices dial instead of the node's.
func (p *Proxy) Addr() string { return p.lis.Addr().String() }

// SetRule replaces the drop rule; nil lets everything pass.
func (p *Proxy) SetRule(r Rule) {
	p.mu.Lock()
	p.rule = r
	p.mu.Unlock()
}

// Close stops the listener and every relayed connection and waits for the
// relay goroutines.
func (p *Proxy) Close() {
	_ = p.lis.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *Proxy) drop(d Direction, f wire.Frame) bool {
	p.mu.Lock()
	r := p.rule
	p.mu.Unlock()
	return r != nil && r(d, f)
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		down, err := p.lis.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", p.upstream)
		if err != nil {
			_ = down.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, down, up)
		p.mu.Unlock()
		p.wg.Add(2)
		go p.relay(Up, down, up)
		go p.relay(Down, up, down)
	}
}

// relay copies frames from src to dst, judging each, and closes both ends
// when either fails.
func (p *Proxy) relay(d Direction, src, dst net.Conn) {
	defer p.wg.Done()
	defer src.Close()
	defer dst.Close()
	dec := wire.Decoder{Max: maxFrame}
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			dec.Write(buf[:n])
			if ferr := p.forward(d, &dec, dst); ferr != nil {
				return
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				return
			}
			return
		}
	}
}

func (p *Proxy) forward(d Direction, dec *wire.Decoder, dst net.Conn) error {
	var out []byte
	for {
		f, err := dec.Next()
		if err != nil {
			return err
		}
		if f == nil {
			break
		}
		if b, ok := f.(*wire.Batch); ok {
			var inner []byte
			if err := b.Each(maxFrame, func(x wire.Frame) error {
				if !p.drop(d, x) {
					inner = wire.Append(inner, x)
				}
				return nil
			}); err != nil {
				return err
			}
			if len(inner) > 0 {
				out = wire.AppendBatch(out, inner, false)
			}
			continue
		}
		if !p.drop(d, f) {
			out = wire.Append(out, f)
		}
	}
	if len(out) == 0 {
		return nil
	}
	_, err := dst.Write(out)
	return err
}
