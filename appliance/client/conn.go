package client

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pushd/pushd/appliance/wire"
)

// maxInbound bounds a frame (or batch) the client accepts from a server:
// the server's output queue cap with room to spare.
const maxInbound = 4 << 20

// defaultWriteTimeout is Config.WriteTimeout's zero value.
const defaultWriteTimeout = 10 * time.Second

// frameConn is one connection to a node, on WebSocket or raw TCP. Writes
// are serialized by the connection's own write lock and each has a
// deadline; reads come from one goroutine. close may be called any number
// of times, from any goroutine, and does not wait behind a stuck write.
type frameConn interface {
	writeFrame(b []byte) error
	readFrame() (wire.Frame, error)
	setReadDeadline(t time.Time) error
	close() error
}

// CloseError reports the WebSocket close frame a server sent.
type CloseError struct {
	Code   int
	Reason string
}

func (e *CloseError) Error() string {
	return fmt.Sprintf("websocket closed by server: %d %s", e.Code, e.Reason)
}

// dial opens a connection to rawURL: ws://, wss://, tcp:// or tls://.
func dial(ctx context.Context, rawURL string, cfg *Config) (frameConn, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("parse url %q: %w", rawURL, err)
	}
	d := net.Dialer{Timeout: cfg.DialTimeout}
	if cfg.LocalAddr != nil {
		d.LocalAddr = cfg.LocalAddr
		d.Control = deferPortChoice
	}
	secure := u.Scheme == "wss" || u.Scheme == "tls"
	var nc net.Conn
	switch u.Scheme {
	case "ws", "wss", "tcp", "tls":
		nc, err = d.DialContext(ctx, "tcp", u.Host)
	default:
		return nil, fmt.Errorf("url %q: scheme must be ws, wss, tcp or tls", rawURL)
	}
	if err != nil {
		return nil, err
	}
	if secure {
		tc := cfg.TLS
		if tc == nil {
			tc = &tls.Config{}
		}
		tc = tc.Clone()
		if tc.ServerName == "" {
			tc.ServerName = u.Hostname()
		}
		tlsConn := tls.Client(nc, tc)
		if err := tlsConn.HandshakeContext(ctx); err != nil {
			_ = nc.Close()
			return nil, fmt.Errorf("tls handshake: %w", err)
		}
		nc = tlsConn
	}
	wt := cfg.WriteTimeout
	if wt <= 0 {
		wt = defaultWriteTimeout
	}
	if u.Scheme == "tcp" || u.Scheme == "tls" {
		return &tcpConn{nc: nc, wt: wt, dec: wire.Decoder{Max: maxInbound}}, nil
	}
	c, err := wsHandshake(ctx, nc, u, cfg.Origin)
	if err != nil {
		_ = nc.Close()
		return nil, err
	}
	c.wt = wt
	return c, nil
}

// writeFailed closes nc after a write that timed out, since part of a
// frame may have gone out and nothing more can be written on the stream,
// and returns err. Other write errors leave nc open: frames the server
// sent before closing its end can still be read.
func writeFailed(nc net.Conn, err error) error {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		_ = nc.Close()
	}
	return err
}

// tcpConn speaks length-prefixed frames on a byte stream.
type tcpConn struct {
	nc  net.Conn
	wt  time.Duration // write timeout
	wmu sync.Mutex
	dec wire.Decoder
	buf [32 << 10]byte
}

func (c *tcpConn) writeFrame(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.nc.SetWriteDeadline(time.Now().Add(c.wt))
	_, err := c.nc.Write(b)
	return writeFailed(c.nc, err)
}

func (c *tcpConn) readFrame() (wire.Frame, error) {
	for {
		f, err := c.dec.Next()
		if f != nil || err != nil {
			return f, err
		}
		n, err := c.nc.Read(c.buf[:])
		if n > 0 {
			c.dec.Write(c.buf[:n])
		}
		if err != nil && n == 0 {
			return nil, err
		}
	}
}

func (c *tcpConn) setReadDeadline(t time.Time) error { return c.nc.SetReadDeadline(t) }
func (c *tcpConn) close() error                      { return c.nc.Close() }

// wsConn is a minimal RFC 6455 client: binary messages out (masked),
// binary messages in, pings answered, close frames reported.
type wsConn struct {
	nc net.Conn
	br *bufio.Reader
	wt time.Duration // write timeout
	// wlock serializes writes: a channel of one slot rather than a mutex,
	// so that close can give up waiting behind a stuck write.
	wlock   chan struct{}
	closing atomic.Bool
	msg     []byte
}

const wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

