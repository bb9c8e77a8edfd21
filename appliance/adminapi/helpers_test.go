package adminapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lesismal/nbio/logging"
	"github.com/redis/go-redis/v9"

	"github.com/pushd/pushd/appliance/api"
	"github.com/pushd/pushd/appliance/appliancetest"
	"github.com/pushd/pushd/appliance/client"
	"github.com/pushd/pushd/appliance/client/clienttest"
	"github.com/pushd/pushd/appliance/token"
	"github.com/pushd/pushd/appliance/wire"
	"github.com/pushd/pushd/raftmeta"
	"github.com/pushd/pushd/raftmeta/raftmetatest"
	"github.com/pushd/pushd/streams"
)

func init() {
	logging.SetLevel(logging.LevelNone)
	redis.SetLogger(quietRedis{})
}

// quietRedis keeps go-redis's reconnect chatter out of test output: nodes
// killed on purpose leave connections to close.
type quietRedis struct{}

func (quietRedis) Printf(context.Context, string, ...any) {}

// The app every test region has: devices sign in with tokens issued with
// testSecret (key id k1), pushes carry testAPIKey.
const (
	testApp    = "app1"
	testAPIKey = "test-api-key-0123456789"
)

var testSecret = bytes.Repeat([]byte("s"), 32)

// startRegion starts a 3-node region with the test app, and node
// heartbeats that expire after 2 s so that a stopped node leaves dispatch
// soon.
func startRegion(t *testing.T, opts ...raftmetatest.Option) *appliancetest.Region {
	t.Helper()
	app := raftmeta.App{ID: testApp, Secrets: []raftmeta.Secret{{KeyID: "k1", Secret: testSecret}},
		APIKeys: []raftmeta.APIKey{{ID: "key-1", Hash: raftmeta.HashKey(testAPIKey)}}}
	return appliancetest.StartRegion(t, 3, appliancetest.RegionOptions{
		Streams:  streams.Config{NodeTTL: 2 * time.Second},
		Raft:     opts,
		Commands: []raftmeta.Command{raftmeta.CreateApp(app)},
	})
}

// follower returns the index of a node that does not lead.
func follower(t testing.TB, r *appliancetest.Region) int {
	t.Helper()
	return (r.LeaderIndex(t) + 1) % len(r.Nodes)
}

// adminClient calls n's admin API with tok.
func adminClient(t testing.TB, n *appliancetest.Node, tok string) *api.Client {
	t.Helper()
	c, err := api.NewClient(n.AdminURL, tok, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// onceClient is adminClient for a test that wants each write sent once:
// the node asked must wait for a leader itself. It fails the test at the
// end if the client would have sent a request again.
func onceClient(t testing.TB, n *appliancetest.Node, tok string) *api.Client {
	t.Helper()
	c := adminClient(t, n, tok)
	var mu sync.Mutex
	var retries []api.Retry
	c.OnRetry(func(r api.Retry) { mu.Lock(); retries = append(retries, r); mu.Unlock() })
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, r := range retries {
			t.Errorf("%s %s sent again after %s: the node asked did not wait for the leader itself", r.Method, r.Path, r.Reason)
		}
	})
	return c
}

