package adminapi_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pushd/pushd/appliance/api"
	"github.com/pushd/pushd/appliance/client"
	"github.com/pushd/pushd/appliance/client/clienttest"
	"github.com/pushd/pushd/appliance/wire"
	"github.com/pushd/pushd/internal/poll"
	"github.com/pushd/pushd/raftmeta/raftmetatest"
)

// TestRegion_DegradeReachesEveryNodeWithinASecond runs the operator's
// incident command, degrade --priority low, through a follower (forwarded
// to the leader): all three nodes enforce it within a second of the call
// in their push APIs and tell their devices, then it is lifted.
func TestRegion_DegradeReachesEveryNodeWithinASecond(t *testing.T) {
	t.Parallel()
	r := startRegion(t)
	f := r.Nodes[follower(t, r)]
	controls := []controlRecorder{newControlRecorder(), newControlRecorder()}
	runDevice(t, r.Nodes[0].DeviceURL(), "phone", controls[0].hook)
	runDevice(t, r.Nodes[1].DeviceURL(), "tablet", controls[1].hook, func(c *client.Config) {
		c.Businesses = []string{"chat"}
	})

	start := time.Now()
	setDegrade(t, r, f, api.DegradeRequest{Priority: "low", Reason: "surge drill"})
	// All three are polled together, so the wait is measured from the call
	// for every node, not from when the previous node converged.
	poll.Until(t, time.Second-time.Since(start), func() error {
		for _, n := range r.Nodes {
			if err := shedding(n, wire.PriorityLow, ""); err != nil {
				return err
			}
		}
		return nil
	})
	t.Logf("degrade reached all 3 nodes %s after the admin call was sent", time.Since(start))
	for _, n := range r.Nodes {
		_, err := push(t, n, api.PushRequest{Devices: []string{"phone"}, Data: api.Ptr("low"), Priority: api.Ptr("low")})
		if ae := apiError(err); ae == nil || ae.Status != http.StatusServiceUnavailable || ae.Code != "degraded" || !strings.Contains(ae.Message, "low-priority") {
			t.Fatalf("node %s: a low-priority push while degraded: %v", n.ID(), err)
		}
		for _, p := range []string{"normal", "high"} {
			if _, err := push(t, n, api.PushRequest{Devices: []string{"phone"}, Data: api.Ptr(p), Priority: api.Ptr(p)}); err != nil {
				t.Fatalf("node %s refused a %s-priority push: %v", n.ID(), p, err)
			}
		}
	}
	for i, who := range []string{"phone", "tablet"} {
		if c := controls[i].next(t, who); c.Kind != wire.ControlDegraded || c.Priority != wire.PriorityLow || len(c.Businesses) != 0 || c.Reason != "surge drill" {
			t.Fatalf("%s got %+v", who, c)
		}
	}

	setDegrade(t, r, r.Nodes[follower(t, r)], api.DegradeRequest{Reason: "drill over"})
	for i, who := range []string{"phone", "tablet"} {
		if c := controls[i].next(t, who); c.Kind != wire.ControlRestored {
			t.Fatalf("%s got %+v, want restored", who, c)
		}
	}
	for _, n := range r.Nodes {
		poll.Until(t, time.Second, func() error {
			if _, err := push(t, n, api.PushRequest{Devices: []string{"phone"}, Data: api.Ptr("low again"), Priority: api.Ptr("low")}); err != nil {
				return fmt.Errorf("node %s: %w", n.ID(), err)
			}
			return nil
		})
	}
}

