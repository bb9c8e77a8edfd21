package appliance

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pushd/pushd/appliance/client"
	"github.com/pushd/pushd/appliance/wire"
	"github.com/pushd/pushd/internal/poll"
	"github.com/pushd/pushd/raftmeta"
	"github.com/pushd/pushd/raftmeta/raftmetatest"
	"github.com/pushd/pushd/streams"
	"github.com/pushd/pushd/streams/streamstest"
)

// region is a 3-node pushd region in one process: real Raft over TCP on
// loopback, one real redis-server, three appliance nodes.
type region struct {
	t      *testing.T
	srv    *streamstest.Server
	raft   *raftmetatest.Cluster
	nodes  []*Node
	admin  string // admin-role token
	viewer string // viewer-role token
}

func startRegion(t *testing.T, opts ...raftmetatest.Option) *region {
	t.Helper()
	if underRace {
		t.Skip("real nbio listeners trip the race detector inside nbio (see race_test.go)")
	}
	r := &region{t: t, srv: streamstest.StartRedis(t), raft: raftmetatest.NewCluster(t, 3, opts...)}
	ctx := context.Background()
	var at, vt raftmeta.AdminToken
	r.admin, at = raftmeta.NewAdminToken("root", raftmeta.RoleAdmin)
	r.viewer, vt = raftmeta.NewAdminToken("watcher", raftmeta.RoleViewer)
	_, apiKey := apiKeyFor(testAPIKey)
	for _, cmd := range []raftmeta.Command{
		raftmeta.CreateAdminToken(at), raftmeta.CreateAdminToken(vt),
		raftmeta.CreateApp(raftmeta.App{ID: testApp, Secrets: []raftmeta.Secret{{KeyID: "k1", Secret: testSecret}}, APIKeys: []raftmeta.APIKey{apiKey}}),
	} {
		if _, err := r.raft.Apply(ctx, cmd); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 3; i++ {
		r.nodes = append(r.nodes, r.startNode(i))
	}
	return r
}

func apiKeyFor(key string) (string, raftmeta.APIKey) {
	return key, raftmeta.APIKey{ID: "key-1", Hash: raftmeta.HashKey(key)}
}

// startNode starts the appliance node on raft node i and registers its
// addresses in the member list.
func (r *region) startNode(i int) *Node {
	cfg := testConfig()
	cfg.NodeID = r.raft.Member(i).ID
	cfg.Apps = nil
	cfg.PushAddr, cfg.AdminAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.DrainSpread = 200 * time.Millisecond
	n := startNode(r.t, cfg, Deps{Store: streams.New(r.srv.Client(r.t), streams.Config{NodeTTL: 2 * time.Second}), Meta: r.raft.Store(i)})
	var m raftmeta.Member
	poll.Until(r.t, 10*time.Second, func() error {
		var ok bool
		if m, ok = r.raft.Store(i).State().Members[cfg.NodeID]; !ok {
			return fmt.Errorf("node %s has not caught up with its own member record", cfg.NodeID)
		}
		return nil
	})
	a := n.Addrs()
	m.AdminAddr, m.PushAddr, m.DeviceAddr, m.TCPAddr, m.Weight = a.Admin, a.Push, n.advertisedWS(a), n.advertisedTCP(a), 100
	if _, err := r.raft.Apply(context.Background(), raftmeta.UpsertMember(m)); err != nil {
		r.t.Fatal(err)
	}
	return n
}

// adminDo calls a node's admin API.
func adminDo(t testing.TB, n *Node, method, path, tok string, body any) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, "http://"+n.Addrs().Admin+path, rd)
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, raw
}

func (r *region) leaderIndex() int {
	i, _ := r.raft.WaitForLeader(r.t)
	return i
}

func (r *region) follower() int { return (r.leaderIndex() + 1) % 3 }

// controlRecorder is an OnControl hook that keeps every CONTROL frame.
type controlRecorder chan wire.Control

func newControlRecorder() controlRecorder { return make(controlRecorder, 16) }

func (r controlRecorder) hook(c *client.Config) {
	c.OnControl = func(ctl wire.Control) { r <- ctl }
}