// pushClient calls n's push API with key.
func pushClient(t testing.TB, n *appliancetest.Node, key string) *api.Client {
	t.Helper()
	c, err := api.NewClient(n.PushURL, key, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// push sends req (its app defaulting to the test app) to n's push API.
func push(t testing.TB, n *appliancetest.Node, req api.PushRequest) (*api.PushResponse, error) {
	t.Helper()
	if req.App == nil {
		req.App = api.Ptr(testApp)
	}
	if req.Data == nil && req.DataBase64 == nil {
		req.Data = api.Ptr("x")
	}
	return pushClient(t, n, testAPIKey).Push(context.Background(), &req)
}

// mustPush pushes data to devices, failing the test on an error answer.
func mustPush(t testing.TB, n *appliancetest.Node, devices []string, data string, mut ...func(*api.PushRequest)) *api.PushResponse {
	t.Helper()
	req := api.PushRequest{Devices: devices, Data: api.Ptr(data)}
	for _, m := range mut {
		m(&req)
	}
	resp, err := push(t, n, req)
	if err != nil {
		t.Fatalf("push %q to %v: %v", data, devices, err)
	}
	return resp
}

func priority(p string) func(*api.PushRequest) {
	return func(r *api.PushRequest) { r.Priority = api.Ptr(p) }
}

// apiError is err's error answer, or nil when err is none.
func apiError(err error) *api.APIError {
	var ae *api.APIError
	if errors.As(err, &ae) {
		return ae
	}
	return nil
}

// shownOnce reports whether err is the region's 409 to a write that
// generated a credential (an app, a secret, an API key, an admin token)
// and met an election after it was committed: the node asked sent it to
// the next leader under its request id, which found it applied and cannot
// show the credential again. The write is applied; only its answer is
// lost. With the tests' fast Raft timings a loaded machine can start an
// election at any time.
func shownOnce(t testing.TB, err error) bool {
	t.Helper()
	if ae := apiError(err); ae != nil && ae.AlreadyApplied() {
		t.Logf("a write met an election after it was committed: %v", err)
		return true
	}
	return false
}

// status is the HTTP status of an API answer: 200 for no error, the
// error answer's status, or 0 for a failure with no answer.
func status(err error) int {
	var ae *api.APIError
	switch {
	case err == nil:
		return http.StatusOK
	case errors.As(err, &ae):
		return ae.Status
	}
	return 0
}

// deviceState reads one of the test app's devices through n's push API.
func deviceState(t testing.TB, n *appliancetest.Node, device string) *api.DeviceState {
	t.Helper()
	st, err := pushClient(t, n, testAPIKey).Device(context.Background(), testApp, device)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// issue returns a device token for the test app.
func issue(t testing.TB, device string) string {
	t.Helper()
	return issueFor(t, testApp, device, "k1", testSecret)
}

func issueFor(t testing.TB, app, device, keyID string, secret []byte) string {
	t.Helper()
	tok, err := token.Issue(token.Claims{App: app, Device: device, KeyID: keyID, Expires: time.Now().Add(time.Hour).Unix()}, secret)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// dialRaw opens a raw protocol connection and closes it with the test.
func dialRaw(t testing.TB, url string) *client.Conn {
	t.Helper()
	c, err := client.DialConn(context.Background(), url, client.DialOptions{})
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// hello sends HELLO (for the test app unless it names one) and returns
// the server's answer.
func hello(t testing.TB, c *client.Conn, h *wire.Hello) wire.Frame {
	t.Helper()
	if h.App == "" {
		h.App = testApp
	}
	if err := c.Send(h); err != nil {
		t.Fatal(err)
	}
	f, err := c.Read(5 * time.Second)
	if err != nil {
		t.Fatalf("read the answer to HELLO: %v", err)
	}
	return f
}

// runDevice runs the SDK for the test app's device id against url until
// the test ends, and waits until it is connected.
func runDevice(t testing.TB, url, id string, mut ...func(*client.Config)) *clienttest.Device {
	t.Helper()
	cfg := client.Config{URL: url, App: testApp, Device: id, Token: issue(t, id)}
	for _, m := range mut {
		m(&cfg)
	}
	return clienttest.Run(t, cfg)
}

// controlRecorder is an OnControl hook that keeps every CONTROL frame.
type controlRecorder chan wire.Control

func newControlRecorder() controlRecorder { return make(controlRecorder, 16) }

func (r controlRecorder) hook(c *client.Config) {
	c.OnControl = func(ctl wire.Control) { r <- ctl }
}

// next returns the next CONTROL frame, failing after a while.
func (r controlRecorder) next(t *testing.T, who string) wire.Control {
	t.Helper()
	select {
	case c := <-r:
		return c
	case <-time.After(5 * time.Second):
		t.Fatalf("%s got no CONTROL frame", who)
		return wire.Control{}
	}
}

// none fails if a CONTROL frame arrives within a short wait.
func (r controlRecorder) none(t *testing.T, who string) {
	t.Helper()
	select {
	case c := <-r:
		t.Fatalf("%s got %+v, want no CONTROL frame", who, c)
	case <-time.After(300 * time.Millisecond):
	}
}

// setDegrade turns degrade on through n's admin API, or off when the
// request names no priority.
func setDegrade(t *testing.T, r *appliancetest.Region, n *appliancetest.Node, req api.DegradeRequest) {
	t.Helper()
	cl := adminClient(t, n, r.Admin)
	var err error
	if req.Priority == "" {
		_, err = cl.DegradeOff(context.Background(), req.Reason)
	} else {
		_, err = cl.SetDegrade(context.Background(), &req)
	}
	if err != nil {
		t.Fatalf("degrade %+v: %v", req, err)
	}
}

// shedding says why n does not shed what a degrade policy over business
// (every business: "") would, nil once it does: the node's core is what
// its push API asks.
func shedding(n *appliancetest.Node, p wire.Priority, business string) error {
	if _, shed := n.Sheds(p, business); !shed {
		return fmt.Errorf("node %s does not shed %s-priority pushes of business %q", n.ID(), p, business)
	}
	return nil
}

// plainHTTP makes one request per connection: the device port closes idle
// HTTP connections after the handshake timeout, and a pooled connection
// reused at that moment would fail the test for nothing.
var plainHTTP = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}

// scrape returns the node's /metrics text.
func scrape(t testing.TB, n *appliancetest.Node) string {
	t.Helper()
	resp, err := plainHTTP.Get(n.HTTPURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// metricValue finds a sample line starting with name (labels included) in
// a scrape.
func metricValue(body, name string) (string, error) {
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return v, nil
		}
	}
	return "", fmt.Errorf("metric %s not found", name)
}

// dispatch asks n's device port where the test app's device should
// connect.
func dispatch(t testing.TB, n *appliancetest.Node, device string) (api.Dispatch, int) {
	t.Helper()
	resp, err := plainHTTP.Get(n.HTTPURL + "/v1/dispatch?" + url.Values{"app": {testApp}, "device": {device}}.Encode())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var a api.Dispatch
	if resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
			t.Fatal(err)
		}
	}
	return a, resp.StatusCode
}

// hostOf is the host:port of a URL.
func hostOf(t testing.TB, raw string) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}
