package appliance

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pushd/pushd/appliance/api"
	"github.com/pushd/pushd/appliance/client"
	"github.com/pushd/pushd/appliance/token"
	"github.com/pushd/pushd/appliance/wire"
	"github.com/pushd/pushd/internal/poll"
	"github.com/pushd/pushd/streams"
	"github.com/pushd/pushd/streams/streamstest"
)

// Tests of membership changes that race a session's open: the change
// lands in Redis after the open read the device's groups, and its member
// entry names the new connection before that connection's session is in
// the hub.

// openPausedStore lets every batch of opens run in Redis, then holds its
// results until the test lets them through: the routes are claimed and
// the groups read, and no session of the batch is registered yet.
type openPausedStore struct {
	Store
	opened  chan []string // the devices of each batch that ran
	release chan struct{}
}

func newOpenPausedStore(st Store) *openPausedStore {
	return &openPausedStore{Store: st, opened: make(chan []string, 16), release: make(chan struct{})}
}

func (p *openPausedStore) OpenMany(ctx context.Context, reqs []streams.OpenRequest) []streams.Opened {
	out := p.Store.OpenMany(ctx, reqs)
	devices := make([]string, len(reqs))
	for i, r := range reqs {
		devices[i] = r.Device
	}
	p.opened <- devices
	select {
	case <-p.release:
	case <-ctx.Done():
	}
	return out
}

// helloAsync sends HELLO for device on a new connection without waiting
// for the answer.
func helloAsync(t *testing.T, n *Node, device string) *client.Conn {
	t.Helper()
	c := dialRaw(t, deviceTCPURL(n))
	if err := c.Send(&wire.Hello{App: testApp, Device: device, Token: issue(t, device)}); err != nil {
		t.Fatal(err)
	}
	return c
}

// changeMembers changes one device's membership of a group through the
// node's core, as the push API does, and expects it changed and its
// session told.
func changeMembers(t *testing.T, n *Node, group, device string, add bool) {
	t.Helper()
	res, err := n.ChangeGroupMembers(context.Background(), testApp, group, add, []GroupMember{{Device: device}})
	want := map[bool]string{true: api.MemberAdded, false: api.MemberRemoved}[add]
	if err != nil || len(res) != 1 || res[0].Status != want || res[0].Sessions != 1 {
		t.Fatalf("change %s of %s (add %v): %+v, %v", device, group, add, res, err)
	}
}

// groupsOf returns the groups the device's registered session is in.
func groupsOf(n *Node, device string) map[string]bool {
	s := n.hub.lookup(inboxKey(testApp, device))
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]bool{}
	for _, g := range s.groups {
		out[g.key[len(testApp)+1:]] = true
	}
	return out
}

// quietConfig is testConfig with a minute's heartbeat: the raw
// connections of these tests send no PING.
func quietConfig() Config {
	cfg := testConfig()
	cfg.HeartbeatInterval = time.Minute
	return cfg
}

func waitWelcome(t *testing.T, c *client.Conn) {
	t.Helper()
	readUntil(t, c, 5*time.Second, func(f wire.Frame) bool { _, ok := f.(*wire.Welcome); return ok })
}

// TestGroupMembers_AddDuringReconnectReachesNewSession: a device
// reconnects to the node it was on; an add lands after the new open read
// the device's groups, and sees the route already naming the new
// connection, while the hub still holds the old session. The new session
// joins the group, and a group push afterwards reaches it. It used to be
// dropped: the member entry found the old session, of another epoch.
func TestGroupMembers_AddDuringReconnectReachesNewSession(t *testing.T) {
	t.Parallel()
	srv := streamstest.StartRedis(t)
	p := newOpenPausedStore(streams.New(srv.Client(t), streams.Config{}))
	defer close(p.release)
	n := startServing(t, quietConfig(), Deps{Store: p})

	old := helloAsync(t, n, "laptop")
	<-p.opened
	p.release <- struct{}{}
	waitWelcome(t, old)

	c := helloAsync(t, n, "laptop")
	<-p.opened
	changeMembers(t, n, "room", "laptop", true)
	p.release <- struct{}{}
	waitWelcome(t, c)
	poll.Until(t, 5*time.Second, func() error {
		if g := groupsOf(n, "laptop"); !g["room"] {
			return fmt.Errorf("the new session's groups: %v", g)
		}
		return nil
	})
	if resp := pushGroup(t, n, "room", "g1"); resp.Recipients == nil || *resp.Recipients != 1 {
		t.Fatalf("group push: %+v", resp)
	}
	readUntil(t, c, 5*time.Second, func(f wire.Frame) bool {
		pf, ok := f.(*wire.Push)
		return ok && pf.Group == "room" && string(pf.Payload) == "g1"
	})
}

