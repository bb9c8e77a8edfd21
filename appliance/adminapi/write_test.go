package adminapi_test

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

	"github.com/pushd/pushd/appliance"
	"github.com/pushd/pushd/appliance/adminapi"
	"github.com/pushd/pushd/appliance/api"
	"github.com/pushd/pushd/appliance/appliancetest"
	"github.com/pushd/pushd/raftmeta"
	"github.com/pushd/pushd/raftmeta/raftmetatest"
)

// soloNode is the admin API of a node on a one-node Raft region, over a
// Meta the test may wrap, served on loopback. It records the forwarded
// requests it receives.
type soloNode struct {
	id    string
	raft  *raftmetatest.Cluster
	admin string // an admin-role token
	url   string

	mu        sync.Mutex
	forwarded []forwardRecord
}

// forwardRecord is what a node received as a forwarded write.
type forwardRecord struct {
	node, requestID, chain, timeLeft string
}

func startSolo(t *testing.T, id string, wrap func(adminapi.Meta) adminapi.Meta) *soloNode {
	t.Helper()
	c := raftmetatest.NewCluster(t, 1)
	tok, at := raftmeta.NewAdminToken("root", raftmeta.RoleAdmin)
	if _, err := c.Apply(context.Background(), raftmeta.CreateAdminToken(at)); err != nil {
		t.Fatal(err)
	}
	var meta adminapi.Meta = c.Store(0)
	if wrap != nil {
		meta = wrap(meta)
	}
	cfg := appliancetest.TestConfig()
	cfg.NodeID = id
	node, err := appliance.New(cfg, appliance.Deps{Meta: meta})
	if err != nil {
		t.Fatal(err)
	}
	s := &soloNode{id: id, raft: c, admin: tok}
	h := adminapi.New(node, meta, adminapi.Options{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if chain := r.Header.Get(adminapi.ForwardedHeader); chain != "" {
			s.mu.Lock()
			s.forwarded = append(s.forwarded, forwardRecord{id, r.Header.Get("X-Request-ID"), chain, r.Header.Get(adminapi.TimeLeftHeader)})
			s.mu.Unlock()
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	s.url = srv.URL
	return s
}

// client calls the node's admin API with its admin token, each request
// carrying hdr too (an X-Request-ID, say).
func (s *soloNode) client(t testing.TB, hdr map[string]string) *api.Client {
	t.Helper()
	c, err := api.NewClient(s.url, s.admin, &http.Client{Timeout: 30 * time.Second, Transport: headerTransport(hdr)})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (s *soloNode) received() []forwardRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]forwardRecord(nil), s.forwarded...)
}

// headerTransport sets its headers on every request.
type headerTransport map[string]string

func (h headerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	for k, v := range h {
		r.Header.Set(k, v)
	}
	return http.DefaultTransport.RoundTrip(r)
}

// TestAdminAPI_RefusesDuplicateKeys: an admin body with a key given twice
// (or a field matched only by case, or any field on a write that takes no
// body) is refused with 400 bad_json and changes nothing; before, the
// last key won.
func TestAdminAPI_RefusesDuplicateKeys(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := startSolo(t, "node0", nil)
	cl := s.client(t, nil)
	if _, err := cl.CreateApp(ctx, "shop", api.AppLimits{}); err != nil {
		t.Fatalf("create app: %v", err)
	}
	before := s.raft.Store(0).Digest()
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
		err := cl.Do(ctx, http.MethodPost, c.path, nil, json.RawMessage(c.body), nil)
		if ae := apiError(err); ae == nil || ae.Status != http.StatusBadRequest || ae.Code != "bad_json" {
			t.Errorf("POST %s %s: %v, want 400 bad_json", c.path, c.body, err)
		}
	}
	if after := s.raft.Store(0).Digest(); after != before {
		t.Fatal("refused writes changed the region's state")
	}
	for _, c := range []struct {
		path string
		body any
	}{
		{"/v1/admin/degrade", json.RawMessage(`{"priority":"low","reason":"x"}`)},
		{"/v1/admin/apps/shop/rotate-secret", json.RawMessage(`{}`)},
		{"/v1/admin/apps/shop/api-keys", nil}, // no body at all
	} {
		if err := cl.Do(ctx, http.MethodPost, c.path, nil, c.body, nil); err != nil {
			t.Errorf("POST %s %s: %v", c.path, c.body, err)
		}
	}
}

// scriptedMeta is a Meta whose leadership the test decides; state and
// commands go to the real Store it wraps.
type scriptedMeta struct {
	adminapi.Meta
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
	m.mu.Lock()
	f := m.onApply
	m.mu.Unlock()
	if f != nil {
		if err := f(); err != nil {
			return raftmeta.Result{}, err
		}
	}
	return m.Meta.Apply(ctx, cmd)
}

