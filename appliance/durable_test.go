package appliance

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pushd/pushd/appliance/api"
	"github.com/pushd/pushd/appliance/client"
	"github.com/pushd/pushd/appliance/client/clienttest"
	"github.com/pushd/pushd/appliance/wire"
	"github.com/pushd/pushd/internal/poll"
	"github.com/pushd/pushd/streams"
	"github.com/pushd/pushd/streams/streamstest"
	"github.com/pushd/pushd/tests/faultproxy"
)

// startDurable starts a node backed by srv; its devices connect to
// deviceURL (startServing). The suite runs against one redis-server, or
// a cluster under PUSHD_TEST_REDIS=cluster (streamstest.Start).
func startDurable(t testing.TB, srv streamstest.Redis, id string, sc streams.Config, mut ...func(*Config)) *Node {
	t.Helper()
	cfg := testConfig()
	cfg.NodeID = id
	for _, m := range mut {
		m(&cfg)
	}
	return startServing(t, cfg, Deps{Store: streams.New(srv.Connect(t), sc)})
}

// message is a push of data as the push API builds it once a request
// passed its checks: a fresh id, the node's longest TTL and inbox cap,
// normal priority. mut changes it (an idempotency key is an id given).
func message(n *Node, data string, mut ...func(*streams.Message)) streams.Message {
	limits := n.PushLimits()
	m := streams.Message{ID: fmt.Sprint("test-", messageSeq.Add(1)), Priority: streams.Priority(wire.PriorityNormal), Created: time.Now(),
		TTL: limits.MaxTTL, MaxLen: limits.InboxMaxLen, Payload: []byte(data)}
	for _, f := range mut {
		f(&m)
	}
	return m
}

// messageSeq numbers test messages.
var messageSeq atomic.Uint64

// withID gives a push the message id an idempotency key would.
func withID(id string) func(*streams.Message) { return func(m *streams.Message) { m.ID = id } }

// withTTL gives a push its own TTL.
func withTTL(d time.Duration) func(*streams.Message) { return func(m *streams.Message) { m.TTL = d } }

// push stores data for devices through the node's core, as the push API
// does.
func push(t testing.TB, n *Node, devices []string, data string, mut ...func(*streams.Message)) (*api.PushResponse, error) {
	t.Helper()
	return n.PushDevices(context.Background(), testApp, message(n, data, mut...), devices)
}

func mustPush(t testing.TB, n *Node, devices []string, data string, mut ...func(*streams.Message)) *api.PushResponse {
	t.Helper()
	resp, err := push(t, n, devices, data, mut...)
	if err != nil {
		t.Fatalf("push %q: %v", data, err)
	}
	return resp
}

// pushGroup sends data to a group of the test app (the whole app for "").
func pushGroup(t testing.TB, n *Node, group, data string) *api.PushResponse {
	t.Helper()
	return n.PushGroup(context.Background(), testApp, group, message(n, data), nil)
}

func deviceState(t testing.TB, n *Node, device string) api.DeviceState {
	t.Helper()
	st, err := n.DeviceState(context.Background(), testApp, device)
	if err != nil {
		t.Fatalf("device %s: %v", device, err)
	}
	return st
}

// runDevice runs the SDK for the test app's device id against url until
// the test ends, from cursor, and waits until it is connected.
func runDevice(t testing.TB, url, id string, cursor client.Cursor, mut ...func(*client.Config)) *clienttest.Device {
	t.Helper()
	cfg := client.Config{URL: url, App: testApp, Device: id, Token: issue(t, id), Cursor: cursor}
	for _, m := range mut {
		m(&cfg)
	}
	return clienttest.Run(t, cfg)
}

func TestDurable_OnlineDeliveryAndAckTrims(t *testing.T) {
	t.Parallel()
	srv := streamstest.Start(t)
	n := startDurable(t, srv, "n1", streams.Config{})
	d := runDevice(t, deviceURL(n), "phone", client.Cursor{})
	resp := mustPush(t, n, []string{"phone", "tablet", "bad id"}, "hello")
	if !resp.Stored || len(resp.Results) != 3 {
		t.Fatalf("push answer %+v", resp)
	}
	want := []struct{ status, reason string }{{api.StatusDelivered, ""}, {api.StatusStored, ""}, {api.StatusRejected, "invalid_device"}}
	for i, w := range want {
		if r := resp.Results[i]; r.Status != w.status || r.Reason != w.reason {
			t.Fatalf("result %d = %+v, want %s %s", i, r, w.status, w.reason)
		}
	}
	msgs := d.WaitCount(t, 1)
	if string(msgs[0].Payload) != "hello" || msgs[0].ID != resp.ID || msgs[0].Seq != 1 {
		t.Fatalf("received %+v", msgs[0])
	}
	poll.Until(t, 5*time.Second, func() error {
		st := deviceState(t, n, "phone")
		if st.Acked != 1 || st.InboxLen != 0 || !st.Online {
			return fmt.Errorf("device state %+v: want acked 1, empty inbox, online", st)
		}
		return nil
	})
	if st := deviceState(t, n, "tablet"); st.InboxLen != 1 || st.Online {
		t.Fatalf("offline device state %+v", st)
	}
}