// TestRegion_DegradeByBusiness: a policy naming businesses sheds only
// their pushes, up to its priority, and is announced only to the
// connections that carry them; moving it to another business restores
// the first one's devices.
func TestRegion_DegradeByBusiness(t *testing.T) {
	t.Parallel()
	r := startRegion(t)
	n := r.Nodes[0]
	rec := map[string]controlRecorder{}
	for _, d := range []struct {
		id         string
		businesses []string
	}{{"ads-phone", []string{"ads"}}, {"chat-phone", []string{"chat"}}, {"any-phone", nil}} {
		rec[d.id] = newControlRecorder()
		runDevice(t, n.DeviceURL(), d.id, rec[d.id].hook, func(c *client.Config) { c.Businesses = d.businesses })
	}
	pushStatus := func(business, priority string) int {
		req := api.PushRequest{Devices: []string{"any-phone"}, Priority: api.Ptr(priority)}
		if business != "" { // no business: the field left out ("" is refused)
			req.Business = api.Ptr(business)
		}
		_, err := push(t, n, req)
		return status(err)
	}

	setDegrade(t, r, n, api.DegradeRequest{Priority: "normal", Businesses: []string{"ads"}, Reason: "ads storm"})
	poll.Until(t, time.Second, func() error { return shedding(n, wire.PriorityNormal, "ads") })
	for _, c := range []struct {
		business, priority string
		want               int
	}{
		{"ads", "low", http.StatusServiceUnavailable}, {"ads", "normal", http.StatusServiceUnavailable},
		{"ads", "high", http.StatusOK}, {"chat", "low", http.StatusOK}, {"", "low", http.StatusOK},
	} {
		if got := pushStatus(c.business, c.priority); got != c.want {
			t.Errorf("push business %q priority %s: HTTP %d, want %d", c.business, c.priority, got, c.want)
		}
	}
	for _, who := range []string{"ads-phone", "any-phone"} {
		if c := rec[who].next(t, who); c.Kind != wire.ControlDegraded || c.Priority != wire.PriorityNormal || !slices.Equal(c.Businesses, []string{"ads"}) {
			t.Fatalf("%s got %+v", who, c)
		}
	}
	rec["chat-phone"].none(t, "chat-phone")

	setDegrade(t, r, n, api.DegradeRequest{Priority: "high", Businesses: []string{"chat"}, Reason: "chat storm"})
	if c := rec["ads-phone"].next(t, "ads-phone"); c.Kind != wire.ControlRestored {
		t.Fatalf("ads-phone got %+v, want restored", c)
	}
	for _, who := range []string{"chat-phone", "any-phone"} {
		if c := rec[who].next(t, who); c.Kind != wire.ControlDegraded || c.Priority != wire.PriorityHigh || !slices.Equal(c.Businesses, []string{"chat"}) {
			t.Fatalf("%s got %+v", who, c)
		}
	}
	if got := pushStatus("ads", "low"); got != http.StatusOK {
		t.Errorf("ads push after the policy moved to chat: HTTP %d", got)
	}
	if got := pushStatus("chat", "high"); got != http.StatusServiceUnavailable {
		t.Errorf("high-priority chat push under a high chat policy: HTTP %d", got)
	}

	setDegrade(t, r, n, api.DegradeRequest{Reason: "over"})
	for _, who := range []string{"chat-phone", "any-phone"} {
		if c := rec[who].next(t, who); c.Kind != wire.ControlRestored {
			t.Fatalf("%s got %+v, want restored", who, c)
		}
	}
	rec["ads-phone"].none(t, "ads-phone")
}

// TestRegion_DegradeDropsQueuedMessages: messages stored before degrade
// and still queued for a device are dropped, not sent, counted in metrics,
// and reported to the device as a gap; the rest flows in order, and the
// device's next ack trims what was dropped from its inbox.
func TestRegion_DegradeDropsQueuedMessages(t *testing.T) {
	t.Parallel()
	r := startRegion(t)
	n := r.Nodes[0]
	for _, m := range []struct{ data, priority string }{{"l1", "low"}, {"h1", "high"}, {"l2", "low"}} {
		if st := mustPush(t, n, []string{"late"}, m.data, priority(m.priority)).Results[0].Status; st != api.StatusStored {
			t.Fatalf("push %s to an offline device: %s", m.data, st)
		}
	}
	setDegrade(t, r, n, api.DegradeRequest{Priority: "low", Reason: "surge"})
	poll.Until(t, time.Second, func() error { return shedding(n, wire.PriorityLow, "") })

	var gaps []uint64
	var mu sync.Mutex
	d := runDevice(t, n.DeviceURL(), "late", func(c *client.Config) {
		c.OnGap = func(from, to uint64) { mu.Lock(); gaps = append(gaps, from, to); mu.Unlock() }
	})
	d.WaitCount(t, 1)
	poll.Until(t, 2*time.Second, func() error {
		if v, err := metricValue(scrape(t, n), "pushd_degrade_shed_total"); err != nil || v != "2" {
			return fmt.Errorf("pushd_degrade_shed_total %q (%v), want 2", v, err)
		}
		return nil
	})
	setDegrade(t, r, n, api.DegradeRequest{Reason: "over"})
	mustPush(t, n, []string{"late"}, "h2", priority("high"))
	got := clienttest.Payloads(d.WaitCount(t, 2))
	if !slices.Equal(got, []string{"h1", "h2"}) {
		t.Fatalf("device received %q, want h1 and h2 only", got)
	}
	mu.Lock()
	if !slices.Equal(gaps, []uint64{1, 1, 3, 3}) {
		t.Errorf("gaps reported %v, want seq 1 then seq 3", gaps)
	}
	mu.Unlock()
	poll.Until(t, 2*time.Second, func() error {
		if st := deviceState(t, n, "late"); st.Acked != 4 || st.InboxLen != 0 {
			return fmt.Errorf("device state %+v, want acked 4 and an empty inbox", st)
		}
		return nil
	})
}

