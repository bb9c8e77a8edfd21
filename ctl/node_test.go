package ctl

import (
	"bytes"
	"encoding/base64"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/lesismal/nbio/logging"

	"github.com/pushd/pushd/appliance"
	"github.com/pushd/pushd/appliance/appliancetest"
	"github.com/pushd/pushd/appliance/client"
	"github.com/pushd/pushd/appliance/token"
	"github.com/pushd/pushd/appliance/wire"
	"github.com/pushd/pushd/streams"
	"github.com/pushd/pushd/streams/streamstest"
)

func init() { logging.SetLevel(logging.LevelNone) }

// The test app, which startTestNode configures and testEnv gives pushctl
// the credentials of.
const (
	testApp    = "dev"
	testAPIKey = "test-api-key-0123456789"
	testKeyID  = "k1"
)

var testSecret = bytes.Repeat([]byte("s"), 32)

// testEnv is the environment pointing pushctl at a push API and giving
// it the test app's credentials.
func testEnv(pushURL string) map[string]string {
	return map[string]string{
		"PUSHD_PUSH_URL":      pushURL,
		"PUSHD_APP":           testApp,
		"PUSHD_API_KEY":       testAPIKey,
		"PUSHD_KEY_ID":        testKeyID,
		"PUSHD_SECRET_BASE64": base64.StdEncoding.EncodeToString(testSecret),
	}
}

// startTestNode starts a node with the test app and its push API
// (appliancetest: on loopback, devices over WebSocket or, under -race,
// raw TCP). A durable node stores through a real redis-server started
// for the test; otherwise it holds sessions only.
func startTestNode(t *testing.T, durable bool, mut ...func(*appliance.Config)) *appliancetest.Node {
	t.Helper()
	var redis *streamstest.Server
	if durable {
		redis = streamstest.StartRedis(t)
	}
	return startNodeOn(t, redis, mut...)
}

// silentDevicesStay tells devices to PING every 10 s instead of the tests'
// 400 ms: for tests whose raw connections never PING, which a node cuts
// after two silent intervals, reached mid-test on a loaded machine.
func silentDevicesStay(cfg *appliance.Config) { cfg.HeartbeatInterval = 10 * time.Second }

// startNodeOn is startTestNode storing through redis (nil: no store).
func startNodeOn(t *testing.T, redis *streamstest.Server, mut ...func(*appliance.Config)) *appliancetest.Node {
	t.Helper()
	cfg := appliancetest.TestConfig()
	cfg.Apps = []appliance.AppConfig{{ID: testApp, Secrets: map[string][]byte{testKeyID: testSecret}, APIKeys: []string{testAPIKey}}}
	for _, m := range mut {
		m(&cfg)
	}
	opts := appliancetest.Options{Config: cfg}
	if redis != nil {
		opts.Store = streams.New(redis.Client(t), streams.Config{})
	}
	return appliancetest.Start(t, opts)
}

// nodeEnv points pushctl at the node: its push API, and its device URL
// for the commands whose devices connect.
func nodeEnv(n *appliancetest.Node) map[string]string {
	e := testEnv(n.PushURL)
	e["PUSHD_URL"] = n.DeviceURL()
	return e
}

// transportOf is the scheme of a device URL: ws, or tcp under -race.
func transportOf(deviceURL string) string {
	u, _ := url.Parse(deviceURL)
	return u.Scheme
}

// testToken returns a token for device of the test app.
func testToken(t *testing.T, device string) string {
	t.Helper()
	tok, err := token.Issue(token.Claims{App: testApp, Device: device, KeyID: testKeyID, Expires: time.Now().Add(time.Hour).Unix()}, testSecret)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// connectDevice connects device of the test app to the node over a raw
// protocol connection, in groups, and returns once the node welcomed it
// and took it into each group. The connection closes with the test.
func connectDevice(t *testing.T, n *appliancetest.Node, device string, groups ...string) *client.Conn {
	t.Helper()
	c, err := client.DialConn(t.Context(), n.DeviceURL(), client.DialOptions{})
	if err != nil {
		t.Fatalf("dial %s: %v", n.DeviceURL(), err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if err := c.Send(&wire.Hello{Token: testToken(t, device), App: testApp, Device: device}); err != nil {
		t.Fatal(err)
	}
	if f, err := c.Read(5 * time.Second); err != nil {
		t.Fatalf("%s: answer to HELLO: %v", device, err)
	} else if _, ok := f.(*wire.Welcome); !ok {
		t.Fatalf("%s: answer to HELLO: %#v", device, f)
	}
	for i, g := range groups {
		if err := c.Send(&wire.Join{Request: uint64(i + 1), Group: g}); err != nil {
			t.Fatal(err)
		}
	reply:
		for {
			fs, err := readFrames(c, 5*time.Second)
			if err != nil {
				t.Fatalf("%s: answer to JOIN %s: %v", device, g, err)
			}
			for _, f := range fs {
				if r, ok := f.(*wire.UpReply); ok {
					if r.Request != uint64(i+1) || r.Code != wire.CodeOK {
						t.Fatalf("%s: answer to JOIN %s: %+v", device, g, r)
					}
					break reply
				}
			}
		}
	}
	return c
}

// ackAfter reads c until it closes and acks each PUSH delay after it
// came, as a device whose app takes that long would. It stops with the
// test.
func ackAfter(t *testing.T, c *client.Conn, delay time.Duration) {
	t.Helper()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			fs, err := readFrames(c, time.Minute)
			if err != nil {
				return
			}
			for _, f := range fs {
				if p, ok := f.(*wire.Push); ok && p.Seq > 0 {
					time.Sleep(delay)
					if c.Send(&wire.Ack{Seq: p.Seq}) != nil {
						return
					}
				}
			}
		}
	}()
	t.Cleanup(func() {
		_ = c.Close()
		wg.Wait()
	})
}

// readFrames reads the next frame from c, unwrapped when it is a BATCH.
func readFrames(c *client.Conn, timeout time.Duration) ([]wire.Frame, error) {
	f, err := c.Read(timeout)
	if err != nil {
		return nil, err
	}
	b, ok := f.(*wire.Batch)
	if !ok {
		return []wire.Frame{f}, nil
	}
	var fs []wire.Frame
	err = b.Each(wire.CeilingMaxFrame, func(f wire.Frame) error {
		fs = append(fs, f)
		return nil
	})
	return fs, err
}
