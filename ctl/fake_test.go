package ctl

import (
	"github.com/pushd/pushd/appliance/api"

	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pushd/pushd/appliance/token"
	"github.com/pushd/pushd/appliance/wire"
)

// Test doubles of OUR APIs, per docs/push-api.md and the wire protocol:
// they let the CLI's side be checked exactly (what it sends, how it
// accounts) without the server being written yet.

const (
	testApp    = "dev"
	testAPIKey = "test-api-key-0123456789"
	testKeyID  = "k1"
)

var testSecret = bytes.Repeat([]byte("s"), 32)

// testEnv is the environment pointing pushctl at a push API (fake or
// real) and giving it the test app's credentials.
func testEnv(pushURL string) map[string]string {
	return map[string]string{
		"PUSHD_PUSH_URL":      pushURL,
		"PUSHD_APP":           testApp,
		"PUSHD_API_KEY":       testAPIKey,
		"PUSHD_KEY_ID":        testKeyID,
		"PUSHD_SECRET_BASE64": base64.StdEncoding.EncodeToString(testSecret),
	}
}

// fakePushAPI implements POST /v1/push and GET /v1/devices/{device} as
// documented, with hooks to make devices reject, lose or ack.
type fakePushAPI struct {
	srv *httptest.Server

	mu       sync.Mutex
	nextID   int
	devices  map[string]*fakeDeviceState
	requests []api.PushRequest
	// reject makes a device's results rejected with this reason; rejectIf
	// decides for any device ("" accepts).
	reject   map[string]string
	rejectIf func(device string) string
	// deliver, when set, hands an accepted message to a live device and
	// reports whether it was connected; the answer's status follows.
	deliver func(device, id string, seq uint64, payload []byte) bool
	// acked, when set, supplies a device's ack cursor; otherwise it is
	// what ackAll or ackAfter set.
	acked func(device string) uint64
	// ackAfter makes every accepted message acked this long after it was
	// accepted; negative: never.
	ackAfter time.Duration
	// loseIf drops a message from the device's inbox after answering
	// that it was stored, as a store that lost a write would: silently.
	loseIf func(device string, seq uint64) bool
	// trimIf drops a message the way the inbox cap does: recorded in
	// the device's lost seq, so its next resume reports the gap.
	trimIf func(device string, seq uint64) bool
	// fail makes POST /v1/push answer with this status and code.
	failStatus int
	failCode   string
}

type fakeDeviceState struct {
	last, lost uint64
	inbox      uint64
	ackAt      map[uint64]time.Time // seq → when it counts as acked
}

func newFakePushAPI(t *testing.T) *fakePushAPI {
	f := &fakePushAPI{devices: map[string]*fakeDeviceState{}, reject: map[string]string{}}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakePushAPI) url() string { return f.srv.URL }

func apiError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	if status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "2")
	}
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": code, "message": msg}})
}

func (f *fakePushAPI) serve(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer "+testAPIKey {
		apiError(w, http.StatusUnauthorized, "unauthorized", "unknown API key")
		return
	}
	switch {
	case r.URL.Path == "/v1/push":
		if r.Method != http.MethodPost {
			apiError(w, http.StatusMethodNotAllowed, "method_not_allowed", r.Method)
			return
		}
		f.servePush(w, r)
	case strings.HasPrefix(r.URL.Path, "/v1/devices/"):
		if r.Method != http.MethodGet {
			apiError(w, http.StatusMethodNotAllowed, "method_not_allowed", r.Method)
			return
		}
		f.serveDevice(w, r, strings.TrimPrefix(r.URL.Path, "/v1/devices/"))
	default:
		apiError(w, http.StatusNotFound, "not_found", r.URL.Path)
	}
}