// TestRegion_AdminAuthorizationAndAudit: writes without a token, with a
// wrong one or with a viewer token are refused and change nothing; every
// accepted write is in the audit log with its actor.
func TestRegion_AdminAuthorizationAndAudit(t *testing.T) {
	t.Parallel()
	r := startRegion(t)
	ctx := context.Background()
	n := r.Nodes[follower(t, r)]
	// The digest is taken once every node has applied the set-up, so only
	// the refused writes could change it.
	r.Raft.WaitConverged(t)
	before := r.Raft.Store(0).Digest()
	writes := []struct{ method, path string }{
		{http.MethodPost, "/v1/admin/degrade"}, {http.MethodPost, "/v1/admin/apps"},
		{http.MethodPost, "/v1/admin/tokens"}, {http.MethodPost, "/v1/admin/nodes/" + n.ID() + "/drain"},
		{http.MethodDelete, "/v1/admin/apps/" + testApp}, {http.MethodPost, "/v1/admin/tunables"},
	}
	for _, w := range writes {
		for _, c := range []struct {
			tok  string
			want int
		}{{"", 401}, {"not-a-token", 401}, {r.Viewer, 403}} {
			err := adminClient(t, n, c.tok).Do(ctx, w.method, w.path, nil, map[string]any{}, nil)
			if status(err) != c.want {
				t.Errorf("%s %s with %q: %v, want HTTP %d", w.method, w.path, c.tok, err, c.want)
			}
		}
	}
	if _, err := adminClient(t, n, r.Viewer).Status(ctx); err != nil {
		t.Fatalf("viewer status: %v", err)
	}
	r.Raft.WaitConverged(t)
	if after := r.Raft.Store(0).Digest(); after != before {
		t.Fatal("refused writes changed the region's state")
	}

	// An election during a write makes it wait for the new leader. Should
	// the old leader have committed the app just before it lost its
	// leadership, the retry on the new one finds it applied, and the
	// credentials generated then cannot be shown again (409); the app
	// exists either way.
	admin := adminClient(t, n, r.Admin)
	created, err := admin.CreateApp(ctx, "shop", api.AppLimits{MaxPayload: 2048})
	switch {
	case shownOnce(t, err): // the app exists all the same
	case err != nil:
		t.Fatalf("create app: %v", err)
	case created.APIKey == "" || created.SecretBase64 == "":
		t.Fatalf("create app answer %+v", created)
	}
	if _, err := admin.SetNodeWeight(ctx, n.ID(), 50); err != nil {
		t.Fatalf("weight: %v", err)
	}
	// Node 0 answers from its own replica, which may trail the leader by
	// the last write for a moment.
	poll.Until(t, 10*time.Second, func() error {
		audit, err := adminClient(t, r.Nodes[0], r.Viewer).Audit(ctx)
		if err != nil {
			return fmt.Errorf("audit: %w", err)
		}
		var ops []string
		for _, e := range audit {
			if e.Actor == "root" {
				ops = append(ops, e.Op+" "+e.Target)
			}
		}
		if len(ops) != 2 || !strings.HasPrefix(ops[0], "app.create shop") || !strings.HasPrefix(ops[1], "member.weight") {
			return fmt.Errorf("audit entries by root: %v", ops)
		}
		return nil
	})
}

