package appliance

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pushd/pushd/raftmeta"
	"github.com/pushd/pushd/raftmeta/raftmetatest"
)

// metaNode is a node on a one-node Raft region with an admin token, its
// admin API called in-process (no listener).
type metaNode struct {
	n     *Node
	raft  *raftmetatest.Cluster
	admin string
}

func newMetaNode(t *testing.T, id string, wrap func(Meta) Meta) *metaNode {
	t.Helper()
	c := raftmetatest.NewCluster(t, 1)
	tok, at := raftmeta.NewAdminToken("root", raftmeta.RoleAdmin)
	if _, err := c.Apply(context.Background(), raftmeta.CreateAdminToken(at)); err != nil {
		t.Fatal(err)
	}
	var meta Meta = c.Store(0)
	if wrap != nil {
		meta = wrap(meta)
	}
	cfg := testConfig()
	cfg.NodeID = id
	n, err := New(cfg, Deps{Meta: meta})
	if err != nil {
		t.Fatal(err)
	}
	return &metaNode{n: n, raft: c, admin: tok}
}

// call sends one admin request to the node's handler.
func (m *metaNode) call(method, path, body string, hdr map[string]string) apiAnswer {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+m.admin)
	req.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	m.n.adminMux().ServeHTTP(w, req)
	var e struct {
		Error struct{ Code string } `json:"error"`
	}
	_ = json.Unmarshal(w.Body.Bytes(), &e)
	return apiAnswer{status: w.Code, code: e.Error.Code, retryAfter: w.Header().Get("Retry-After"), body: w.Body.String()}
}

// TestAdminAPI_RefusesDuplicateKeys: an admin body with a key given twice
// (or a field matched only by case, or any field on a write that takes no
// body) is refused with 400 bad_json and changes nothing; before, the
// last key won.
func TestAdminAPI_RefusesDuplicateKeys(t *testing.T) {
	m := newMetaNode(t, "node0", nil)
	if a := m.call("POST", "/v1/admin/apps", `{"id":"shop"}`, nil); a.status != http.StatusOK {
		t.Fatalf("create app: HTTP %d %s", a.status, a.body)
	}
	before := m.raft.Store(0).Digest()
	for _, c := range []struct{ path, body string }{
		{"/v1/admin/degrade", `{"priority":"high","priority":"low","reason":"x"}`},
		{"/v1/admin/degrade", `{"priority":"low","reason":"x","Reason":"y"}`},
		{"/v1/admin/degrade/off", `{"reason":"a","reason":"b"}`},
		{"/v1/admin/apps", `{"id":"a","id":"b"}`},
		{"/v1/admin/apps", `{"id":"a","businesses":["x"],"businesses":["y"]}`},
		{"/v1/admin/apps/shop/limits", `{"max_payload":1024,"max_payload":65536}`},
		{"/v1/admin/tunables", `{"inbox_max_len":5,"inbox_max_len":6}`},
		{"/v1/admin/tokens", `{"id":"ops","role":"viewer","role":"admin"}`},
		{"/v1/admin/nodes/node0/drain", `{"draining":false,"draining":true}`},
		{"/v1/admin/nodes/node0/weight", `{"weight":1,"Weight":2}`},
		{"/v1/admin/nodes/join", `{"id":"n9","id":"n8","raft_addr":"127.0.0.1:1","admin_addr":"127.0.0.1:2"}`},
		{"/v1/admin/apps/shop/rotate-secret", `{"anything":1}`},
	} {
		if a := m.call("POST", c.path, c.body, nil); a.status != http.StatusBadRequest || a.code != "bad_json" {
			t.Errorf("POST %s %s: HTTP %d %s, want 400 bad_json", c.path, c.body, a.status, a.body)
		}
	}
	if after := m.raft.Store(0).Digest(); after != before {
		t.Fatal("refused writes changed the region's state")
	}
	for _, c := range []struct{ path, body string }{
		{"/v1/admin/degrade", `{"priority":"low","reason":"x"}`},
		{"/v1/admin/apps/shop/rotate-secret", `{}`},
		{"/v1/admin/apps/shop/api-keys", ``},
	} {
		if a := m.call("POST", c.path, c.body, nil); a.status != http.StatusOK {
			t.Errorf("POST %s %s: HTTP %d %s", c.path, c.body, a.status, a.body)
		}
	}
}

// scriptedMeta is a Meta whose leadership the test decides; state and
// commands go to the real Store it wraps.
type scriptedMeta struct {
	Meta
	mu      sync.Mutex
	leads   bool
	leader  raftmeta.Member
	known   bool
	onApply func() error // runs before each Apply; an error is returned instead
	subs    map[chan struct{}]struct{}
}

func (m *scriptedMeta) IsLeader() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.leads
}

func (m *scriptedMeta) LeaderMember() (raftmeta.Member, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.leader, m.known
}

func (m *scriptedMeta) Apply(ctx context.Context, cmd raftmeta.Command) (raftmeta.Result, error) {
	if m.onApply != nil {
		if err := m.onApply(); err != nil {
			return raftmeta.Result{}, err
		}
	}
	return m.Meta.Apply(ctx, cmd)
}

// Changes hears about the leadership the test sets.
func (m *scriptedMeta) Changes() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.subs == nil {
		m.subs = map[chan struct{}]struct{}{}
	}
	m.subs[ch] = struct{}{}
	return ch, func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		delete(m.subs, ch)
	}
}

// setLeader makes this node lead (leader.ID == "") or names another
// leader, and tells the subscribers.
func (m *scriptedMeta) setLeader(leads bool, leader raftmeta.Member) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.leads, m.leader, m.known = leads, leader, leader.ID != ""
	for ch := range m.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// forwardRecord is what a node received as a forwarded write.