func TestDurable_OfflineStoreThenOrderedReplay(t *testing.T) {
	t.Parallel()
	testOfflineStoreThenOrderedReplay(t, streamstest.Start(t))
}

func testOfflineStoreThenOrderedReplay(t *testing.T, srv streamstest.Redis) {
	n := startDurable(t, srv, "n1", streams.Config{}, func(c *Config) { c.Window = 4 })
	const count = 30 // more than the window: replay continues through fetches
	for i := 0; i < count; i++ {
		mustPush(t, n, []string{"phone"}, fmt.Sprint(i))
	}
	d := runDevice(t, deviceTCPURL(n), "phone", client.Cursor{})
	msgs := d.WaitCount(t, count)
	for i, m := range msgs {
		if string(m.Payload) != fmt.Sprint(i) || m.Seq != uint64(i+1) {
			t.Fatalf("message %d: seq %d payload %q", i, m.Seq, m.Payload)
		}
	}
	if !d.LastWelcome().Recovered {
		t.Fatal("a fresh device with a full inbox was told recovered:false")
	}
	welcomes := len(d.Welcomes())
	if welcomes != 1 {
		t.Fatalf("the replay took %d sessions; inbox reads past the window must not resync", welcomes)
	}
	// Reconnect with the cursor: nothing is replayed again.
	cur := d.Client.Cursor()
	d.Stop()
	mustPush(t, n, []string{"phone"}, "after")
	d2 := runDevice(t, deviceURL(n), "phone", cur)
	d2.WaitCount(t, 1)
	time.Sleep(200 * time.Millisecond) // room for a wrong replay to show up
	if got := d2.Received(); len(got) != 1 || string(got[0].Payload) != "after" || !d2.LastWelcome().Recovered {
		t.Fatalf("after resume got %v (recovered %v)", clienttest.Payloads(got), d2.LastWelcome().Recovered)
	}
}

// TestDurable_PushRightAfterWelcomeIsLive: pushes that land while a
// device's session is opening — stored after its inbox was read, relayed
// before the session was registered — are delivered at once, even when
// no later push comes to reveal them.
func TestDurable_PushRightAfterWelcomeIsLive(t *testing.T) {
	t.Parallel()
	srv := streamstest.Start(t)
	n := startDurable(t, srv, "n1", streams.Config{})
	for i := 0; i < 10; i++ {
		id := fmt.Sprint("fast-", i)
		key := inboxKey(testApp, id)
		var pushed atomic.Int64
		done := make(chan struct{})
		go func() {
			defer close(done)
			for n.hub.lookup(key) == nil {
				mustPush(t, n, []string{id}, fmt.Sprint(pushed.Load()))
				pushed.Add(1)
			}
		}()
		d := runDevice(t, deviceURL(n), id, client.Cursor{})
		<-done
		k := int(pushed.Load())
		// Well within an ack timeout: no retransmit, reconnect or later
		// push may be needed to find a stranded one.
		poll.Until(t, time.Second, func() error {
			if got := len(d.Received()); got != k {
				return fmt.Errorf("device %s got %d of %d", id, got, k)
			}
			return nil
		})
		d.Stop()
	}
}

func TestDurable_IdempotencyKeyStoresOnce(t *testing.T) {
	t.Parallel()
	srv := streamstest.Start(t)
	n := startDurable(t, srv, "n1", streams.Config{})
	first := mustPush(t, n, []string{"phone"}, "once", withID("order-42"))
	second := mustPush(t, n, []string{"phone"}, "once", withID("order-42"))
	if first.ID != second.ID || !second.Results[0].Duplicate || second.Results[0].Seq != first.Results[0].Seq {
		t.Fatalf("first %+v, second %+v", first, second)
	}
	if st := deviceState(t, n, "phone"); st.Last != 1 || st.InboxLen != 1 {
		t.Fatalf("device state %+v, want one stored message", st)
	}
}