// TestRegion_AdminWritesWaitThroughAnElection kills the Raft leader (and
// its node) and at once sends an app create and a degrade through the two
// followers: each waits for the new leader and is applied there, once,
// where it used to be refused with 503 not_leader until the election was
// over. The client sends each write once: a retry would fail the test.
func TestRegion_AdminWritesWaitThroughAnElection(t *testing.T) {
	t.Parallel()
	r := startRegion(t)
	ctx := context.Background()
	li := r.LeaderIndex(t)
	a, b := onceClient(t, r.Nodes[(li+1)%3], r.Admin), onceClient(t, r.Nodes[(li+2)%3], r.Admin)
	r.Kill(t, li)

	start := time.Now()
	var wg sync.WaitGroup
	var app *api.AppCreated
	var appErr, degradeErr error
	var appTook, degradeTook time.Duration
	wg.Go(func() {
		app, appErr = a.CreateApp(ctx, "shop", api.AppLimits{})
		appTook = time.Since(start)
	})
	wg.Go(func() {
		_, degradeErr = b.SetDegrade(ctx, &api.DegradeRequest{Priority: "low", Reason: "failover drill"})
		degradeTook = time.Since(start)
	})
	wg.Wait()
	if appErr != nil {
		t.Fatalf("create app during the election: %v after %s", appErr, appTook)
	}
	if degradeErr != nil {
		t.Fatalf("degrade during the election: %v after %s", degradeErr, degradeTook)
	}
	t.Logf("sent right after the leader died: create app answered 200 after %s, degrade after %s",
		appTook.Round(time.Millisecond), degradeTook.Round(time.Millisecond))
	if app.APIKey == "" || app.SecretBase64 == "" {
		t.Fatalf("create app answer %+v", app)
	}

	nl := r.LeaderIndex(t)
	if nl == li {
		t.Fatalf("node %d leads again although it was killed", li)
	}
	r.Raft.WaitConverged(t)
	viewer := adminClient(t, r.Nodes[nl], r.Viewer)
	apps, err := viewer.Apps(ctx)
	if err != nil {
		t.Fatal(err)
	}
	deg, err := viewer.Degrade(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(apps, func(a api.App) bool { return a.ID == "shop" }) || !deg.Active {
		t.Fatalf("after the election: apps %+v, degrade %+v", apps, deg)
	}
	audit, err := viewer.Audit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, e := range audit {
		if e.Actor == "root" {
			count[e.Op]++
		}
	}
	if count["app.create"] != 1 || count["degrade.set"] != 1 {
		t.Fatalf("audit entries by root: %v, want one app.create and one degrade.set", count)
	}
}

// TestRegion_DispatchAndDrain: dispatch spreads devices by load and skips
// a draining node; draining moves connected devices away.
func TestRegion_DispatchAndDrain(t *testing.T) {
	t.Parallel()
	r := startRegion(t)
	// Every node has seen every node's heartbeat once its dispatch names
	// all three: a node missing from its live list is never named.
	poll.Until(t, 5*time.Second, func() error {
		for _, n := range r.Nodes {
			named := map[string]bool{}
			for i := range 30 {
				if a, code := dispatch(t, n, fmt.Sprint("dev-", i)); code == http.StatusOK {
					named[a.Node] = true
				}
			}
			if len(named) != 3 {
				return fmt.Errorf("node %s dispatches to %v only", n.ID(), named)
			}
		}
		return nil
	})
	picked := map[string]bool{}
	for i := range 30 {
		a, code := dispatch(t, r.Nodes[0], fmt.Sprint("dev-", i))
		if code != http.StatusOK || a.WSURL == "" {
			t.Fatalf("dispatch: HTTP %d %+v", code, a)
		}
		picked[a.Node] = true
	}
	if len(picked) < 2 {
		t.Fatalf("30 devices dispatched to %v only", picked)
	}

	drained := r.Nodes[2]
	controls := make(chan wire.Control, 1)
	var mu sync.Mutex
	var nodesSeen []string
	runDevice(t, drained.DeviceURL(), "walker", func(c *client.Config) {
		c.OnControl = func(ctl wire.Control) {
			if ctl.Kind == wire.ControlDrain {
				controls <- ctl
			}
		}
		c.OnWelcome = func(w client.Welcome) { mu.Lock(); nodesSeen = append(nodesSeen, w.Node); mu.Unlock() }
	})
	if _, err := adminClient(t, r.Nodes[0], r.Admin).DrainNode(context.Background(), drained.ID(), true); err != nil {
		t.Fatalf("drain: %v", err)
	}
	select {
	case c := <-controls:
		if c.Addr == "" || strings.Contains(c.Addr, hostOf(t, drained.DeviceURL())) {
			t.Fatalf("drain sent the device to %q", c.Addr)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("device on the draining node got no CONTROL drain")
	}
	poll.Until(t, 10*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if last := nodesSeen[len(nodesSeen)-1]; last == drained.ID() {
			return fmt.Errorf("device still on %s", last)
		}
		return nil
	})
	for i := range 30 {
		if a, _ := dispatch(t, r.Nodes[1], fmt.Sprint("dev-", i)); a.Node == drained.ID() {
			t.Fatalf("dispatch chose the draining node for dev-%d", i)
		}
	}
	// The SDK can start from the dispatch endpoint.
	d := runDevice(t, "", "newcomer", func(c *client.Config) {
		c.Dispatch = client.DispatchFrom([]string{drained.HTTPURL}, testApp, "newcomer", true)
	})
	if w := d.LastWelcome(); w.Node == drained.ID() {
		t.Fatalf("a dispatched device landed on the draining node")
	}
}

// TestRegion_LeaderLossAndCatchUp kills the Raft leader (and its node)
// with hashicorp's default timings, measures how long admin writes are
// unavailable, then restarts it and checks it catches up.
func TestRegion_LeaderLossAndCatchUp(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for a Raft election with default timings")
	}
	t.Parallel()
	r := startRegion(t, raftmetatest.WithDefaultTimings())
	ctx := context.Background()
	li := r.LeaderIndex(t)
	other := onceClient(t, r.Nodes[(li+1)%3], r.Admin)
	r.Kill(t, li)

	// The write waits through the election (up to its 10 s deadline) and
	// is applied by the new leader: one attempt, no 503.
	start := time.Now()
	if _, err := other.SetDegrade(ctx, &api.DegradeRequest{Priority: "normal", Reason: "after failover"}); err != nil {
		t.Fatalf("write during failover: %v after %s", err, time.Since(start))
	}
	t.Logf("an admin write sent right after killing the leader waited %s for the new one (hashicorp/raft default timings)", time.Since(start).Round(time.Millisecond))

	restarted := r.Restart(t, li)
	r.Raft.WaitConverged(t)
	poll.Until(t, 5*time.Second, func() error {
		if err := shedding(restarted, wire.PriorityLow, ""); err != nil {
			return fmt.Errorf("restarted node does not enforce the degrade set while it was down: %w", err)
		}
		return nil
	})
	st, err := adminClient(t, restarted, r.Viewer).Status(ctx)
	if err != nil {
		t.Fatalf("status after restart: %v", err)
	}
	alive := 0
	for _, ns := range st.Nodes {
		if ns.Alive {
			alive++
		}
	}
	if alive != 3 || st.Leader == "" {
		t.Fatalf("status after restart: %d alive, leader %q: %+v", alive, st.Leader, st)
	}

	// The leader leaves the region: removing it through a follower is
	// forwarded to it, and it hands leadership on.
	li = r.LeaderIndex(t)
	leaving := r.Nodes[li].ID()
	via := r.Nodes[(li+1)%3]
	if _, err := onceClient(t, via, r.Admin).RemoveNode(ctx, leaving); err != nil {
		t.Fatalf("remove the leader: %v", err)
	}
	viewer := adminClient(t, via, r.Viewer)
	poll.Until(t, 15*time.Second, func() error {
		st, err := viewer.Status(ctx)
		if err != nil {
			return err
		}
		for _, ns := range st.Nodes {
			if ns.ID == leaving {
				return fmt.Errorf("%s is still a member", leaving)
			}
		}
		if st.Leader == "" || st.Leader == leaving {
			return fmt.Errorf("no new leader yet (%q)", st.Leader)
		}
		return nil
	})
}