func (f *fakePushAPI) servePush(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Content-Type") != "application/json" {
		apiError(w, http.StatusUnsupportedMediaType, "unsupported_media_type", "want application/json")
		return
	}
	var req api.PushRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 256<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		apiError(w, http.StatusBadRequest, "bad_json", err.Error())
		return
	}
	targets := 0
	for _, set := range []bool{len(req.Devices) > 0, req.Group != nil, req.Broadcast} {
		if set {
			targets++
		}
	}
	if req.App == nil || *req.App != testApp {
		apiError(w, http.StatusUnauthorized, "unauthorized", "key of another app")
		return
	}
	if targets != 1 || (req.Data == nil) == (req.DataBase64 == nil) {
		apiError(w, http.StatusBadRequest, "missing_field", "exactly one target and one payload")
		return
	}
	var payload []byte
	if req.Data != nil {
		payload = []byte(*req.Data)
	} else {
		b, err := base64.StdEncoding.DecodeString(*req.DataBase64)
		if err != nil {
			apiError(w, http.StatusBadRequest, "invalid_field", "data_base64")
			return
		}
		payload = b
	}
	f.mu.Lock()
	f.requests = append(f.requests, req)
	if f.failStatus != 0 {
		status, code := f.failStatus, f.failCode
		f.mu.Unlock()
		apiError(w, status, code, "injected failure")
		return
	}
	f.nextID++
	id := fmt.Sprintf("%032x", f.nextID)
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	if len(req.Devices) == 0 {
		_ = json.NewEncoder(w).Encode(map[string]any{"id": id, "stored": false, "recipients": 3})
		return
	}
	resp := api.PushResponse{ID: id, Stored: true}
	for _, d := range req.Devices {
		f.mu.Lock()
		reason, rejected := f.reject[d]
		if f.rejectIf != nil {
			if r := f.rejectIf(d); r != "" {
				reason, rejected = r, true
			}
		}
		if !token.ValidID(d) {
			reason, rejected = "invalid_device", true
		}
		if rejected {
			f.mu.Unlock()
			resp.Results = append(resp.Results, api.PushResult{Device: d, Status: api.StatusRejected, Reason: reason})
			continue
		}
		st := f.device(d)
		st.last++
		seq := st.last
		switch {
		case f.loseIf != nil && f.loseIf(d, seq):
		case f.trimIf != nil && f.trimIf(d, seq):
			st.lost = seq
		default:
			st.inbox++
		}
		if f.ackAfter >= 0 {
			st.ackAt[seq] = time.Now().Add(f.ackAfter)
		}
		deliver := f.deliver
		f.mu.Unlock()
		status := api.StatusStored
		if deliver != nil && deliver(d, id, seq, payload) {
			status = api.StatusDelivered
		}
		resp.Results = append(resp.Results, api.PushResult{Device: d, Status: status, Seq: seq})
	}
	_ = json.NewEncoder(w).Encode(resp)
}

// device returns d's state, creating it. Lock must be held.
func (f *fakePushAPI) device(d string) *fakeDeviceState {
	st := f.devices[d]
	if st == nil {
		st = &fakeDeviceState{ackAt: map[uint64]time.Time{}}
		f.devices[d] = st
	}
	return st
}

func (f *fakePushAPI) serveDevice(w http.ResponseWriter, r *http.Request, device string) {
	if r.URL.Query().Get("app") != testApp {
		apiError(w, http.StatusUnauthorized, "unauthorized", "key of another app")
		return
	}
	f.mu.Lock()
	st := f.device(device)
	var acked uint64
	if f.acked != nil {
		acked = f.acked(device)
	} else {
		now := time.Now()
		for seq := uint64(1); seq <= st.last; seq++ {
			if at, ok := st.ackAt[seq]; ok && !now.Before(at) {
				acked = seq
			} else {
				break
			}
		}
	}
	out := api.DeviceState{App: testApp, Device: device, Online: f.deliver != nil, Epoch: "e1",
		Last: st.last, Acked: acked, Lost: st.lost, InboxLen: int64(st.inbox - min(st.inbox, acked))}
	if out.Online {
		out.Route = &api.DeviceRoute{Node: "n1", Epoch: 3}
	}
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

func (f *fakePushAPI) recorded() []api.PushRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]api.PushRequest(nil), f.requests...)
}

// fakeDeviceServer speaks the device side of the wire protocol on raw
// TCP: HELLO (token verified), WELCOME, PING/PONG, PUSH and cumulative
// ACK, so the SDK-based commands can be driven with pushes before the
// real push API exists.
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