type forwardRecord struct {
	node, requestID, chain, timeLeft string
}

// TestAdminAPI_WriteLosingLeadershipGoesToTheNextLeader: a write that
// fails on this node because it stopped leading in the middle
// (ErrLeadershipLost: the outcome is unknown) is sent to the next leader
// once there is one, with the same request id, and the caller gets that
// leader's answer instead of a 503.
func TestAdminAPI_WriteLosingLeadershipGoesToTheNextLeader(t *testing.T) {
	var mu sync.Mutex
	var got []forwardRecord
	next := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, forwardRecord{"next", r.Header.Get("X-Request-ID"), r.Header.Get(forwardedHeader), r.Header.Get(timeLeftHeader)})
		mu.Unlock()
		writeJSON(w, http.StatusOK, applied{Index: 42, Replayed: true})
	}))
	defer next.Close()

	var sm *scriptedMeta
	m := newMetaNode(t, "node0", func(real Meta) Meta {
		sm = &scriptedMeta{Meta: real, leads: true}
		return sm
	})
	sm.onApply = func() error {
		// This node steps down; who leads next is known a little later.
		sm.onApply = nil
		sm.setLeader(false, raftmeta.Member{})
		time.AfterFunc(100*time.Millisecond, func() {
			sm.setLeader(false, raftmeta.Member{ID: "node7", AdminAddr: next.Listener.Addr().String()})
		})
		return fmt.Errorf("apply degrade.set: %w", raftmeta.ErrLeadershipLost)
	}
	a := m.call("POST", "/v1/admin/degrade", `{"priority":"low","reason":"x"}`, map[string]string{"X-Request-ID": "req-1"})
	if a.status != http.StatusOK || !strings.Contains(a.body, `"replayed":true`) {
		t.Fatalf("write that lost leadership: HTTP %d %s, want the next leader's answer", a.status, a.body)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 || got[0].requestID != "req-1" || got[0].chain != "node0" {
		t.Fatalf("the next leader received %+v, want one request req-1 forwarded by node0", got)
	}
	if ms, err := strconv.Atoi(got[0].timeLeft); err != nil || ms <= 0 || ms > int(adminWriteTimeout/time.Millisecond) {
		t.Fatalf("forwarded with %s %q, want the milliseconds left of 10 s", timeLeftHeader, got[0].timeLeft)
	}
}

// TestAdminAPI_ForwardingIsBounded: nodes that each believe another one
// leads (a leader that keeps moving, or stale views) forward a write at
// most maxForwardHops times, and the write ends with 503 not_leader by its
// deadline rather than going round for ever.
func TestAdminAPI_ForwardingIsBounded(t *testing.T) {
	var mu sync.Mutex
	var got []forwardRecord
	ids := []string{"node0", "node1", "node2"}
	metas := make([]*scriptedMeta, 3)
	nodes := make([]*metaNode, 3)
	servers := make([]*httptest.Server, 3)
	for i, id := range ids {
		nodes[i] = newMetaNode(t, id, func(real Meta) Meta {
			metas[i] = &scriptedMeta{Meta: real}
			return metas[i]
		})
		mux := nodes[i].n.adminMux()
		servers[i] = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			got = append(got, forwardRecord{id, r.Header.Get("X-Request-ID"), r.Header.Get(forwardedHeader), r.Header.Get(timeLeftHeader)})
			mu.Unlock()
			mux.ServeHTTP(w, r)
		}))
		defer servers[i].Close()
	}
	// The nodes share one admin token, as a region's do.
	tok, at := raftmeta.NewAdminToken("ops", raftmeta.RoleAdmin)
	for i := range nodes {
		if _, err := nodes[i].raft.Apply(context.Background(), raftmeta.CreateAdminToken(at)); err != nil {
			t.Fatal(err)
		}
		nodes[i].admin = tok
	}
	// node0 thinks node1 leads, node1 thinks node2 does, node2 node0.
	for i := range metas {
		k := (i + 1) % 3
		metas[i].setLeader(false, raftmeta.Member{ID: ids[k], AdminAddr: servers[k].Listener.Addr().String()})
	}

	start := time.Now()
	a := nodes[0].call("POST", "/v1/admin/degrade", `{"priority":"low","reason":"x"}`,
		map[string]string{"X-Request-ID": "req-2", timeLeftHeader: "1500"})
	took := time.Since(start)
	if a.status != http.StatusServiceUnavailable || a.code != "not_leader" || a.retryAfter == "" {
		t.Fatalf("write with no leader anywhere: HTTP %d %s, want 503 not_leader with Retry-After", a.status, a.body)
	}
	if took > 3*time.Second {
		t.Fatalf("answered after %s; the deadline was 1.5 s", took)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) == 0 || len(got) > 60 {
		t.Fatalf("%d forwarded requests in 1.5 s", len(got))
	}
	for _, g := range got {
		hops := strings.Count(g.chain, ",") + 1
		if g.requestID != "req-2" || g.chain == "" || hops > maxForwardHops {
			t.Fatalf("a forward %+v: want request id req-2 and at most %d hops", g, maxForwardHops)
		}
		if ms, err := strconv.Atoi(g.timeLeft); err != nil || ms > 1500 {
			t.Fatalf("a forward carried %s %q, more than the caller's 1500", timeLeftHeader, g.timeLeft)
		}
	}
	t.Logf("%d forwarded requests, answered after %s: %s", len(got), took.Round(time.Millisecond), a.body)
}