func wsHandshake(ctx context.Context, nc net.Conn, u *url.URL, origin string) (*wsConn, error) {
	var keyBytes [16]byte
	_, _ = rand.Read(keyBytes[:])
	key := base64.StdEncoding.EncodeToString(keyBytes[:])
	path := u.RequestURI()
	var req strings.Builder
	fmt.Fprintf(&req, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n", path, u.Host)
	fmt.Fprintf(&req, "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n", key)
	if origin != "" {
		fmt.Fprintf(&req, "Origin: %s\r\n", origin)
	}
	req.WriteString("\r\n")
	if dl, ok := ctx.Deadline(); ok {
		_ = nc.SetDeadline(dl)
		defer func() { _ = nc.SetDeadline(time.Time{}) }()
	}
	// Cancelling ctx (Client.Close) ends the upgrade too.
	stop := context.AfterFunc(ctx, func() { _ = nc.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := io.WriteString(nc, req.String()); err != nil {
		return nil, fmt.Errorf("websocket upgrade: %w", err)
	}
	br := bufio.NewReaderSize(nc, 16<<10)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodGet})
	if err != nil {
		return nil, fmt.Errorf("websocket upgrade: %w", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		_ = resp.Body.Close()
		return nil, &UpgradeError{Status: resp.StatusCode, Body: strings.TrimSpace(string(body))}
	}
	sum := sha1.Sum([]byte(key + wsGUID))
	if resp.Header.Get("Sec-WebSocket-Accept") != base64.StdEncoding.EncodeToString(sum[:]) {
		return nil, errors.New("websocket upgrade: bad Sec-WebSocket-Accept")
	}
	return &wsConn{nc: nc, br: br, wt: defaultWriteTimeout, wlock: make(chan struct{}, 1)}, nil
}

// UpgradeError is a refused WebSocket upgrade (rate limit, origin, capacity).
type UpgradeError struct {
	Status int
	Body   string
}

func (e *UpgradeError) Error() string {
	return fmt.Sprintf("websocket upgrade refused: HTTP %d %s", e.Status, e.Body)
}

const (
	opContinuation = 0x0
	opText         = 0x1
	opBinary       = 0x2
	opClose        = 0x8
	opPing         = 0x9
	opPong         = 0xA
)

func (c *wsConn) writeFrame(b []byte) error { return c.writeWS(opBinary, b) }

func (c *wsConn) writeWS(op byte, payload []byte) error {
	b := wsFrame(op, payload)
	if c.closing.Load() {
		return net.ErrClosed
	}
	c.wlock <- struct{}{}
	defer func() { <-c.wlock }()
	_ = c.nc.SetWriteDeadline(time.Now().Add(c.wt))
	_, err := c.nc.Write(b)
	return writeFailed(c.nc, err)
}

// wsFrame encodes one masked, final WebSocket frame.
func wsFrame(op byte, payload []byte) []byte {
	hdr := make([]byte, 0, 14+len(payload))
	hdr = append(hdr, 0x80|op)
	switch n := len(payload); {
	case n < 126:
		hdr = append(hdr, 0x80|byte(n))
	case n <= 0xFFFF:
		hdr = append(hdr, 0x80|126)
		hdr = binary.BigEndian.AppendUint16(hdr, uint16(n))
	default:
		hdr = append(hdr, 0x80|127)
		hdr = binary.BigEndian.AppendUint64(hdr, uint64(n))
	}
	var mask [4]byte
	_, _ = rand.Read(mask[:])
	hdr = append(hdr, mask[:]...)
	start := len(hdr)
	hdr = append(hdr, payload...)
	for i := range payload {
		hdr[start+i] ^= mask[i&3]
	}
	return hdr
}

func (c *wsConn) readFrame() (wire.Frame, error) {
	msg, err := c.readMessage()
	if err != nil {
		return nil, err
	}
	f, n, err := wire.Decode(msg, maxInbound)
	if err != nil {
		return nil, err
	}
	if n != len(msg) {
		return nil, errors.New("websocket message holds more than one frame")
	}
	return f, nil
}

// readMessage returns the next complete binary message, answering pings
// and reassembling fragments.
func (c *wsConn) readMessage() ([]byte, error) {
	c.msg = c.msg[:0]
	for {
		var h [2]byte
		if _, err := io.ReadFull(c.br, h[:]); err != nil {
			return nil, err
		}
		fin, op := h[0]&0x80 != 0, h[0]&0x0F
		if h[1]&0x80 != 0 {
			return nil, errors.New("websocket: server sent a masked frame")
		}
		n, err := readWSLength(c.br, h[1])
		if err != nil {
			return nil, err
		}
		if n > maxInbound || uint64(len(c.msg))+n > maxInbound {
			return nil, fmt.Errorf("websocket message over %d bytes", maxInbound)
		}
		payload := make([]byte, n)
		if _, err := io.ReadFull(c.br, payload); err != nil {
			return nil, err
		}
		switch op {
		case opPing:
			if err := c.writeWS(opPong, payload); err != nil {
				return nil, err
			}
			continue
		case opPong:
			continue
		case opClose:
			ce := &CloseError{Code: 1005}
			if len(payload) >= 2 {
				ce.Code = int(binary.BigEndian.Uint16(payload))
				ce.Reason = string(payload[2:])
			}
			_ = c.writeWS(opClose, payload[:min(2, len(payload))])
			return nil, ce
		case opText:
			return nil, errors.New("websocket: server sent a text message")
		case opBinary, opContinuation:
			c.msg = append(c.msg, payload...)
			if fin {
				return c.msg, nil
			}
		default:
			return nil, fmt.Errorf("websocket: unknown opcode %#x", op)
		}
	}
}

func (c *wsConn) setReadDeadline(t time.Time) error { return c.nc.SetReadDeadline(t) }

// closeFrameWait bounds how long close waits for a write in progress
// before sending its close frame, and that frame's own write.
const closeFrameWait = time.Second

// close sends a close frame (1000, normal closure) and closes the socket.
// When another write holds the connection past closeFrameWait (a server
// that does not read), it closes the socket without the frame, which also
// ends that write.
func (c *wsConn) close() error {
	if c.closing.Swap(true) {
		return c.nc.Close()
	}
	t := time.NewTimer(closeFrameWait)
	defer t.Stop()
	select {
	case c.wlock <- struct{}{}:
		_ = c.nc.SetWriteDeadline(time.Now().Add(closeFrameWait))
		_, _ = c.nc.Write(wsFrame(opClose, []byte{0x03, 0xE8}))
		<-c.wlock
	case <-t.C:
	}
	return c.nc.Close()
}

// Conn is a raw protocol connection to a node, for tools and tests that
// drive the protocol frame by frame (pushctl, load generators, black-box
// tests). It does no handshake, ack or reconnect of its own: Client does.
// Send, WriteRaw and Close may be called concurrently with Read; Read must
// be called from one goroutine at a time.
type Conn struct {
	fc frameConn
}

// DialOptions configures DialConn. The zero value dials plain ws:// or
// tcp:// with a 10 s timeout.
type DialOptions struct {
	TLS       *tls.Config
	Origin    string
	LocalAddr net.Addr
	Timeout   time.Duration
	// WriteTimeout bounds each write, as Config.WriteTimeout does. Zero:
	// 10 s.
	WriteTimeout time.Duration
}

// DialConn opens a raw connection to rawURL (ws://, wss://, tcp://, tls://).
func DialConn(ctx context.Context, rawURL string, o DialOptions) (*Conn, error) {
	if o.Timeout == 0 {
		o.Timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	fc, err := dial(ctx, rawURL, &Config{TLS: o.TLS, Origin: o.Origin, LocalAddr: o.LocalAddr, DialTimeout: o.Timeout, WriteTimeout: o.WriteTimeout})
	if err != nil {
		return nil, err
	}
	return &Conn{fc: fc}, nil
}

// Send encodes and writes one frame.
func (c *Conn) Send(f wire.Frame) error { return c.fc.writeFrame(wire.Append(nil, f)) }

// WriteRaw writes b as is: one WebSocket message, or bytes on the TCP
// stream. Tests use it to send malformed or oversize input.
func (c *Conn) WriteRaw(b []byte) error { return c.fc.writeFrame(b) }

// Read returns the next frame; a WebSocket close arrives as *CloseError.
// A zero timeout waits forever.
func (c *Conn) Read(timeout time.Duration) (wire.Frame, error) {
	var dl time.Time
	if timeout > 0 {
		dl = time.Now().Add(timeout)
	}
	_ = c.fc.setReadDeadline(dl)
	return c.fc.readFrame()
}

// Close closes the connection.
func (c *Conn) Close() error { return c.fc.close() }

// readWSLength reads a WebSocket frame's payload length, given the second
// header byte: its 7-bit length, or 126 and 127 for the 16- and 64-bit
// lengths that follow it (RFC 6455 §5.2).
func readWSLength(r io.Reader, b1 byte) (uint64, error) {
	switch n := uint64(b1 & 0x7F); n {
	case 126:
		var b [2]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return 0, err
		}
		return uint64(binary.BigEndian.Uint16(b[:])), nil
	case 127:
		var b [8]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return 0, err
		}
		return binary.BigEndian.Uint64(b[:]), nil
	default:
		return n, nil
	}
}