// TestRegion_TunablesApplyOnEveryNode sets the region's delivery settings
// through one node: every node then caps inboxes, bounds message TTLs and
// sizes the in-flight window by them, and a later set of one setting
// keeps the others.
func TestRegion_TunablesApplyOnEveryNode(t *testing.T) {
	t.Parallel()
	r := startRegion(t)
	ctx := context.Background()
	admin := adminClient(t, r.Nodes[follower(t, r)], r.Admin)
	for _, tun := range []api.Tunables{{InboxMaxLen: 3, InboxTTL: "1m"}, {InFlightWindow: 2}} {
		if _, err := admin.SetTunables(ctx, &tun); err != nil {
			t.Fatalf("set tunables %+v: %v", tun, err)
		}
	}
	for _, n := range r.Nodes {
		cl := adminClient(t, n, r.Viewer)
		poll.Until(t, 2*time.Second, func() error {
			tun, err := cl.Tunables(ctx)
			if err != nil {
				return err
			}
			if tun.InboxMaxLen != 3 || tun.InboxTTL != time.Minute.String() || tun.InFlightWindow != 2 {
				return fmt.Errorf("node %s applies %+v", n.ID(), *tun)
			}
			return nil
		})
	}
	n := r.Nodes[2]
	for i := range 5 {
		mustPush(t, n, []string{"offline"}, fmt.Sprint(i))
	}
	if st := deviceState(t, n, "offline"); st.InboxLen != 3 || st.Lost != 2 {
		t.Fatalf("inbox after 5 pushes under a cap of 3: %+v", st)
	}
	if _, err := push(t, n, api.PushRequest{Devices: []string{"offline"}, TTL: api.Ptr[int64](61)}); status(err) != http.StatusBadRequest {
		t.Fatalf("a ttl over the region's 1m: %v, want HTTP 400", err)
	}
	if _, err := adminClient(t, n, r.Admin).SetTunables(ctx, &api.Tunables{InboxTTL: "1000h"}); status(err) != http.StatusBadRequest {
		t.Fatalf("an inbox ttl past the nodes' own: %v, want HTTP 400", err)
	}

	// The window of 2: a device that does not ack is sent two messages
	// and the rest wait in its inbox until it acks. The node answers a
	// PING on the connection's one queue, behind every PUSH queued before
	// it: a PONG to a PING sent after the pushes answered closes what
	// they sent.
	c := dialRaw(t, r.Nodes[0].DeviceURL())
	if f := hello(t, c, &wire.Hello{Device: "slow-acker", Token: issue(t, "slow-acker")}); f.Type() != wire.TypeWelcome {
		t.Fatalf("answer to HELLO: %#v", f)
	}
	seen := map[uint64]bool{}
	ping := uint64(0)
	// roundTrip sends a PING (the test's heartbeat interval is 400 ms)
	// and records the PUSHes that come before its PONG.
	roundTrip := func() {
		t.Helper()
		ping++
		if err := c.Send(&wire.Ping{Time: ping}); err != nil {
			t.Fatal(err)
		}
		for {
			f, err := c.Read(5 * time.Second)
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			pong := false
			record := func(f wire.Frame) error {
				switch f := f.(type) {
				case *wire.Push:
					seen[f.Seq] = true
				case *wire.Pong:
					pong = pong || f.Time == ping
				}
				return nil
			}
			if b, ok := f.(*wire.Batch); ok {
				_ = b.Each(1<<22, record)
			} else {
				_ = record(f)
			}
			if pong {
				return
			}
		}
	}
	for i := range 4 {
		mustPush(t, r.Nodes[0], []string{"slow-acker"}, fmt.Sprint(i))
		roundTrip()
	}
	if len(seen) != 2 || !seen[1] || !seen[2] {
		t.Fatalf("sent seqs %v with a window of 2 and no ack, want 1 and 2", seen)
	}
	if err := c.Send(&wire.Ack{Seq: 2}); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 2*time.Second, func() error {
		roundTrip()
		if !seen[3] || !seen[4] {
			return fmt.Errorf("sent seqs %v after the ack of 2", seen)
		}
		return nil
	})
}