// TestGroupMembers_ChangesDuringOpenAppliedInOrder: a device that is in
// a group connects; while its open is in flight, after the open read its
// groups, the business removes it from that group and adds it to
// another. The session ends up in the second group only: the remove is
// not undone by the group the open read, and the changes apply in the
// order the business made them.
func TestGroupMembers_ChangesDuringOpenAppliedInOrder(t *testing.T) {
	t.Parallel()
	srv := streamstest.StartRedis(t)
	p := newOpenPausedStore(streams.New(srv.Client(t), streams.Config{}))
	defer close(p.release)
	n := startServing(t, quietConfig(), Deps{Store: p})
	ctx := context.Background()
	if _, err := n.ChangeGroupMembers(ctx, testApp, "old", true, []GroupMember{{Device: "phone"}}); err != nil {
		t.Fatal(err)
	}

	c := helloAsync(t, n, "phone")
	<-p.opened
	changeMembers(t, n, "old", "phone", false)
	changeMembers(t, n, "new", "phone", true)
	changeMembers(t, n, "flip", "phone", true)
	changeMembers(t, n, "flip", "phone", false)
	p.release <- struct{}{}
	waitWelcome(t, c)
	poll.Until(t, 5*time.Second, func() error {
		if g := groupsOf(n, "phone"); !g["new"] {
			return fmt.Errorf("the session's groups: %v", g)
		}
		return nil
	})
	if g := groupsOf(n, "phone"); len(g) != 1 {
		t.Fatalf("the session's groups %v, want only new", g)
	}
	for _, group := range []string{"old", "flip"} {
		if resp := pushGroup(t, n, group, "not for the phone"); resp.Recipients == nil || *resp.Recipients != 0 {
			t.Fatalf("push to %s: %+v", group, resp)
		}
	}
}

// TestGroupMembers_UserAddDuringOpenReachesSession: a device connects as
// a user; the user is added to a group after the open read the user's
// groups, and the change names the new connection (the user's devices and
// their routes are read after the claim). The session joins the group by
// way of its user.
func TestGroupMembers_UserAddDuringOpenReachesSession(t *testing.T) {
	t.Parallel()
	srv := streamstest.StartRedis(t)
	p := newOpenPausedStore(streams.New(srv.Client(t), streams.Config{}))
	defer close(p.release)
	n := startServing(t, quietConfig(), Deps{Store: p})

	c := dialRaw(t, deviceTCPURL(n))
	tok := issue(t, "watch", func(cl *token.Claims) { cl.User = "alice" })
	if err := c.Send(&wire.Hello{App: testApp, Device: "watch", Token: tok}); err != nil {
		t.Fatal(err)
	}
	<-p.opened
	res, err := n.ChangeGroupMembers(context.Background(), testApp, "family", true, []GroupMember{{User: "alice"}})
	if err != nil || len(res) != 1 || res[0].Status != api.MemberAdded || res[0].Sessions != 1 {
		t.Fatalf("add alice: %+v, %v", res, err)
	}
	p.release <- struct{}{}
	waitWelcome(t, c)
	poll.Until(t, 5*time.Second, func() error {
		if g := groupsOf(n, "watch"); !g["family"] {
			return fmt.Errorf("the session's groups: %v", g)
		}
		return nil
	})
}

// stalledDeliveries stalls the node's reads of its delivery stream while
// the test holds its lock, as a loaded node's delivery loop lags.
type stalledDeliveries struct {
	Store
	mu      sync.RWMutex
	waiting atomic.Int32 // reads waiting for the lock
}

func (s *stalledDeliveries) ReadDeliveries(ctx context.Context, node string, count int, block time.Duration) ([]streams.Delivery, error) {
	s.waiting.Add(1)
	s.mu.RLock()
	s.waiting.Add(-1)
	defer s.mu.RUnlock()
	return s.Store.ReadDeliveries(ctx, node, count, block)
}

// TestGroupMembers_AcknowledgedChangeReachesPushThroughHoldingNode: the
// business changes a membership through node a while the device's
// session is on node b, then pushes to the group through b. The change is
// acknowledged only once b applied it: while b's delivery loop lags, the
// call fails (and says nothing it has not done); once b caught up, it
// succeeds, and the push through b reaches the device. It used to be
// acknowledged as soon as the member entry was in b's delivery stream, and
// b's own fan-out of the push came before b read it.
func TestGroupMembers_AcknowledgedChangeReachesPushThroughHoldingNode(t *testing.T) {
	t.Parallel()
	srv := streamstest.Start(t)
	a := startDurable(t, srv, "a", streams.Config{})
	stall := &stalledDeliveries{Store: streams.New(srv.Connect(t), streams.Config{})}
	cfg := quietConfig()
	cfg.NodeID = "b"
	b := startServing(t, cfg, Deps{Store: stall})
	poll.Until(t, 5*time.Second, func() error {
		if live := a.liveNodes.Load(); live == nil || len(*live) != 2 {
			return errors.New("node a has not seen node b's heartbeat yet")
		}
		return nil
	})
	c := helloAsync(t, b, "tablet")
	waitWelcome(t, c)

	stall.mu.Lock()
	resume := sync.OnceFunc(stall.mu.Unlock)
	defer resume()
	poll.Until(t, 5*time.Second, func() error {
		if stall.waiting.Load() == 0 {
			return errors.New("b's delivery loop is still reading")
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	res, err := a.ChangeGroupMembers(ctx, testApp, "room", true, []GroupMember{{Device: "tablet"}})
	cancel()
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("change acknowledged while b had not applied it: %+v, %v", res, err)
	}
	resume()

	res, err = a.ChangeGroupMembers(context.Background(), testApp, "room", true, []GroupMember{{Device: "tablet"}})
	if err != nil || len(res) != 1 || res[0].Status != api.MemberAlready || res[0].Sessions != 1 {
		t.Fatalf("change again: %+v, %v", res, err)
	}
	if resp := pushGroup(t, b, "room", "g1"); resp.Recipients == nil || *resp.Recipients != 1 {
		t.Fatalf("group push through b: %+v", resp)
	}
	readUntil(t, c, 5*time.Second, func(f wire.Frame) bool {
		pf, ok := f.(*wire.Push)
		return ok && pf.Group == "room" && string(pf.Payload) == "g1"
	})
}