// TestDurable_GapsAreReported checks that overflow, TTL expiry and a lost
// Redis dataset each make the next WELCOME say recovered:false.
func TestDurable_GapsAreReported(t *testing.T) {
	t.Parallel()
	t.Run("overflow", func(t *testing.T) {
		srv := streamstest.Start(t)
		n := startDurable(t, srv, "n1", streams.Config{InboxMaxLen: 5})
		d := runDevice(t, deviceURL(n), "phone", client.Cursor{})
		mustPush(t, n, []string{"phone"}, "seen")
		d.WaitCount(t, 1)
		cur := d.Client.Cursor()
		d.Stop()
		for i := 0; i < 10; i++ {
			mustPush(t, n, []string{"phone"}, fmt.Sprint(i))
		}
		d2 := runDevice(t, deviceURL(n), "phone", cur)
		if d2.LastWelcome().Recovered {
			t.Fatal("recovered:true after the inbox overflowed")
		}
		got := d2.WaitCount(t, 5)
		if p := clienttest.Payloads(got); p[0] != "5" || p[4] != "9" {
			t.Fatalf("replayed %v, want the last five", p)
		}
	})
	t.Run("ttl", func(t *testing.T) {
		srv := streamstest.Start(t)
		n := startDurable(t, srv, "n1", streams.Config{})
		d := runDevice(t, deviceURL(n), "phone", client.Cursor{})
		mustPush(t, n, []string{"phone"}, "seen")
		d.WaitCount(t, 1)
		cur := d.Client.Cursor()
		d.Stop()
		mustPush(t, n, []string{"phone"}, "short-lived", withTTL(time.Second))
		time.Sleep(1100 * time.Millisecond)
		d2 := runDevice(t, deviceURL(n), "phone", cur)
		if d2.LastWelcome().Recovered {
			t.Fatal("recovered:true after a message expired unseen")
		}
	})
	t.Run("flushall", func(t *testing.T) {
		srv := streamstest.Start(t)
		n := startDurable(t, srv, "n1", streams.Config{})
		d := runDevice(t, deviceURL(n), "phone", client.Cursor{})
		mustPush(t, n, []string{"phone"}, "seen")
		d.WaitCount(t, 1)
		cur := d.Client.Cursor()
		d.Stop()
		srv.FlushAll(t)
		d2 := runDevice(t, deviceURL(n), "phone", cur)
		if w := d2.LastWelcome(); w.Recovered || w.Epoch == cur.Epoch {
			t.Fatalf("after FLUSHALL: welcome %+v (old epoch %s)", w, cur.Epoch)
		}
	})
	t.Run("flushall while connected", func(t *testing.T) {
		// The node sees its heartbeat gone, finds the session's route
		// gone too and tells the device to resync; pushes then reach it
		// live again.
		srv := streamstest.Start(t)
		n := startDurable(t, srv, "n1", streams.Config{})
		d := runDevice(t, deviceURL(n), "phone", client.Cursor{})
		mustPush(t, n, []string{"phone"}, "seen")
		d.WaitCount(t, 1)
		before := d.LastWelcome()
		srv.FlushAll(t)
		poll.Until(t, 5*time.Second, func() error {
			if w := d.LastWelcome(); w.Session == before.Session || !d.Client.Connected() {
				return errors.New("the device has not reconnected since FLUSHALL")
			}
			return nil
		})
		if w := d.LastWelcome(); w.Recovered || w.Epoch == before.Epoch {
			t.Fatalf("welcome after FLUSHALL %+v (old epoch %s)", w, before.Epoch)
		}
		if st := mustPush(t, n, []string{"phone"}, "after").Results[0].Status; st != api.StatusDelivered {
			t.Fatalf("push after the resync: %s, want delivered", st)
		}
		d.WaitCount(t, 2)
	})
}

// TestDurable_DroppedAcksRetransmitExactlyOnceToApp drops every ACK the
// device sends through a fault proxy for a while: the node retransmits,
// and the app still sees each message once.
func TestDurable_DroppedAcksRetransmitExactlyOnceToApp(t *testing.T) {
	t.Parallel()
	srv := streamstest.Start(t)
	n := startDurable(t, srv, "n1", streams.Config{})
	proxy := faultproxy.Start(t, deviceTCPAddr(n))
	var dropAcks atomic.Bool
	var redeliveries atomic.Int64
	dropAcks.Store(true)
	proxy.SetRule(func(d faultproxy.Direction, f wire.Frame) bool {
		if p, ok := f.(*wire.Push); ok && d == faultproxy.Down && p.Redelivery {
			redeliveries.Add(1)
		}
		_, ack := f.(*wire.Ack)
		return ack && dropAcks.Load()
	})
	d := runDevice(t, "tcp://"+proxy.Addr(), "phone", client.Cursor{})
	for i := 0; i < 5; i++ {
		mustPush(t, n, []string{"phone"}, fmt.Sprint(i))
	}
	// Generous: a loaded machine saw none within 5 s.
	poll.Until(t, 30*time.Second, func() error {
		if redeliveries.Load() < 5 {
			return fmt.Errorf("%d redelivered pushes seen", redeliveries.Load())
		}
		return nil
	})
	dropAcks.Store(false)
	poll.Until(t, 10*time.Second, func() error {
		if st := deviceState(t, n, "phone"); st.Acked != 5 {
			return fmt.Errorf("acked %d of 5", st.Acked)
		}
		return nil
	})
	if got := clienttest.Payloads(d.Received()); fmt.Sprint(got) != "[0 1 2 3 4]" {
		t.Fatalf("app saw %v, want each message once in order", got)
	}
}

// TestDurable_TwoNodesDeviceMoves: pushes follow a device from node A to
// node B, and A, having lost the route, cannot deliver for it.
func TestDurable_TwoNodesDeviceMoves(t *testing.T) {
	t.Parallel()
	testTwoNodesDeviceMoves(t, streamstest.Start(t))
}