// TestRegion_AppLimitsApplyOnEveryNode: an app's limits set through one
// node's admin API are enforced by every node's push API and handshake:
// the businesses it may use, its payload limit and its rate.
func TestRegion_AppLimitsApplyOnEveryNode(t *testing.T) {
	t.Parallel()
	r := startRegion(t)
	limits := api.AppLimits{MaxPayload: 8 << 10, RatePerSec: 1000, Burst: 5, Businesses: []string{"chat"}}
	if _, err := adminClient(t, r.Nodes[follower(t, r)], r.Admin).SetAppLimits(context.Background(), testApp, limits); err != nil {
		t.Fatalf("set limits: %v", err)
	}
	for _, n := range r.Nodes {
		poll.Until(t, 2*time.Second, func() error {
			if _, err := push(t, n, api.PushRequest{Devices: []string{"d"}, Business: api.Ptr("ads")}); status(err) != http.StatusBadRequest {
				return fmt.Errorf("node %s: a push for a business not enabled: %v", n.ID(), err)
			}
			return nil
		})
		big := strings.Repeat("x", 6<<10) // over the default 4 KiB, within the app's 8 KiB
		if _, err := push(t, n, api.PushRequest{Devices: []string{"d"}, Data: api.Ptr(big), Business: api.Ptr("chat")}); err != nil {
			t.Fatalf("node %s: a 6 KiB push under an 8 KiB limit: %v", n.ID(), err)
		}
		if _, err := push(t, n, api.PushRequest{Devices: []string{"1", "2", "3", "4", "5", "6"}}); status(err) != http.StatusBadRequest {
			t.Fatalf("node %s: 6 devices against a burst of 5: %v, want HTTP 400", n.ID(), err)
		}
	}
	c := dialRaw(t, r.Nodes[0].DeviceURL())
	f := hello(t, c, &wire.Hello{Device: "d", Token: issue(t, "d"), Businesses: []string{"ads"}})
	if e, ok := f.(*wire.Error); !ok || e.Code != wire.CodeUnknownBusiness {
		t.Fatalf("HELLO naming a business not enabled: %#v", f)
	}
}