// next returns the next CONTROL frame, failing after timeout.
func (r controlRecorder) next(t *testing.T, who string) wire.Control {
	t.Helper()
	select {
	case c := <-r:
		return c
	case <-time.After(2 * time.Second):
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

// setDegrade posts a degrade policy (or, with priority "", degrade off)
// to node n's admin API.
func (r *region) setDegrade(t *testing.T, n *Node, body map[string]any) {
	t.Helper()
	path := "/v1/admin/degrade"
	if body["priority"] == nil {
		path += "/off"
	}
	if status, raw := adminDo(t, n, http.MethodPost, path, r.admin, body); status != http.StatusOK {
		t.Fatalf("POST %s %v: HTTP %d %s", path, body, status, raw)
	}
}

// TestRegion_DegradeReachesEveryNodeWithinASecond runs the operator's
// incident command, degrade --priority low, through a follower (forwarded
// to the leader): all three nodes enforce it within a second of the call
// in their push APIs and tell their devices, then it is lifted.
func TestRegion_DegradeReachesEveryNodeWithinASecond(t *testing.T) {
	r := startRegion(t)
	f := r.nodes[r.follower()]
	controls := []controlRecorder{newControlRecorder(), newControlRecorder()}
	runDevice(t, r.nodes[0].wsURL(), "phone", client.Cursor{}, controls[0].hook)
	runDevice(t, r.nodes[1].wsURL(), "tablet", client.Cursor{}, controls[1].hook, func(c *client.Config) {
		c.Businesses = []string{"chat"}
	})

	start := time.Now()
	r.setDegrade(t, f, map[string]any{"priority": "low", "reason": "surge drill"})
	// All three are polled together, so the wait is measured from the call
	// for every node, not from when the previous node converged.
	poll.Until(t, time.Second-time.Since(start), func() error {
		for _, n := range r.nodes {
			if n.degrade.Load() == nil {
				return fmt.Errorf("node %s not degraded", n.ID())
			}
		}
		return nil
	})
	t.Logf("degrade reached all 3 nodes %s after the admin call was sent", time.Since(start))
	for _, n := range r.nodes {
		code, _, raw := pushJSON(t, n, map[string]any{"devices": []string{"phone"}, "data": "low", "priority": "low"})
		if code != http.StatusServiceUnavailable || !strings.Contains(raw, `"degraded"`) || !strings.Contains(raw, "low-priority") {
			t.Fatalf("node %s: a low-priority push while degraded: HTTP %d %s", n.ID(), code, raw)
		}
		for _, p := range []string{"normal", "high"} {
			if code, _, raw := pushJSON(t, n, map[string]any{"devices": []string{"phone"}, "data": p, "priority": p}); code != http.StatusOK {
				t.Fatalf("node %s refused a %s-priority push: HTTP %d %s", n.ID(), p, code, raw)
			}
		}
	}
	for i, who := range []string{"phone", "tablet"} {
		if c := controls[i].next(t, who); c.Kind != wire.ControlDegraded || c.Priority != wire.PriorityLow || len(c.Businesses) != 0 || c.Reason != "surge drill" {
			t.Fatalf("%s got %+v", who, c)
		}
	}

	r.setDegrade(t, r.nodes[r.follower()], map[string]any{"reason": "drill over"})
	for i, who := range []string{"phone", "tablet"} {
		if c := controls[i].next(t, who); c.Kind != wire.ControlRestored {
			t.Fatalf("%s got %+v, want restored", who, c)
		}
	}
	for _, n := range r.nodes {
		poll.Until(t, time.Second, func() error {
			if code, _, raw := pushJSON(t, n, map[string]any{"devices": []string{"phone"}, "data": "low again", "priority": "low"}); code != http.StatusOK {
				return fmt.Errorf("node %s: HTTP %d %s", n.ID(), code, raw)
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
	r := startRegion(t)
	n := r.nodes[0]
	rec := map[string]controlRecorder{}
	for _, d := range []struct {
		id         string
		businesses []string
	}{{"ads-phone", []string{"ads"}}, {"chat-phone", []string{"chat"}}, {"any-phone", nil}} {
		rec[d.id] = newControlRecorder()
		runDevice(t, n.wsURL(), d.id, client.Cursor{}, rec[d.id].hook, func(c *client.Config) { c.Businesses = d.businesses })
	}
	push := func(business, priority string) int {
		body := map[string]any{"devices": []string{"any-phone"}, "data": "x", "priority": priority}
		if business != "" { // no business: the field left out ("" is refused)
			body["business"] = business
		}
		code, _, _ := pushJSON(t, n, body)
		return code
	}

	r.setDegrade(t, n, map[string]any{"priority": "normal", "businesses": []string{"ads"}, "reason": "ads storm"})
	poll.Until(t, time.Second, func() error {
		if n.degrade.Load() == nil {
			return errors.New("not degraded yet")
		}
		return nil
	})
	for _, c := range []struct {
		business, priority string
		want               int
	}{
		{"ads", "low", http.StatusServiceUnavailable}, {"ads", "normal", http.StatusServiceUnavailable},
		{"ads", "high", http.StatusOK}, {"chat", "low", http.StatusOK}, {"", "low", http.StatusOK},
	} {
		if got := push(c.business, c.priority); got != c.want {
			t.Errorf("push business %q priority %s: HTTP %d, want %d", c.business, c.priority, got, c.want)
		}
	}
	for _, who := range []string{"ads-phone", "any-phone"} {
		if c := rec[who].next(t, who); c.Kind != wire.ControlDegraded || c.Priority != wire.PriorityNormal || !slices.Equal(c.Businesses, []string{"ads"}) {
			t.Fatalf("%s got %+v", who, c)
		}
	}
	rec["chat-phone"].none(t, "chat-phone")

	r.setDegrade(t, n, map[string]any{"priority": "high", "businesses": []string{"chat"}, "reason": "chat storm"})
	if c := rec["ads-phone"].next(t, "ads-phone"); c.Kind != wire.ControlRestored {
		t.Fatalf("ads-phone got %+v, want restored", c)
	}
	for _, who := range []string{"chat-phone", "any-phone"} {
		if c := rec[who].next(t, who); c.Kind != wire.ControlDegraded || c.Priority != wire.PriorityHigh || !slices.Equal(c.Businesses, []string{"chat"}) {
			t.Fatalf("%s got %+v", who, c)
		}
	}
	if got := push("ads", "low"); got != http.StatusOK {
		t.Errorf("ads push after the policy moved to chat: HTTP %d", got)
	}
	if got := push("chat", "high"); got != http.StatusServiceUnavailable {
		t.Errorf("high-priority chat push under a high chat policy: HTTP %d", got)
	}

	r.setDegrade(t, n, map[string]any{"reason": "over"})
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
	r := startRegion(t)
	n := r.nodes[0]
	for _, m := range []struct{ data, priority string }{{"l1", "low"}, {"h1", "high"}, {"l2", "low"}} {
		if st := mustPush(t, n, []string{"late"}, m.data, map[string]any{"priority": m.priority}).Results[0].Status; st != "stored" {
			t.Fatalf("push %s to an offline device: %s", m.data, st)
		}
	}
	r.setDegrade(t, n, map[string]any{"priority": "low", "reason": "surge"})
	poll.Until(t, time.Second, func() error {
		if n.degrade.Load() == nil {
			return errors.New("not degraded yet")
		}
		return nil
	})

	var gaps []uint64
	var mu sync.Mutex
	d := runDevice(t, n.wsURL(), "late", client.Cursor{}, func(c *client.Config) {
		c.OnGap = func(from, to uint64) { mu.Lock(); gaps = append(gaps, from, to); mu.Unlock() }
	})
	d.waitCount(t, 1)
	poll.Until(t, 2*time.Second, func() error {
		if v, err := metricValue(scrape(t, n), "pushd_degrade_shed_total"); err != nil || v != "2" {
			return fmt.Errorf("pushd_degrade_shed_total %q (%v), want 2", v, err)
		}
		return nil
	})
	r.setDegrade(t, n, map[string]any{"reason": "over"})
	mustPush(t, n, []string{"late"}, "h2", map[string]any{"priority": "high"})
	got := payloads(d.waitCount(t, 2))
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
	r := startRegion(t)
	n := r.nodes[r.follower()]
	// The digest is taken once every node has applied the set-up, so only
	// the refused writes could change it.
	r.raft.WaitConverged(t)
	before := r.raft.Store(0).Digest()
	writes := []struct{ method, path string }{
		{http.MethodPost, "/v1/admin/degrade"}, {http.MethodPost, "/v1/admin/apps"},
		{http.MethodPost, "/v1/admin/tokens"}, {http.MethodPost, "/v1/admin/nodes/" + n.ID() + "/drain"},
		{http.MethodDelete, "/v1/admin/apps/" + testApp}, {http.MethodPost, "/v1/admin/tunables"},
	}
	for _, w := range writes {
		for _, c := range []struct {
			tok  string
			want int
		}{{"", 401}, {"not-a-token", 401}, {r.viewer, 403}} {
			if code, raw := adminDo(t, n, w.method, w.path, c.tok, map[string]any{}); code != c.want {
				t.Errorf("%s %s with %q: HTTP %d %s, want %d", w.method, w.path, c.tok, code, raw, c.want)
			}
		}
	}
	if code, raw := adminDo(t, n, http.MethodGet, "/v1/admin/status", r.viewer, nil); code != http.StatusOK {
		t.Fatalf("viewer status: HTTP %d %s", code, raw)
	}
	r.raft.WaitConverged(t)
	if after := r.raft.Store(0).Digest(); after != before {
		t.Fatal("refused writes changed the region's state")
	}

	// An election during a write makes it wait for the new leader. Should
	// the old leader have committed the app just before it lost its
	// leadership, the retry on the new one finds it applied, and the
	// credentials generated then cannot be shown again (409); the app
	// exists either way.
	code, raw := adminDo(t, n, http.MethodPost, "/v1/admin/apps", r.admin, map[string]any{"id": "shop", "max_payload": 2048})
	switch {
	case code == http.StatusConflict && strings.Contains(string(raw), "already applied"):
		t.Logf("create app met an election after it was committed: %s", raw)
	case code != http.StatusOK:
		t.Fatalf("create app: HTTP %d %s", code, raw)
	default:
		var created map[string]string
		_ = json.Unmarshal(raw, &created)
		if created["api_key"] == "" || created["secret_base64"] == "" {
			t.Fatalf("create app answer %s", raw)
		}
	}
	if code, raw := adminDo(t, n, http.MethodPost, "/v1/admin/nodes/"+n.ID()+"/weight", r.admin, map[string]any{"weight": 50}); code != http.StatusOK {
		t.Fatalf("weight: HTTP %d %s", code, raw)
	}
	code, raw = adminDo(t, r.nodes[0], http.MethodGet, "/v1/admin/audit", r.viewer, nil)
	if code != http.StatusOK {
		t.Fatalf("audit: HTTP %d %s", code, raw)
	}
	var audit struct{ Entries []raftmeta.AuditEntry }
	_ = json.Unmarshal(raw, &audit)
	var ops []string
	for _, e := range audit.Entries {
		if e.Actor == "root" {
			ops = append(ops, e.Op+" "+e.Target)
		}
	}
	if len(ops) != 2 || !strings.HasPrefix(ops[0], "app.create shop") || !strings.HasPrefix(ops[1], "member.weight") {
		t.Fatalf("audit entries by root: %v", ops)
	}
}

// TestRegion_AdminWritesWaitThroughAnElection kills the Raft leader (and
// its node) and at once sends an app create and a degrade through the two
// followers: each waits for the new leader and is applied there, once,
// where it used to be refused with 503 not_leader until the election was
// over.
func TestRegion_AdminWritesWaitThroughAnElection(t *testing.T) {
	r := startRegion(t)
	li := r.leaderIndex()
	a, b := r.nodes[(li+1)%3], r.nodes[(li+2)%3]
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	_ = r.nodes[li].Shutdown(ctx)
	cancel()
	r.raft.Kill(li)

	start := time.Now()
	type answer struct {
		code int
		raw  []byte
		took time.Duration
		err  error
	}
	var wg sync.WaitGroup
	var created, degraded answer
	for _, w := range []struct {
		n    *Node
		path string
		body map[string]any
		out  *answer
	}{
		{a, "/v1/admin/apps", map[string]any{"id": "shop"}, &created},
		{b, "/v1/admin/degrade", map[string]any{"priority": "low", "reason": "failover drill"}, &degraded},
	} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.out.code, w.out.raw, w.out.err = adminSend(w.n, http.MethodPost, w.path, r.admin, w.body)
			w.out.took = time.Since(start)
		}()
	}
	wg.Wait()
	for name, ans := range map[string]answer{"create app": created, "degrade": degraded} {
		if ans.err != nil || ans.code != http.StatusOK {
			t.Fatalf("%s during the election: HTTP %d %s (%v) after %s", name, ans.code, ans.raw, ans.err, ans.took)
		}
		t.Logf("%s sent right after the leader died: HTTP 200 after %s", name, ans.took.Round(time.Millisecond))
	}
	var app map[string]string
	if err := json.Unmarshal(created.raw, &app); err != nil || app["api_key"] == "" || app["secret_base64"] == "" {
		t.Fatalf("create app answer %s", created.raw)
	}

	nl := r.leaderIndex()
	if nl == li {
		t.Fatalf("node %d leads again although it was killed", li)
	}
	r.raft.WaitConverged(t)
	st := r.raft.Store(nl).State()
	if _, ok := st.App("shop"); !ok || !st.Degrade.Active {
		t.Fatalf("after the election: app shop recorded %v, degrade active %v", ok, st.Degrade.Active)
	}
	count := map[string]int{}
	for _, e := range st.Audit {
		if e.Actor == "root" {
			count[e.Op]++
		}
	}
	if count["app.create"] != 1 || count["degrade.set"] != 1 {
		t.Fatalf("audit entries by root: %v, want one app.create and one degrade.set", count)
	}
}

// adminSend is adminDo for any goroutine: it returns the transport error
// instead of failing the test.
func adminSend(n *Node, method, path, tok string, body any) (int, []byte, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return 0, nil, err
	}
	req, err := http.NewRequest(method, "http://"+n.Addrs().Admin+path, bytes.NewReader(b))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	return resp.StatusCode, raw, err
}

// TestRegion_DispatchAndDrain: dispatch spreads devices by load and skips
// a draining node; draining moves connected devices away.
func TestRegion_DispatchAndDrain(t *testing.T) {
	r := startRegion(t)
	dispatch := func(n *Node, device string) (dispatchAnswer, int) {
		resp, err := plainHTTP.Get("http://" + n.Addrs().WS + "/v1/dispatch?app=" + testApp + "&device=" + device)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var a dispatchAnswer
		_ = json.NewDecoder(resp.Body).Decode(&a)
		return a, resp.StatusCode
	}
	poll.Until(t, 5*time.Second, func() error {
		for _, n := range r.nodes {
			if live := n.liveNodes.Load(); live == nil || len(*live) != 3 {
				return fmt.Errorf("node %s has not seen every node's heartbeat yet", n.ID())
			}
		}
		return nil
	})
	picked := map[string]bool{}
	for i := 0; i < 30; i++ {
		a, code := dispatch(r.nodes[0], fmt.Sprint("dev-", i))
		if code != http.StatusOK || a.WSURL == "" {
			t.Fatalf("dispatch: HTTP %d %+v", code, a)
		}
		picked[a.Node] = true
	}
	if len(picked) < 2 {
		t.Fatalf("30 devices dispatched to %v only", picked)
	}

	drained := r.nodes[2]
	controls := make(chan wire.Control, 1)
	var mu sync.Mutex
	var nodesSeen []string
	runDevice(t, drained.wsURL(), "walker", client.Cursor{}, func(c *client.Config) {
		c.OnControl = func(ctl wire.Control) {
			if ctl.Kind == wire.ControlDrain {
				controls <- ctl
			}
		}
		c.OnWelcome = func(w client.Welcome) { mu.Lock(); nodesSeen = append(nodesSeen, w.Node); mu.Unlock() }
	})
	if code, raw := adminDo(t, r.nodes[0], http.MethodPost, "/v1/admin/nodes/"+drained.ID()+"/drain", r.admin, map[string]any{"draining": true}); code != http.StatusOK {
		t.Fatalf("drain: HTTP %d %s", code, raw)
	}
	select {
	case c := <-controls:
		if c.Addr == "" || strings.Contains(c.Addr, drained.Addrs().WS) {
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
	for i := 0; i < 30; i++ {
		if a, _ := dispatch(r.nodes[1], fmt.Sprint("dev-", i)); a.Node == drained.ID() {
			t.Fatalf("dispatch chose the draining node for dev-%d", i)
		}
	}
	// The SDK can start from the dispatch endpoint.
	d := runDevice(t, "", "newcomer", client.Cursor{}, func(c *client.Config) {
		c.Dispatch = client.DispatchFrom([]string{"http://" + drained.Addrs().WS}, testApp, "newcomer", true)
	})
	if w := d.lastWelcome(); w.Node == drained.ID() {
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
	r := startRegion(t, raftmetatest.WithDefaultTimings())
	li := r.leaderIndex()
	other := r.nodes[(li+1)%3]
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	_ = r.nodes[li].Shutdown(ctx)
	cancel()
	r.raft.Kill(li)

	// The write waits through the election (up to its 10 s deadline) and
	// is applied by the new leader: one attempt, no 503.
	start := time.Now()
	code, raw := adminDo(t, other, http.MethodPost, "/v1/admin/degrade", r.admin, map[string]any{"priority": "normal", "reason": "after failover"})
	if code != http.StatusOK {
		t.Fatalf("write during failover: HTTP %d %s after %s", code, raw, time.Since(start))
	}
	t.Logf("an admin write sent right after killing the leader waited %s for the new one (hashicorp/raft default timings)", time.Since(start).Round(time.Millisecond))

	r.raft.Restart(t, li)
	r.nodes[li] = r.startNode(li)
	r.raft.WaitConverged(t)
	poll.Until(t, 5*time.Second, func() error {
		if r.nodes[li].degrade.Load() == nil {
			return errors.New("restarted node does not enforce the degrade set while it was down")
		}
		return nil
	})
	code, raw = adminDo(t, r.nodes[li], http.MethodGet, "/v1/admin/status", r.viewer, nil)
	var st struct {
		Leader string
		Nodes  []nodeStatus
	}
	_ = json.Unmarshal(raw, &st)
	alive := 0
	for _, ns := range st.Nodes {
		if ns.Alive {
			alive++
		}
	}
	if code != http.StatusOK || alive != 3 || st.Leader == "" {
		t.Fatalf("status after restart: HTTP %d, %d alive, leader %q: %s", code, alive, st.Leader, raw)
	}

	// The leader leaves the region: removing it through a follower is
	// forwarded to it, and it hands leadership on.
	li = r.leaderIndex()
	leaving := r.nodes[li].ID()
	via := r.nodes[(li+1)%3]
	if code, raw := adminDo(t, via, http.MethodPost, "/v1/admin/nodes/"+leaving+"/remove", r.admin, nil); code != http.StatusOK {
		t.Fatalf("remove the leader: HTTP %d %s", code, raw)
	}
	poll.Until(t, 15*time.Second, func() error {
		st := via.meta.State()
		if _, ok := st.Members[leaving]; ok {
			return fmt.Errorf("%s is still a member", leaving)
		}
		if lm, ok := via.meta.LeaderMember(); !ok || lm.ID == leaving {
			return fmt.Errorf("no new leader yet (%q)", lm.ID)
		}
		return nil
	})
}

// TestRegion_TunablesApplyOnEveryNode sets the region's delivery settings
// through one node: every node then caps inboxes, bounds message TTLs and
// sizes the in-flight window by them, and a later set of one setting
// keeps the others.
func TestRegion_TunablesApplyOnEveryNode(t *testing.T) {
	r := startRegion(t)
	set := func(body map[string]any) {
		t.Helper()
		if code, raw := adminDo(t, r.nodes[r.follower()], http.MethodPost, "/v1/admin/tunables", r.admin, body); code != http.StatusOK {
			t.Fatalf("set tunables %v: HTTP %d %s", body, code, raw)
		}
	}
	set(map[string]any{"inbox_max_len": 3, "inbox_ttl": "1m"})
	set(map[string]any{"in_flight_window": 2})
	for _, n := range r.nodes {
		poll.Until(t, 2*time.Second, func() error {
			if tun := n.tun.Load(); tun.inboxMaxLen != 3 || tun.maxTTL != time.Minute || tun.window != 2 {
				return fmt.Errorf("node %s applies %+v", n.ID(), *tun)
			}
			return nil
		})
	}
	n := r.nodes[2]
	for i := range 5 {
		mustPush(t, n, []string{"offline"}, fmt.Sprint(i))
	}
	if st := deviceState(t, n, "offline"); st.InboxLen != 3 || st.Lost != 2 {
		t.Fatalf("inbox after 5 pushes under a cap of 3: %+v", st)
	}
	if code, _, raw := pushJSON(t, n, map[string]any{"devices": []string{"offline"}, "data": "x", "ttl": 61}); code != http.StatusBadRequest {
		t.Fatalf("a ttl over the region's 1m: HTTP %d %s", code, raw)
	}
	if code, raw := adminDo(t, n, http.MethodPost, "/v1/admin/tunables", r.admin, map[string]any{"inbox_ttl": "1000h"}); code != http.StatusBadRequest {
		t.Fatalf("an inbox ttl past the nodes' own: HTTP %d %s", code, raw)
	}

	// The window of 2: a device that does not ack has two messages in
	// flight and the rest wait in its inbox until it acks.
	c := openRaw(t, r.nodes[0].wsURL(), "slow-acker")
	for i := range 4 {
		mustPush(t, r.nodes[0], []string{"slow-acker"}, fmt.Sprint(i))
		_ = c.Send(&wire.Ping{}) // the test's heartbeat interval is 400 ms
	}
	s := r.nodes[0].hub.lookup(inboxKey(testApp, "slow-acker"))
	poll.Until(t, 2*time.Second, func() error {
		_ = c.Send(&wire.Ping{})
		s.mu.Lock()
		defer s.mu.Unlock()
		if len(s.window) != 2 || s.sent != 2 {
			return fmt.Errorf("in flight %d, sent up to seq %d", len(s.window), s.sent)
		}
		return nil
	})
	if err := c.Send(&wire.Ack{Seq: 2}); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 2*time.Second, func() error {
		_ = c.Send(&wire.Ping{})
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.sent != 4 {
			return fmt.Errorf("sent up to seq %d after the ack of 2", s.sent)
		}
		return nil
	})
}

// TestRegion_AppLimitsApplyOnEveryNode: an app's limits set through one
// node's admin API are enforced by every node's push API and handshake:
// the businesses it may use, its payload limit and its rate.
func TestRegion_AppLimitsApplyOnEveryNode(t *testing.T) {
	r := startRegion(t)
	code, raw := adminDo(t, r.nodes[r.follower()], http.MethodPost, "/v1/admin/apps/"+testApp+"/limits", r.admin,
		map[string]any{"max_payload": 8 << 10, "rate_per_sec": 1000, "burst": 5, "businesses": []string{"chat"}})
	if code != http.StatusOK {
		t.Fatalf("set limits: HTTP %d %s", code, raw)
	}
	for _, n := range r.nodes {
		poll.Until(t, 2*time.Second, func() error {
			code, _, raw := pushJSON(t, n, map[string]any{"devices": []string{"d"}, "data": "x", "business": "ads"})
			if code != http.StatusBadRequest {
				return fmt.Errorf("node %s: a push for a business not enabled: HTTP %d %s", n.ID(), code, raw)
			}
			return nil
		})
		big := strings.Repeat("x", 6<<10) // over the default 4 KiB, within the app's 8 KiB
		if code, _, raw := pushJSON(t, n, map[string]any{"devices": []string{"d"}, "data": big, "business": "chat"}); code != http.StatusOK {
			t.Fatalf("node %s: a 6 KiB push under an 8 KiB limit: HTTP %d %s", n.ID(), code, raw)
		}
		if code, _, raw := pushJSON(t, n, map[string]any{"devices": []string{"1", "2", "3", "4", "5", "6"}, "data": "x"}); code != http.StatusBadRequest {
			t.Fatalf("node %s: 6 devices against a burst of 5: HTTP %d %s", n.ID(), code, raw)
		}
	}
	c := dialRaw(t, r.nodes[0].wsURL())
	f := hello(t, c, &wire.Hello{Device: "d", Token: issue(t, "d"), Businesses: []string{"ads"}})
	if e, ok := f.(*wire.Error); !ok || e.Code != wire.CodeUnknownBusiness {
		t.Fatalf("HELLO naming a business not enabled: %#v", f)
	}
}
