package pushapi_test

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pushd/pushd/appliance"
	"github.com/pushd/pushd/appliance/appliancetest"
	"github.com/pushd/pushd/internal/poll"
)

// The browser test is a client written the way a browser developer
// would write one from docs/protocol.md and docs/push-api.md alone: its
// WebSocket, token minting and frame encoding are done by hand here, not
// with appliance/client, appliance/wire or appliance/token. It runs
// against a real node with Raft metadata (for the admin API) and a real
// redis-server.

const browserOrigin = "https://app.example.com"

// TestBrowser_ConnectsFromTheDocAlone: the admin API creates an app and
// hands out secret_base64; the "business server" mints a token from it as
// §8.2 says; the "page" opens ws://…/v1/ws with an Origin, sends a HELLO
// built from §4.1, reads WELCOME and PUSH parsed from §4.2 and §4.3, acks
// it, and pings with a time above 2^53 (§12).
func TestBrowser_ConnectsFromTheDocAlone(t *testing.T) {
	t.Parallel()
	skipWithoutWS(t)
	r := appliancetest.StartRegion(t, 1, appliancetest.RegionOptions{Config: func(_ int, c *appliance.Config) {
		c.AllowedOrigins = []string{browserOrigin}
	}})
	n := r.Nodes[0]
	wsAddr := wsHostPort(n)

	// The operator creates the app; the answer carries the secret once.
	code, raw := adminPost(t, n.AdminURL+"/v1/admin/apps", r.Admin, `{"id":"web"}`)
	if code != http.StatusOK {
		t.Fatalf("create app: HTTP %d %s", code, raw)
	}
	var app struct {
		KeyID        string `json:"key_id"`
		SecretBase64 string `json:"secret_base64"`
		APIKey       string `json:"api_key"`
	}
	if err := json.Unmarshal(raw, &app); err != nil {
		t.Fatal(err)
	}

	// A page whose origin is not allowed is refused before the upgrade.
	if _, status, err := dialBrowser(wsAddr, "https://evil.example.com"); status != http.StatusForbidden {
		t.Fatalf("upgrade from another origin: HTTP %d, %v; want 403", status, err)
	}

	const device = "browser-1"
	tok := mintToken(t, app.SecretBase64, "web", device, app.KeyID, time.Now().Add(time.Hour).Unix())
	var ws *browserConn
	var welcome map[string]any
	// The app reaches the node through Raft shortly after the admin API
	// answers: until then HELLO is refused with unknown_app.
	poll.Until(t, 5*time.Second, func() error {
		c, status, err := dialBrowser(wsAddr, browserOrigin)
		if err != nil {
			return fmt.Errorf("upgrade: HTTP %d, %v", status, err)
		}
		if err := c.sendBinary(encodeHello(tok, "web", device, "web", "test/1", nil, "", 0, 0)); err != nil {
			c.nc.Close()
			return err
		}
		frames, err := c.readFrames(2 * time.Second)
		if err != nil {
			c.nc.Close()
			return err
		}
		if frames[0].typ != 0x02 {
			c.nc.Close()
			return fmt.Errorf("answer to HELLO: type %#02x %v", frames[0].typ, frames[0].fields)
		}
		ws, welcome = c, frames[0].fields
		return nil
	})
	t.Cleanup(func() { ws.nc.Close() })
	if welcome["recovered"] != true || welcome["epoch"] == "" || welcome["acked"] != uint64(0) ||
		welcome["max_frame"] != uint64(16384) || welcome["caps"] != uint64(0) || welcome["heartbeat"] != uint64(400) {
		t.Fatalf("WELCOME %v", welcome)
	}

	// The business server pushes through the push API (docs/push-api.md).
	body := `{"app":"web","devices":["` + device + `"],"data":"hello, browser"}`
	req, _ := http.NewRequest(http.MethodPost, n.PushURL+"/v1/push", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+app.APIKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	answer, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var pushed struct {
		ID     string `json:"id"`
		Stored bool   `json:"stored"`
	}
	if err := json.Unmarshal(answer, &pushed); resp.StatusCode != http.StatusOK || err != nil || !pushed.Stored {
		t.Fatalf("push: HTTP %d %s", resp.StatusCode, answer)
	}

	push := ws.readUntil(t, 0x03)
	if push.flags != 0 || push.fields["seq"] != uint64(1) || push.fields["id"] != pushed.ID || push.fields["payload"] != "hello, browser" ||
		push.fields["priority"] != uint64(2) || push.fields["group"] != "" {
		t.Fatalf("PUSH flags %d %v", push.flags, push.fields)
	}
	created := time.UnixMilli(int64(push.fields["created"].(uint64)))
	if time.Since(created) > time.Minute || time.Until(created) > time.Minute {
		t.Fatalf("PUSH created %v", created)
	}

	// ACK (§4.4); the push API's device state shows it once stored.
	if err := ws.sendBinary(encodeFrame(0x04, putUvarint(nil, 1))); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 5*time.Second, func() error {
		req, _ := http.NewRequest(http.MethodGet, n.PushURL+"/v1/devices/"+device+"?app=web", nil)
		req.Header.Set("Authorization", "Bearer "+app.APIKey)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var st struct {
			Acked uint64 `json:"acked"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&st); err != nil || st.Acked != 1 {
			return fmt.Errorf("acked %d, %v", st.Acked, err)
		}
		return nil
	})

	// PING with a time JavaScript cannot hold in a number (§12).
	const big = uint64(1)<<53 + 1
	if err := ws.sendBinary(encodeFrame(0x05, putUvarint(nil, big))); err != nil {
		t.Fatal(err)
	}
	if pong := ws.readUntil(t, 0x06); pong.fields["time"] != big {
		t.Fatalf("PONG %v, want time %d", pong.fields, big)
	}

	// Closing as a page does: close 1000 is echoed (§1.1).
	if err := ws.sendClose(1000, "bye"); err != nil {
		t.Fatal(err)
	}
	if code, reason, err := ws.readClose(2 * time.Second); err != nil || code != 1000 || reason != "bye" {
		t.Fatalf("answer to close 1000: %d %q %v", code, reason, err)
	}
}

// TestWS_CloseEchoesTheDeviceCode: the server answers a device's close
// frame with the same status code and reason (RFC 6455 §5.5.1), a close
// without a code with one without a code, and an invalid code with 1002;
// docs/protocol.md §1.1 used to say it answered 1001.
func TestWS_CloseEchoesTheDeviceCode(t *testing.T) {
	t.Parallel()
	skipWithoutWS(t)
	n := startNode(t, false)
	wsAddr := wsHostPort(n)
	cases := []struct {
		send       []byte // close payload
		wantCode   int    // 0: none
		wantReason string
	}{
		{closePayload(1000, ""), 1000, ""},
		{closePayload(1001, "page hidden"), 1001, "page hidden"},
		{closePayload(4321, "app reason"), 4321, "app reason"},
		{nil, 0, ""},
		{closePayload(1005, ""), 1002, ""},
	}
	for i, c := range cases {
		device := fmt.Sprintf("closer-%d", i)
		ws, status, err := dialBrowser(wsAddr, "")
		if err != nil {
			t.Fatalf("upgrade: HTTP %d %v", status, err)
		}
		if err := ws.sendBinary(encodeHello(issue(t, device), testApp, device, "web", "test/1", nil, "", 0, 0)); err != nil {
			t.Fatal(err)
		}
		if frames, err := ws.readFrames(2 * time.Second); err != nil || frames[0].typ != 0x02 {
			t.Fatalf("answer to HELLO: %v %v", frames, err)
		}
		if err := ws.writeWS(0x8, c.send); err != nil {
			t.Fatal(err)
		}
		code, reason, err := ws.readClose(2 * time.Second)
		if err != nil || code != c.wantCode || (c.wantCode != 1002 && reason != c.wantReason) {
			t.Errorf("close %x answered with %d %q (%v), want %d %q", c.send, code, reason, err, c.wantCode, c.wantReason)
		}
		ws.nc.Close()
	}
}

// skipWithoutWS skips a test that needs the node's WebSocket listener:
// under -race appliancetest opens none (nbio's hand-over of a connection
// between goroutines trips the race detector).
func skipWithoutWS(t *testing.T) {
	t.Helper()
	if appliancetest.RaceEnabled {
		t.Skip("no nbio WebSocket listener under -race (see appliancetest)")
	}
}

// wsHostPort is the host:port of the node's WebSocket listener.
func wsHostPort(n *appliancetest.Node) string {
	return strings.TrimSuffix(strings.TrimPrefix(n.WSURL, "ws://"), "/v1/ws")
}

// adminPost posts a JSON body to an admin API URL with an admin token,
// as an operator's script would.
func adminPost(t *testing.T, url, tok, body string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, raw
}

// mintToken is §8.2, step by step: decode secret_base64 (standard base64),
// sign "v1." + base64url(claims) with HMAC-SHA256 keyed by those bytes.
func mintToken(t *testing.T, secretBase64, app, device, kid string, exp int64) string {
	t.Helper()
	key, err := base64.StdEncoding.DecodeString(secretBase64)
	if err != nil || len(key) < 32 {
		t.Fatalf("secret_base64 %q: %d bytes, %v", secretBase64, len(key), err)
	}
	claims := `{"app":"` + app + `","dev":"` + device + `","exp":` + strconv.FormatInt(exp, 10) + `,"kid":"` + kid + `"}`
	signed := "v1." + base64.RawURLEncoding.EncodeToString([]byte(claims))
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(signed))
	return signed + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// Frame encoding from §2 and §3: a 7-byte header (version 1, type, flags
// 0, big-endian body length), uvarints and length-prefixed strings.

func putUvarint(b []byte, v uint64) []byte {
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}

func putString(b []byte, s string) []byte { return append(putUvarint(b, uint64(len(s))), s...) }

func encodeFrame(typ byte, body []byte) []byte {
	h := []byte{1, typ, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(h[3:], uint32(len(body)))
	return append(h, body...)
}

// encodeHello is §4.1, field by field.
func encodeHello(tok, app, device, platform, version string, businesses []string, epoch string, seq, caps uint64) []byte {
	var b []byte
	for _, s := range []string{tok, app, device, platform, version} {
		b = putString(b, s)
	}
	b = putUvarint(b, uint64(len(businesses)))
	for _, s := range businesses {
		b = putString(b, s)
	}
	b = putString(b, epoch)
	b = putUvarint(b, seq)
	b = putUvarint(b, caps)
	return encodeFrame(0x01, b)
}

// docFrame is a frame parsed by hand: its type, flags and named fields.
type docFrame struct {
	typ, flags byte
	fields     map[string]any
}

// docReader reads §3's primitives.
type docReader struct {
	b   []byte
	err error
}

func (r *docReader) uvarint() uint64 {
	var v uint64
	for i := 0; i < 10; i++ {
		if len(r.b) == 0 {
			r.err = errors.New("truncated uvarint")
			return 0
		}
		c := r.b[0]
		r.b = r.b[1:]
		v |= uint64(c&0x7f) << (7 * i)
		if c < 0x80 {
			return v
		}
	}
	r.err = errors.New("uvarint too long")
	return 0
}

func (r *docReader) u8() uint64 {
	if len(r.b) == 0 {
		r.err = errors.New("truncated u8")
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return uint64(c)
}

func (r *docReader) str() string {
	n := r.uvarint()
	if r.err != nil || n > uint64(len(r.b)) {
		r.err = errors.New("truncated string")
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}

// parseDocFrames cuts one WebSocket message into frames, unwrapping a BATCH
// (§4.11; this client offers no lz4), and names the fields of the types a
// browser reads.
func parseDocFrames(msg []byte) ([]docFrame, error) {
	if len(msg) < 7 || msg[0] != 1 {
		return nil, fmt.Errorf("not a v1 frame: %x", msg)
	}
	n := int(binary.BigEndian.Uint32(msg[3:7]))
	if len(msg) != 7+n {
		return nil, fmt.Errorf("message of %d bytes holds a frame of %d", len(msg), 7+n)
	}
	f := docFrame{typ: msg[1], flags: msg[2], fields: map[string]any{}}
	body := msg[7:]
	if f.typ == 0x0d {
		var out []docFrame
		for len(body) > 0 {
			if len(body) < 7 {
				return nil, errors.New("partial frame in BATCH")
			}
			k := 7 + int(binary.BigEndian.Uint32(body[3:7]))
			if k > len(body) {
				return nil, errors.New("partial frame in BATCH")
			}
			inner, err := parseDocFrames(body[:k])
			if err != nil {
				return nil, err
			}
			out = append(out, inner...)
			body = body[k:]
		}
		return out, nil
	}
	r := &docReader{b: body}
	switch f.typ {
	case 0x02: // WELCOME
		f.fields["session"], f.fields["node"], f.fields["heartbeat"] = r.str(), r.str(), r.uvarint()
		f.fields["recovered"] = r.u8() == 1
		f.fields["epoch"], f.fields["acked"], f.fields["max_frame"], f.fields["caps"] = r.str(), r.uvarint(), r.uvarint(), r.uvarint()
	case 0x03: // PUSH
		f.fields["seq"], f.fields["id"], f.fields["business"] = r.uvarint(), r.str(), r.str()
		f.fields["priority"], f.fields["created"] = r.u8(), r.uvarint()
		f.fields["group"], f.fields["payload"] = r.str(), r.str()
	case 0x06: // PONG
		f.fields["time"] = r.uvarint()
	case 0x0b: // CONTROL
		f.fields["kind"], f.fields["priority"], f.fields["reason"], f.fields["addr"] = r.u8(), r.u8(), r.str(), r.str()
	case 0x0c: // ERROR
		f.fields["code"], f.fields["request"], f.fields["message"] = r.uvarint(), r.uvarint(), r.str()
	}
	if r.err != nil {
		return nil, fmt.Errorf("type %#02x: %w", f.typ, r.err)
	}
	return []docFrame{f}, nil
}

// browserConn is a WebSocket client as small as RFC 6455 allows: what a
// browser does under `new WebSocket(url)`.
type browserConn struct {
	nc net.Conn
	br *bufio.Reader
}

// dialBrowser upgrades a connection to /v1/ws, with origin as the Origin
// header when set, and returns the HTTP status when the upgrade fails.
func dialBrowser(addr, origin string) (*browserConn, int, error) {
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, 0, err
	}
	keyBytes := make([]byte, 16)
	_, _ = rand.Read(keyBytes)
	key := base64.StdEncoding.EncodeToString(keyBytes)
	var req bytes.Buffer
	fmt.Fprintf(&req, "GET /v1/ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n", addr)
	fmt.Fprintf(&req, "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n", key)
	if origin != "" {
		fmt.Fprintf(&req, "Origin: %s\r\n", origin)
	}
	req.WriteString("\r\n")
	_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := nc.Write(req.Bytes()); err != nil {
		nc.Close()
		return nil, 0, err
	}
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		nc.Close()
		return nil, 0, err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		nc.Close()
		return nil, resp.StatusCode, fmt.Errorf("upgrade refused: %s", resp.Status)
	}
	sum := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	if got := resp.Header.Get("Sec-WebSocket-Accept"); got != base64.StdEncoding.EncodeToString(sum[:]) {
		nc.Close()
		return nil, resp.StatusCode, fmt.Errorf("bad Sec-WebSocket-Accept %q", got)
	}
	_ = nc.SetDeadline(time.Time{})
	return &browserConn{nc: nc, br: br}, resp.StatusCode, nil
}

// writeWS writes one masked frame with FIN set.
func (c *browserConn) writeWS(opcode byte, payload []byte) error {
	b := []byte{0x80 | opcode}
	switch n := len(payload); {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n < 1<<16:
		b = append(b, 0x80|126, byte(n>>8), byte(n))
	default:
		b = append(b, 0x80|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	mask := make([]byte, 4)
	_, _ = rand.Read(mask)
	b = append(b, mask...)
	for i, x := range payload {
		b = append(b, x^mask[i%4])
	}
	_ = c.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := c.nc.Write(b)
	return err
}

func (c *browserConn) sendBinary(b []byte) error { return c.writeWS(0x2, b) }

func closePayload(code int, reason string) []byte {
	return append(binary.BigEndian.AppendUint16(nil, uint16(code)), reason...)
}

func (c *browserConn) sendClose(code int, reason string) error {
	return c.writeWS(0x8, closePayload(code, reason))
}

// readWS reads one whole message (continuations joined), or a control
// frame; the server does not mask.
func (c *browserConn) readWS(timeout time.Duration) (byte, []byte, error) {
	_ = c.nc.SetReadDeadline(time.Now().Add(timeout))
	var opcode byte
	var msg []byte
	for {
		var h [2]byte
		if _, err := io.ReadFull(c.br, h[:]); err != nil {
			return 0, nil, err
		}
		n := uint64(h[1] & 0x7f)
		switch n {
		case 126:
			var l [2]byte
			if _, err := io.ReadFull(c.br, l[:]); err != nil {
				return 0, nil, err
			}
			n = uint64(binary.BigEndian.Uint16(l[:]))
		case 127:
			var l [8]byte
			if _, err := io.ReadFull(c.br, l[:]); err != nil {
				return 0, nil, err
			}
			n = binary.BigEndian.Uint64(l[:])
		}
		if n > 4<<20 {
			return 0, nil, fmt.Errorf("message of %d bytes", n)
		}
		p := make([]byte, n)
		if _, err := io.ReadFull(c.br, p); err != nil {
			return 0, nil, err
		}
		op := h[0] & 0x0f
		if op >= 0x8 {
			return op, p, nil
		}
		if op != 0 {
			opcode = op
		}
		msg = append(msg, p...)
		if h[0]&0x80 != 0 {
			return opcode, msg, nil
		}
	}
}

// readFrames reads the next binary message and parses it.
func (c *browserConn) readFrames(timeout time.Duration) ([]docFrame, error) {
	op, msg, err := c.readWS(timeout)
	if err != nil {
		return nil, err
	}
	if op != 0x2 {
		return nil, fmt.Errorf("WebSocket opcode %#x (%x), want a binary message", op, msg)
	}
	return parseDocFrames(msg)
}

// readUntil returns the first frame of type typ.
func (c *browserConn) readUntil(t *testing.T, typ byte) docFrame {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		frames, err := c.readFrames(time.Until(deadline))
		if err != nil {
			t.Fatalf("waiting for type %#02x: %v", typ, err)
		}
		for _, f := range frames {
			if f.typ == typ {
				return f
			}
		}
	}
}

// readClose reads until the server's close frame and returns its code (0
// when it has none) and reason.
func (c *browserConn) readClose(timeout time.Duration) (int, string, error) {
	deadline := time.Now().Add(timeout)
	for {
		op, p, err := c.readWS(time.Until(deadline))
		if err != nil {
			return 0, "", err
		}
		if op != 0x8 {
			continue
		}
		if len(p) < 2 {
			return 0, "", nil
		}
		return int(binary.BigEndian.Uint16(p)), string(p[2:]), nil
	}
}