// TestRegion_NewAppUsableAtOnceOnEveryNode: an app created through the
// leader is usable on the other nodes the moment the create answered,
// although they apply it a little later: its API key is not refused 401
// and its devices are not refused unknown_app.
func TestRegion_NewAppUsableAtOnceOnEveryNode(t *testing.T) {
	t.Parallel()
	r := startRegion(t)
	li := r.LeaderIndex(t)
	admin := adminClient(t, r.Nodes[li], r.Admin)
	pusher, entry := r.Nodes[(li+1)%3], r.Nodes[(li+2)%3]
	for i := range 10 {
		id := fmt.Sprint("fresh-", i)
		app, err := admin.CreateApp(context.Background(), id, api.AppLimits{})
		if shownOnce(t, err) {
			continue // its credentials are lost; the next app is tested
		}
		if err != nil {
			t.Fatalf("create app: %v", err)
		}
		// The device first, on one follower; the push on the other.
		secret, err := base64.StdEncoding.DecodeString(app.SecretBase64)
		if err != nil {
			t.Fatal(err)
		}
		c := dialRaw(t, entry.DeviceURL())
		if f := hello(t, c, &wire.Hello{App: id, Device: "phone", Token: issueFor(t, id, "phone", app.KeyID, secret)}); f.Type() != wire.TypeWelcome {
			t.Fatalf("app %s, a device on a follower right after the create: %#v", id, f)
		}
		_ = c.Close()
		req := api.PushRequest{App: api.Ptr(id), Devices: []string{"phone"}, Data: api.Ptr("hi")}
		if _, err := pushClient(t, pusher, app.APIKey).Push(context.Background(), &req); err != nil {
			t.Fatalf("app %s, a push on a follower right after the create: %v", id, err)
		}
	}
}

// TestRegion_NewAdminTokenAcceptedAtOnceOnEveryNode: an admin token
// created through the leader is accepted by the other nodes the moment
// the create answered, and an unknown one is still refused 401.
func TestRegion_NewAdminTokenAcceptedAtOnceOnEveryNode(t *testing.T) {
	t.Parallel()
	r := startRegion(t)
	ctx := context.Background()
	li := r.LeaderIndex(t)
	admin := adminClient(t, r.Nodes[li], r.Admin)
	other := r.Nodes[(li+1)%3]
	for i := range 10 {
		created, err := admin.CreateAdminToken(ctx, fmt.Sprint("ops-", i), "viewer")
		if shownOnce(t, err) {
			continue // the token is lost; the next one is tested
		}
		if err != nil {
			t.Fatalf("create token: %v", err)
		}
		if _, err := adminClient(t, other, created.Token).Degrade(ctx); err != nil {
			t.Fatalf("token %d on a follower right after its create: %v", i, err)
		}
	}
	if _, err := adminClient(t, other, "no-such-token").Degrade(ctx); status(err) != http.StatusUnauthorized {
		t.Fatalf("an unknown token: %v, want HTTP 401", err)
	}
}