func testTwoNodesDeviceMoves(t *testing.T, srv streamstest.Redis) {
	a := startDurable(t, srv, "a", streams.Config{})
	b := startDurable(t, srv, "b", streams.Config{})
	onA := runDevice(t, deviceURL(a), "phone", client.Cursor{})
	if r := mustPush(t, b, []string{"phone"}, "via b to a"); r.Results[0].Status != api.StatusDelivered {
		t.Fatalf("push through b for a device on a: %+v", r.Results[0])
	}
	onA.WaitCount(t, 1)

	stale := a.hub.lookup(inboxKey(testApp, "phone"))
	onB := runDevice(t, deviceTCPURL(b), "phone", onA.Client.Cursor())
	poll.Until(t, 5*time.Second, func() error {
		if a.hub.lookup(inboxKey(testApp, "phone")) != nil {
			return errors.New("node a still holds the session after the takeover")
		}
		return nil
	})
	if r := mustPush(t, a, []string{"phone"}, "via a to b"); r.Results[0].Status != api.StatusDelivered {
		t.Fatalf("push through a for a device on b: %+v", r.Results[0])
	}
	onB.WaitCount(t, 1)

	// A relay entry addressed to the old connection epoch reaches node a
	// late: it must not be delivered there.
	if stale == nil {
		t.Fatal("no session on a before the move")
	}
	took := a.deliverTargets(&entryMessage{id: "late", payload: []byte("x")},
		[]entryTarget{{device: inboxKey(testApp, "phone"), connEpoch: stale.connEpoch, inboxEpoch: "e", seq: 99}}, viaLive)
	if took[0] {
		t.Fatal("node a delivered for a device whose route it lost")
	}
	if got := clienttest.Payloads(onB.Received()); len(got) != 1 || got[0] != "via a to b" {
		t.Fatalf("device on b got %v", got)
	}
}

// TestDurable_DeadNodeDeliveriesClaimed: entries pending in a killed
// node's delivery stream are claimed by a live node, and the device loses
// nothing when it reconnects there.
func TestDurable_DeadNodeDeliveriesClaimed(t *testing.T) {
	t.Parallel()
	testDeadNodeDeliveriesClaimed(t, streamstest.Start(t))
}

