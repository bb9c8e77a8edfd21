package ctl

import (
	"context"
	"testing"
	"time"

	"github.com/lesismal/nbio/logging"

	"github.com/pushd/pushd/appliance"
	"github.com/pushd/pushd/streams"
	"github.com/pushd/pushd/streams/streamstest"
)

func init() { logging.SetLevel(logging.LevelNone) }

// testNode is a real appliance node in the test process.
type testNode struct {
	n *appliance.Node
}

// startTestNode starts a node on loopback ports with the test app. A
// durable node stores through a real redis-server started for the test;
// otherwise it holds sessions only.
func startTestNode(t *testing.T, durable bool, mut ...func(*appliance.Config)) *testNode {
	t.Helper()
	if underRace {
		t.Skip("real nbio listeners trip the race detector inside nbio (see race_test.go)")
	}
	cfg := appliance.Config{
		NodeID:            "n1",
		WSAddr:            "127.0.0.1:0",
		TCPAddr:           "127.0.0.1:0",
		PushAddr:          "127.0.0.1:0",
		HandshakeTimeout:  2 * time.Second,
		HeartbeatInterval: 400 * time.Millisecond,
		TimerTick:         20 * time.Millisecond,
		AckTimeout:        300 * time.Millisecond,
		AckBackoffMax:     time.Second,
		ConnectRate:       -1,
		Apps: []appliance.AppConfig{{
			ID:      testApp,
			Secrets: map[string][]byte{testKeyID: testSecret},
			APIKeys: []string{testAPIKey},
		}},
	}
	for _, m := range mut {
		m(&cfg)
	}
	var deps appliance.Deps
	if durable {
		srv := streamstest.StartRedis(t)
		deps.Store = streams.New(srv.Client(t), streams.Config{})
	}
	n, err := appliance.New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := n.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return &testNode{n: n}
}

func (n *testNode) wsURL() string   { return "ws://" + n.n.Addrs().WS + "/v1/ws" }
func (n *testNode) tcpURL() string  { return "tcp://" + n.n.Addrs().TCP }
func (n *testNode) pushURL() string { return "http://" + n.n.Addrs().Push }

// env points pushctl at the node.
func (n *testNode) env() map[string]string {
	e := testEnv(n.pushURL())
	e["PUSHD_URL"] = n.wsURL()
	return e
}