// setOnApply has f run before each Apply (nil: none).
func (m *scriptedMeta) setOnApply(f func() error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.onApply = f
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

// TestAdminAPI_WriteLosingLeadershipGoesToTheNextLeader: a write that
// fails on this node because it stopped leading in the middle
// (ErrLeadershipLost: the outcome is unknown) is sent to the next leader
// once there is one, with the same request id, and the caller gets that
// leader's answer instead of a 503.
func TestAdminAPI_WriteLosingLeadershipGoesToTheNextLeader(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var got []forwardRecord
	next := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, forwardRecord{"next", r.Header.Get("X-Request-ID"), r.Header.Get(adminapi.ForwardedHeader), r.Header.Get(adminapi.TimeLeftHeader)})
		mu.Unlock()
		api.WriteJSON(w, http.StatusOK, api.Applied{Index: 42, Replayed: true})
	}))
	defer next.Close()

	var sm *scriptedMeta
	s := startSolo(t, "node0", func(real adminapi.Meta) adminapi.Meta {
		sm = &scriptedMeta{Meta: real, leads: true}
		return sm
	})
	sm.setOnApply(func() error {
		// This node steps down; who leads next is known a little later.
		sm.setOnApply(nil)
		sm.setLeader(false, raftmeta.Member{})
		time.AfterFunc(100*time.Millisecond, func() {
			sm.setLeader(false, raftmeta.Member{ID: "node7", AdminAddr: next.Listener.Addr().String()})
		})
		return fmt.Errorf("apply degrade.set: %w", raftmeta.ErrLeadershipLost)
	})
	var out api.Applied
	err := s.client(t, map[string]string{"X-Request-ID": "req-1"}).Do(context.Background(), http.MethodPost, "/v1/admin/degrade", nil,
		api.DegradeRequest{Priority: "low", Reason: "x"}, &out)
	if err != nil || !out.Replayed || out.Index != 42 {
		t.Fatalf("write that lost leadership: %+v, %v; want the next leader's answer", out, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 || got[0].requestID != "req-1" || got[0].chain != "node0" {
		t.Fatalf("the next leader received %+v, want one request req-1 forwarded by node0", got)
	}
	if ms, err := strconv.Atoi(got[0].timeLeft); err != nil || ms <= 0 || ms > int(adminapi.AdminWriteTimeout/time.Millisecond) {
		t.Fatalf("forwarded with %s %q, want the milliseconds left of %s", adminapi.TimeLeftHeader, got[0].timeLeft, adminapi.AdminWriteTimeout)
	}
}

// TestAdminAPI_ForwardingIsBounded: nodes that each believe another one
// leads (a leader that keeps moving, or stale views) forward a write at
// most MaxForwardHops times, and the write ends with 503 not_leader by its
// deadline rather than going round for ever.
func TestAdminAPI_ForwardingIsBounded(t *testing.T) {
	t.Parallel()
	ids := []string{"node0", "node1", "node2"}
	metas := make([]*scriptedMeta, 3)
	nodes := make([]*soloNode, 3)
	for i, id := range ids {
		nodes[i] = startSolo(t, id, func(real adminapi.Meta) adminapi.Meta {
			metas[i] = &scriptedMeta{Meta: real}
			return metas[i]
		})
	}
	// The nodes share one admin token, as a region's do.
	tok, at := raftmeta.NewAdminToken("ops", raftmeta.RoleAdmin)
	for _, n := range nodes {
		if _, err := n.raft.Apply(context.Background(), raftmeta.CreateAdminToken(at)); err != nil {
			t.Fatal(err)
		}
		n.admin = tok
	}
	// node0 thinks node1 leads, node1 thinks node2 does, node2 node0.
	for i := range metas {
		k := (i + 1) % 3
		metas[i].setLeader(false, raftmeta.Member{ID: ids[k], AdminAddr: strings.TrimPrefix(nodes[k].url, "http://")})
	}

	start := time.Now()
	cl := nodes[0].client(t, map[string]string{"X-Request-ID": "req-2", adminapi.TimeLeftHeader: "1500"})
	err := cl.Do(context.Background(), http.MethodPost, "/v1/admin/degrade", nil, api.DegradeRequest{Priority: "low", Reason: "x"}, nil)
	took := time.Since(start)
	if ae := apiError(err); ae == nil || ae.Status != http.StatusServiceUnavailable || ae.Code != "not_leader" || ae.RetryAfter == 0 {
		t.Fatalf("write with no leader anywhere: %v, want 503 not_leader with Retry-After", err)
	}
	if took > 3*time.Second {
		t.Fatalf("answered after %s; the deadline was 1.5 s", took)
	}
	var got []forwardRecord
	for _, n := range nodes {
		got = append(got, n.received()...)
	}
	if len(got) == 0 || len(got) > 60 {
		t.Fatalf("%d forwarded requests in 1.5 s", len(got))
	}
	for _, g := range got {
		hops := strings.Count(g.chain, ",") + 1
		if g.requestID != "req-2" || hops > adminapi.MaxForwardHops {
			t.Fatalf("a forward %+v: want request id req-2 and at most %d hops", g, adminapi.MaxForwardHops)
		}
		if ms, err := strconv.Atoi(g.timeLeft); err != nil || ms > 1500 {
			t.Fatalf("a forward carried %s %q, more than the caller's 1500", adminapi.TimeLeftHeader, g.timeLeft)
		}
	}
	t.Logf("%d forwarded requests, answered after %s: %v", len(got), took.Round(time.Millisecond), err)
}