func testDeadNodeDeliveriesClaimed(t *testing.T, srv streamstest.Redis) {
	sc := streams.Config{NodeTTL: time.Second, ClaimMinIdle: 100 * time.Millisecond}
	b := startDurable(t, srv, "b", sc)
	store := streams.New(srv.Connect(t), sc)
	ctx := context.Background()
	// Node "a" registered itself, owned the device's route and died with
	// an entry pending in its stream.
	if err := store.EnsureGroup(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Heartbeat(ctx, streams.NodeInfo{ID: "a"}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := store.ClaimRoute(ctx, inboxKey(testApp, "phone"), "a"); err != nil {
		t.Fatal(err)
	}
	resp := mustPush(t, b, []string{"phone"}, "pending on a")
	if resp.Results[0].Status != api.StatusDelivered {
		t.Fatalf("push %+v: want relayed to a", resp.Results[0])
	}
	if _, err := store.ReadDeliveries(ctx, "a", 10, 10*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 10*time.Second, func() error {
		if v, _ := metricValue(scrape(t, b), "pushd_takeover_entries_total"); v == "1" {
			return nil
		}
		live, dead, err := store.Nodes(ctx)
		return fmt.Errorf("no takeover yet (live %d, dead %v, err %v)", len(live), dead, err)
	})
	poll.Until(t, 10*time.Second, func() error {
		_, dead, _ := store.Nodes(ctx)
		if len(dead) != 0 {
			return fmt.Errorf("dead node not retired: %v", dead)
		}
		return nil
	})
	d := runDevice(t, deviceURL(b), "phone", client.Cursor{})
	if got := clienttest.Payloads(d.WaitCount(t, 1)); got[0] != "pending on a" {
		t.Fatalf("device got %v", got)
	}
}

// TestDurable_RedisDown: with Redis stopped every push answer is 503 or
// stored:false, connected devices still get them, and the node recovers
// by itself when Redis returns.
func TestDurable_RedisDown(t *testing.T) {
	t.Parallel()
	srv := streamstest.Start(t)
	n := startDurable(t, srv, "n1", streams.Config{})
	d := runDevice(t, deviceURL(n), "phone", client.Cursor{})
	srv.Stop()

	resp, err := push(t, n, []string{"phone", "offline"}, "live only")
	if err != nil || resp.Stored || resp.Results[0].Status != api.StatusDelivered || resp.Results[1].Status != api.StatusRejected {
		t.Fatalf("push with Redis down: %+v, %v", resp, err)
	}
	if got := clienttest.Payloads(d.WaitCount(t, 1)); got[0] != "live only" {
		t.Fatalf("device got %v", got)
	}
	if _, err := push(t, n, []string{"offline"}, "x"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("push to an offline device with Redis down: %v, want ErrUnavailable", err)
	}
	if h, _ := healthOf(t, n); h != http.StatusServiceUnavailable {
		t.Fatalf("healthz with Redis down: %d", h)
	}
	// A broadcast on a node with no peer to pass it to makes no Redis
	// call: it must not be taken for Redis answering again.
	pushGroup(t, n, "", "to all")
	if h, _ := healthOf(t, n); h != http.StatusServiceUnavailable {
		t.Fatalf("healthz after a broadcast with Redis down: %d", h)
	}
	body := scrape(t, n)
	if v, err := metricValue(body, "pushd_redis_up"); err != nil || v != "0" {
		t.Fatalf("pushd_redis_up %q %v", v, err)
	}
	// Refused connections count as "connection"; on a loaded machine
	// go-redis's retries can outlast the call's deadline ("timeout") first.
	if !strings.Contains(body, `pushd_redis_errors_total{kind="connection"}`) && !strings.Contains(body, `pushd_redis_errors_total{kind="timeout"}`) {
		var redis []string
		for _, line := range strings.Split(body, "\n") {
			if strings.HasPrefix(line, "pushd_redis") {
				redis = append(redis, line)
			}
		}
		t.Fatalf("the metrics do not say why Redis is down:\n%s", strings.Join(redis, "\n"))
	}

	srv.Restart()
	poll.Until(t, 10*time.Second, func() error {
		if h, _ := healthOf(t, n); h != http.StatusOK {
			return fmt.Errorf("healthz %d", h)
		}
		return nil
	})
	// Dials go-redis began during the outage can still fail a moment
	// after the first call succeeds, so the first push may not be stored
	// yet; it says so, and the device still gets it live.
	poll.Until(t, 5*time.Second, func() error {
		if r := mustPush(t, n, []string{"phone"}, "stored again"); !r.Stored {
			return fmt.Errorf("after recovery: %+v", r)
		}
		return nil
	})
	poll.Until(t, 10*time.Second, func() error {
		got := clienttest.Payloads(d.Received())
		if len(got) < 2 || got[len(got)-1] != "stored again" {
			return fmt.Errorf("device got %v", got)
		}
		return nil
	})
}

func TestEntry_DecodeNeverPanics(t *testing.T) {
	good := appendPushEntry(nil, &entryMessage{id: "m", payload: []byte("p")},
		[]entryTarget{{device: "a/d", connEpoch: 3, inboxEpoch: "e", seq: 9}})
	e, err := decodeEntry(good)
	if err != nil || len(e.targets) != 1 || e.targets[0].seq != 9 {
		t.Fatalf("decode %+v, %v", e, err)
	}
	for i := 0; i < len(good); i++ {
		if _, err := decodeEntry(good[:i]); err == nil {
			t.Fatalf("prefix %d decoded", i)
		}
	}
	huge := append([]byte{entryVersion, byte(entryPush), 0, 0, 0, 0, 0}, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F)
	if _, err := decodeEntry(huge); err == nil {
		t.Fatal("a huge target count decoded")
	}
}

// TestDurable_UnconfirmedPushIsNotStored: in strict mode, a push whose
// writes no replica confirms within the wait is never answered stored.
// The device connected to the node gets it live (stored: false), one with
// no session here makes the push ErrUnavailable (the API's 503), and the
// metrics say not_replicated. Once the replica is back, a retry with the
// same message id finds the first attempt's entries, waits for the
// replica again and is answered stored.
func TestDurable_UnconfirmedPushIsNotStored(t *testing.T) {
	t.Parallel()
	primary := streamstest.StartRedis(t)
	replica := streamstest.StartReplica(t, primary)
	// Long enough for a busy machine's replica to confirm once it runs,
	// short enough to keep the test quick while it is paused.
	n := startDurable(t, primary, "n1", streams.Config{WaitReplicas: 1, WaitTimeout: 500 * time.Millisecond})
	d := runDevice(t, deviceURL(n), "phone", client.Cursor{})

	replica.Pause()
	r := mustPush(t, n, []string{"phone", "offline"}, "unconfirmed", withID("m-unconfirmed"))
	if r.Stored || r.Results[0].Status != api.StatusDelivered || r.Results[1].Status != api.StatusRejected {
		t.Fatalf("push with the replica paused: %+v, want stored:false, delivered live to phone, offline rejected", r)
	}
	if got := clienttest.Payloads(d.WaitCount(t, 1)); got[0] != "unconfirmed" {
		t.Fatalf("device got %v", got)
	}
	if _, err := push(t, n, []string{"offline"}, "x"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("push to an offline device with the replica paused: %v, want ErrUnavailable", err)
	}
	if v, err := metricValue(scrape(t, n), `pushd_redis_errors_total{kind="not_replicated"}`); err != nil || v == "0" {
		t.Fatalf("pushd_redis_errors_total{kind=\"not_replicated\"} %q %v", v, err)
	}

	replica.Resume()
	poll.Until(t, 30*time.Second, func() error {
		r, err := push(t, n, []string{"phone", "offline"}, "unconfirmed", withID("m-unconfirmed"))
		if err != nil || !r.Stored {
			return fmt.Errorf("retry after the replica came back: %+v %v", r, err)
		}
		for _, res := range r.Results {
			if !res.Duplicate || res.Seq != 1 {
				return fmt.Errorf("retry after the replica came back: %+v, want the first attempt's seq 1, duplicate", r)
			}
		}
		return nil
	})
	// The app saw the message once, live; its stored copy is the same id.
	mustPush(t, n, []string{"phone"}, "stored")
	poll.Until(t, 10*time.Second, func() error {
		got := clienttest.Payloads(d.Received())
		if len(got) != 2 || got[0] != "unconfirmed" || got[1] != "stored" {
			return fmt.Errorf("app saw %v, want [unconfirmed stored]", got)
		}
		return nil
	})
}

// TestDurable_AcksSurviveARedisStall: an ack that reaches the node while
// Redis does not answer is kept and written once Redis is back.
func TestDurable_AcksSurviveARedisStall(t *testing.T) {
	t.Parallel()
	srv := streamstest.Start(t)
	n := startDurable(t, srv, "n1", streams.Config{})
	proxy := faultproxy.Start(t, deviceTCPAddr(n))
	var dropAcks atomic.Bool
	dropAcks.Store(true)
	proxy.SetRule(func(d faultproxy.Direction, f wire.Frame) bool {
		_, ack := f.(*wire.Ack)
		return ack && dropAcks.Load()
	})
	d := runDevice(t, "tcp://"+proxy.Addr(), "phone", client.Cursor{})
	mustPush(t, n, []string{"phone"}, "one")
	d.WaitCount(t, 1)

	srv.Pause()
	dropAcks.Store(false) // the next retransmit is acked, into a stalled Redis
	poll.Until(t, 10*time.Second, func() error {
		if v, _ := metricValue(scrape(t, n), "pushd_ack_retries_total"); v == "" || v == "0" {
			return errors.New("no ack has failed against the stalled Redis yet")
		}
		return nil
	})
	srv.Resume()
	poll.Until(t, 10*time.Second, func() error {
		if st := deviceState(t, n, "phone"); st.Acked != 1 || st.InboxLen != 0 {
			return fmt.Errorf("device state %+v: want the ack written after the stall", st)
		}
		return nil
	})
	if got := clienttest.Payloads(d.Received()); len(got) != 1 {
		t.Fatalf("app saw %v", got)
	}
}

// TestDurable_GroupAndBroadcastAcrossNodes: a group push through one node
// reaches the members on both nodes, a broadcast reaches every device of
// the app, and neither is stored.
func TestDurable_GroupAndBroadcastAcrossNodes(t *testing.T) {
	t.Parallel()
	srv := streamstest.Start(t)
	a := startDurable(t, srv, "a", streams.Config{})
	b := startDurable(t, srv, "b", streams.Config{})
	onA := runDevice(t, deviceURL(a), "member-a", client.Cursor{})
	onB := runDevice(t, deviceTCPURL(b), "member-b", client.Cursor{})
	outsider := runDevice(t, deviceURL(b), "outsider", client.Cursor{})
	ctx := context.Background()
	for _, d := range []*clienttest.Device{onA, onB} {
		if err := d.Client.Join(ctx, "room"); err != nil {
			t.Fatal(err)
		}
	}
	poll.Until(t, 5*time.Second, func() error {
		if live := a.liveNodes.Load(); live == nil || len(*live) != 2 {
			return errors.New("node a has not seen node b's heartbeat yet")
		}
		return nil
	})

	resp := pushGroup(t, a, "room", "to the room")
	if resp.Stored || resp.Recipients == nil || *resp.Recipients != 1 || resp.OtherNodes == nil || *resp.OtherNodes != 1 {
		t.Fatalf("group push: %+v", resp)
	}
	for _, d := range []*clienttest.Device{onA, onB} {
		if m := d.WaitCount(t, 1); m[0].Group != "room" || string(m[0].Payload) != "to the room" || m[0].Seq != 0 {
			t.Fatalf("member got %+v", m[0])
		}
	}
	pushGroup(t, a, "", "to everyone")
	for _, d := range []*clienttest.Device{onA, onB, outsider} {
		poll.Until(t, 5*time.Second, func() error {
			got := clienttest.Payloads(d.Received())
			if len(got) == 0 || got[len(got)-1] != "to everyone" {
				return fmt.Errorf("device got %v", got)
			}
			return nil
		})
	}
	if got := clienttest.Payloads(outsider.Received()); len(got) != 1 {
		t.Fatalf("a non-member got the group message: %v", got)
	}
	if st := deviceState(t, a, "member-b"); st.Last != 0 {
		t.Fatalf("a group message was stored: %+v", st)
	}
}

// TestDurable_LossyLinkExactlyOnceInOrder is RELIABILITY's T3 in small: a
// fault proxy drops 5% of the devices' acks and 1% of the pushes sent to
// them. Lost pushes show as unflagged jumps, which the SDK refuses and
// answers with a repeated ack; the node retransmits. Every app must see
// every message once, in order.
func TestDurable_LossyLinkExactlyOnceInOrder(t *testing.T) {
	t.Parallel()
	srv := streamstest.Start(t)
	n := startDurable(t, srv, "n1", streams.Config{})
	proxy := faultproxy.Start(t, deviceTCPAddr(n))
	var mu sync.Mutex
	rng := rand.New(rand.NewPCG(1, 2))
	var droppedAcks, droppedPushes int
	proxy.SetRule(func(d faultproxy.Direction, f wire.Frame) bool {
		mu.Lock()
		defer mu.Unlock()
		switch f.(type) {
		case *wire.Ack:
			if rng.Float64() < 0.05 {
				droppedAcks++
				return true
			}
		case *wire.Push:
			if rng.Float64() < 0.01 {
				droppedPushes++
				return true
			}
		}
		return false
	})
	const devices, messages = 20, 60
	var ids []string
	var ds []*clienttest.Device
	for i := 0; i < devices; i++ {
		ids = append(ids, fmt.Sprint("lossy-", i))
		ds = append(ds, runDevice(t, "tcp://"+proxy.Addr(), ids[i], client.Cursor{}))
	}
	want := make([]string, messages)
	for k := range want {
		want[k] = fmt.Sprint(k)
		mustPush(t, n, ids, want[k])
	}
	for i, d := range ds {
		poll.Until(t, 20*time.Second, func() error {
			got := clienttest.Payloads(d.Received())
			if len(got) > messages || (len(got) == messages && fmt.Sprint(got) != fmt.Sprint(want)) {
				t.Fatalf("%s saw %v", ids[i], got)
			}
			if len(got) < messages {
				return fmt.Errorf("%s got %d of %d", ids[i], len(got), messages)
			}
			return nil
		})
	}
	mu.Lock()
	t.Logf("dropped %d acks and %d pushes on the way; %d devices × %d messages arrived once, in order", droppedAcks, droppedPushes, devices, messages)
	if droppedPushes == 0 || droppedAcks == 0 {
		t.Fatal("the proxy dropped nothing; the test proves nothing")
	}
	mu.Unlock()
	for _, id := range ids {
		poll.Until(t, 20*time.Second, func() error {
			if st := deviceState(t, n, id); st.Acked != messages || st.InboxLen != 0 {
				return fmt.Errorf("%s: %+v", id, st)
			}
			return nil
		})
	}
}

// TestDurable_ShutdownIsPrompt: a node's loops block on Redis (a stream
// read waits up to deliveryBlock); shutdown cancels them instead of
// waiting out their calls.
func TestDurable_ShutdownIsPrompt(t *testing.T) {
	t.Parallel()
	srv := streamstest.Start(t)
	n := startDurable(t, srv, "n1", streams.Config{})
	runDevice(t, deviceURL(n), "phone", client.Cursor{})
	time.Sleep(300 * time.Millisecond) // let the delivery loop block in its stream read
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := n.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	// A loop that ignored the node's context would hold shutdown for a
	// whole Redis call timeout (redisTimeout) or more.
	if d := time.Since(start); d >= redisTimeout {
		t.Fatalf("shutdown took %s", d)
	}
}

// TestDurable_RestartedNodeAcksWhatItLeftPending: entries a node read from
// its delivery stream and never acked before it was killed are applied
// and acked when it starts again, not left pending for good.
func TestDurable_RestartedNodeAcksWhatItLeftPending(t *testing.T) {
	t.Parallel()
	srv := streamstest.Start(t)
	store := streams.New(srv.Connect(t), streams.Config{})
	ctx := context.Background()
	if err := store.EnsureGroup(ctx, "n1"); err != nil {
		t.Fatal(err)
	}
	entry := appendPushEntry(nil, &entryMessage{id: "m1", payload: []byte("x")},
		[]entryTarget{{device: inboxKey(testApp, "gone"), connEpoch: 1, inboxEpoch: "e", seq: 1}})
	if err := store.Deliver(ctx, map[string][][]byte{"n1": {entry, entry}}); err != nil {
		t.Fatal(err)
	}
	if ds, err := store.ReadDeliveries(ctx, "n1", 10, 0); err != nil || len(ds) != 2 {
		t.Fatalf("the previous run's read: %d entries, %v", len(ds), err)
	}
	n := startDurable(t, srv, "n1", streams.Config{})
	poll.Until(t, 5*time.Second, func() error {
		if p := srv.Connect(t).XPending(ctx, "pushd:node:{n1}:deliveries", "pushd").Val(); p == nil || p.Count != 0 {
			return fmt.Errorf("pending entries: %+v", p)
		}
		return nil
	})
	if v, err := metricValue(scrape(t, n), "pushd_delivery_entries_recovered_total"); err != nil || v != "2" {
		t.Fatalf("pushd_delivery_entries_recovered_total %q %v", v, err)
	}
}

// redisGate is a go-redis hook that holds every command of a client while
// closed, as a paused process would: the node's loops stop talking to
// Redis while its sockets stay up.
type redisGate struct {
	mu     sync.Mutex
	closed chan struct{} // nil while open; closed by open
}

func (g *redisGate) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed == nil {
		g.closed = make(chan struct{})
	}
}

func (g *redisGate) open() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed != nil {
		close(g.closed)
		g.closed = nil
	}
}

func (g *redisGate) wait(ctx context.Context) error {
	g.mu.Lock()
	ch := g.closed
	g.mu.Unlock()
	if ch == nil {
		return nil
	}
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (g *redisGate) DialHook(next redis.DialHook) redis.DialHook { return next }

func (g *redisGate) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if err := g.wait(ctx); err != nil {
			cmd.SetErr(err)
			return err
		}
		return next(ctx, cmd)
	}
}

func (g *redisGate) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if err := g.wait(ctx); err != nil {
			for _, c := range cmds {
				c.SetErr(err)
			}
			return err
		}
		return next(ctx, cmds)
	}
}

// TestDurable_PausedNodeCatchesUpWithoutAnotherPush: a node that stops
// talking to Redis for longer than its heartbeat TTL is taken for dead;
// another node takes over its delivery stream, where pushes for the
// paused node's (still connected) device wait, and cannot deliver them.
// When the node resumes, it finds its heartbeat lost and re-reads every
// session's inbox: the device gets every stored push with no further push
// to expose the gap.
func TestDurable_PausedNodeCatchesUpWithoutAnotherPush(t *testing.T) {
	t.Parallel()
	srv := streamstest.Start(t)
	sc := streams.Config{NodeTTL: time.Second, ClaimMinIdle: 100 * time.Millisecond}
	gate := &redisGate{}
	rdb := srv.Connect(t)
	rdb.AddHook(gate)
	cfg := testConfig()
	cfg.NodeID = "a"
	a := startServing(t, cfg, Deps{Store: streams.New(rdb, sc)})
	b := startDurable(t, srv, "b", sc)
	d := runDevice(t, deviceURL(a), "phone", client.Cursor{})

	gate.close()
	const pushes = 5
	for i := 0; i < pushes; i++ {
		resp := mustPush(t, b, []string{"phone"}, fmt.Sprint("while paused ", i))
		if !resp.Stored {
			t.Fatalf("push %d not stored: %+v", i, resp)
		}
	}
	poll.Until(t, 10*time.Second, func() error {
		if v, _ := metricValue(scrape(t, b), "pushd_takeover_entries_total"); v != fmt.Sprint(pushes) {
			return fmt.Errorf("b took over %q of %d entries", v, pushes)
		}
		return nil
	})
	// A read of a's stream already on its way when the gate closed may
	// have reached the device; the rest waited in entries b took over.
	resumed := time.Now()
	gate.open()
	got := d.WaitCount(t, pushes)
	t.Logf("all %d pushes delivered %s after the node resumed", pushes, time.Since(resumed).Round(time.Millisecond))
	for i, m := range got {
		if want := fmt.Sprint("while paused ", i); string(m.Payload) != want {
			t.Fatalf("message %d is %q, want %q", i, m.Payload, want)
		}
	}
	if time.Since(resumed) > 5*time.Second {
		t.Fatalf("delivered %s after the resume, want within 5 s", time.Since(resumed))
	}
}

// TestDurable_TakenOverEntriesPassOnToALiveNode: a node taking over a
// "dead" node's entries passes the targets it cannot deliver on to the
// node their route names when that node is alive (it had stalled, not
// died) and the route is still the connection the entry was for; a
// target whose device has since reconnected is left to its inbox.
func TestDurable_TakenOverEntriesPassOnToALiveNode(t *testing.T) {
	t.Parallel()
	srv := streamstest.Start(t)
	sc := streams.Config{}
	a := startDurable(t, srv, "a", sc)
	b := startDurable(t, srv, "b", sc)
	d := runDevice(t, deviceURL(a), "phone", client.Cursor{})
	store := streams.New(srv.Connect(t), sc)
	ctx := context.Background()

	key := inboxKey(testApp, "phone")
	msg := streams.Message{ID: "m-1", Payload: []byte("stranded"), Created: time.Now(), TTL: time.Hour, MaxLen: 100}
	appended, err := store.Append(ctx, msg, []string{key})
	if err != nil {
		t.Fatal(err)
	}
	ap := appended[0]
	if ap.Route.Node != "a" {
		t.Fatalf("route %+v: want node a", ap.Route)
	}
	rm := &entryMessage{id: msg.ID, payload: msg.Payload, created: uint64(msg.Created.UnixMilli())}
	stale := strandedTarget{msg: rm, target: entryTarget{device: key, connEpoch: ap.Route.Epoch - 1, inboxEpoch: ap.Epoch, seq: ap.Seq}}
	if err := b.durable.reroute(ctx, []strandedTarget{stale}); err != nil {
		t.Fatal(err)
	}
	if v, _ := metricValue(scrape(t, b), "pushd_takeover_forwarded_total"); v != "0" {
		t.Fatalf("a target for an older connection was passed on (forwarded %s)", v)
	}
	current := stale
	current.target.connEpoch = ap.Route.Epoch
	if err := b.durable.reroute(ctx, []strandedTarget{current}); err != nil {
		t.Fatal(err)
	}
	if got := clienttest.Payloads(d.WaitCount(t, 1)); got[0] != "stranded" {
		t.Fatalf("device got %v", got)
	}
	if v, _ := metricValue(scrape(t, b), "pushd_takeover_forwarded_total"); v != "1" {
		t.Fatalf("pushd_takeover_forwarded_total %q, want 1", v)
	}
}

// TestDurable_OnACluster runs part of this suite against a Redis Cluster
// of three primaries in every run; CI runs all of it there too
// (PUSHD_TEST_REDIS=cluster, README). Nodes "a" and "b" hash to
// different primaries (slots 15495 and 3300), so their delivery streams
// and heartbeats live apart.
func TestDurable_OnACluster(t *testing.T) {
	if testing.Short() {
		t.Skip("forms a cluster per subtest")
	}
	t.Parallel()
	for _, c := range []struct {
		name string
		test func(*testing.T, streamstest.Redis)
	}{
		{"OfflineStoreThenOrderedReplay", testOfflineStoreThenOrderedReplay},
		{"TwoNodesDeviceMoves", testTwoNodesDeviceMoves},
		{"DeadNodeDeliveriesClaimed", testDeadNodeDeliveriesClaimed},
	} {
		t.Run(c.name, func(t *testing.T) { c.test(t, streamstest.StartCluster(t)) })
	}
}
