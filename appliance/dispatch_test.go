package appliance

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/pushd/pushd/raftmeta"
	"github.com/pushd/pushd/streams"
)

func dispatchNode(t *testing.T, live []streams.NodeInfo, members map[string]raftmeta.Member) (*Node, *raftmeta.State) {
	t.Helper()
	n, err := New(testConfig(), Deps{})
	if err != nil {
		t.Fatal(err)
	}
	n.liveNodes.Store(&live)
	return n, &raftmeta.State{Members: members}
}

func TestPickNode_SpreadsByWeightAndAvoidsLoad(t *testing.T) {
	live := []streams.NodeInfo{{ID: "a", DeviceAddr: "ws://a"}, {ID: "b", DeviceAddr: "ws://b"}, {ID: "c", DeviceAddr: "ws://c"}}
	members := map[string]raftmeta.Member{"a": {ID: "a", Weight: 100}, "b": {ID: "b", Weight: 100}, "c": {ID: "c", Weight: 200}}
	n, st := dispatchNode(t, live, members)
	count := map[string]int{}
	const devices = 8000
	for i := 0; i < devices; i++ {
		info, ok := n.pickNode(st, fmt.Sprint("app/dev-", i), "")
		if !ok {
			t.Fatal("no node picked")
		}
		count[info.ID]++
	}
	// Equal loads: shares follow weights (1:1:2), within a few percent.
	for id, want := range map[string]float64{"a": 0.25, "b": 0.25, "c": 0.5} {
		if got := float64(count[id]) / devices; got < want-0.05 || got > want+0.05 {
			t.Fatalf("equal loads: share of %s = %.2f, want %.2f (%v)", id, got, want, count)
		}
	}
	// A device keeps its node while loads do not change.
	first, _ := n.pickNode(st, "app/sticky", "")
	for i := 0; i < 10; i++ {
		if again, _ := n.pickNode(st, "app/sticky", ""); again.ID != first.ID {
			t.Fatal("dispatch is not sticky for one device")
		}
	}
	// A node far over its share loses the devices it would otherwise get.
	live[2].Conns = 1_000_000
	n.liveNodes.Store(&live)
	count = map[string]int{}
	for i := 0; i < devices; i++ {
		info, _ := n.pickNode(st, fmt.Sprint("app/dev-", i), "")
		count[info.ID]++
	}
	if count["c"] > devices/10 {
		t.Fatalf("the overloaded node still got %d of %d devices", count["c"], devices)
	}
	// Draining, weightless, excluded and non-member nodes are never picked.
	members["a"] = raftmeta.Member{ID: "a", Weight: 100, Draining: true}
	members["b"] = raftmeta.Member{ID: "b", Weight: 0}
	live = append(live, streams.NodeInfo{ID: "stranger", DeviceAddr: "ws://s"})
	n.liveNodes.Store(&live)
	for i := 0; i < 100; i++ {
		if info, ok := n.pickNode(st, fmt.Sprint("app/dev-", i), ""); !ok || info.ID != "c" {
			t.Fatalf("picked %q (%v), want c", info.ID, ok)
		}
		if _, ok := n.pickNode(st, fmt.Sprint("app/dev-", i), "c"); ok {
			t.Fatal("picked a node with only the excluded one eligible")
		}
	}
}

// TestPickNode_SameAnswerOnEveryNode: two nodes (two processes' worth of
// state, as far as hashing goes) name the same node for every device.
func TestPickNode_SameAnswerOnEveryNode(t *testing.T) {
	live := []streams.NodeInfo{{ID: "a", DeviceAddr: "ws://a"}, {ID: "b", DeviceAddr: "ws://b"}, {ID: "c", DeviceAddr: "ws://c"}}
	members := map[string]raftmeta.Member{"a": {ID: "a", Weight: 100}, "b": {ID: "b", Weight: 100}, "c": {ID: "c", Weight: 100}}
	one, st := dispatchNode(t, live, members)
	other, _ := dispatchNode(t, live, members)
	for i := 0; i < 1000; i++ {
		device := fmt.Sprint("app/dev-", i)
		x, _ := one.pickNode(st, device, "")
		y, _ := other.pickNode(st, device, "")
		if x.ID != y.ID {
			t.Fatalf("%s: one node says %s, another %s", device, x.ID, y.ID)
		}
	}
	// The score is a fixed function: pin one value so that a change of
	// hash (which would move every device on upgrade) is deliberate.
	if got := rendezvousHash("app/dev-0", "a"); got != 0x6561cafa06045e55 {
		t.Fatalf("rendezvousHash(app/dev-0, a) = %#x: the dispatch hash changed", got)
	}
}

// TestPickNode_SkipsRefusingAndAvoidedNodes: a node whose heartbeat says
// it refuses devices is never named, and a node a device asks to avoid is
// named only when it is the last one left.
func TestPickNode_SkipsRefusingAndAvoidedNodes(t *testing.T) {
	live := []streams.NodeInfo{{ID: "a", DeviceAddr: "ws://a"}, {ID: "b", DeviceAddr: "ws://b", Refusing: "starting"}, {ID: "c", DeviceAddr: "ws://c"}}
	members := map[string]raftmeta.Member{"a": {ID: "a", Weight: 100}, "b": {ID: "b", Weight: 100}, "c": {ID: "c", Weight: 100}}
	n, st := dispatchNode(t, live, members)
	for i := 0; i < 200; i++ {
		info, ok := n.pickNode(st, fmt.Sprint("app/dev-", i), "")
		if !ok || info.ID == "b" {
			t.Fatalf("picked %q (%v): a starting node must not be named", info.ID, ok)
		}
	}
	if got := n.avoidedNode(st, "ws://c"); got != "c" {
		t.Fatalf("avoid=ws://c names node %q", got)
	}
	if got := n.avoidedNode(st, "a"); got != "a" {
		t.Fatalf("avoid=a names node %q", got)
	}
	if got := n.avoidedNode(st, "ws://elsewhere"); got != "" {
		t.Fatalf("an unknown URL names node %q", got)
	}
}

// TestDispatch_CORSForAllowedOrigins: a page on another origin (the
// JavaScript SDK's dispatchFrom) may read the answer when its origin may
// open a WebSocket; others get no CORS header, and native clients none.
func TestDispatch_CORSForAllowedOrigins(t *testing.T) {
	cfg := testConfig()
	cfg.AllowedOrigins = []string{"https://app.example.com"}
	n, err := New(cfg, Deps{})
	if err != nil {
		t.Fatal(err)
	}
	for origin, want := range map[string]string{"https://APP.example.com": "https://APP.example.com", "https://evil.example.com": "", "": ""} {
		r := httptest.NewRequest(http.MethodGet, "/v1/dispatch?app=a&device=d", nil)
		if origin != "" {
			r.Header.Set("Origin", origin)
		}
		w := httptest.NewRecorder()
		n.serveDispatch(w, r)
		if w.Code != http.StatusOK || w.Header().Get("Access-Control-Allow-Origin") != want {
			t.Errorf("Origin %q: HTTP %d, Access-Control-Allow-Origin %q, want %q", origin, w.Code, w.Header().Get("Access-Control-Allow-Origin"), want)
		}
	}
	n.cfg.AllowedOrigins = nil
	r := httptest.NewRequest(http.MethodGet, "/v1/dispatch?app=a&device=d", nil)
	r.Header.Set("Origin", "https://any.example.com")
	w := httptest.NewRecorder()
	n.serveDispatch(w, r)
	if got := w.Header().Get("Access-Control-Allow-Origin"); got != "https://any.example.com" {
		t.Errorf("no allowlist: Access-Control-Allow-Origin %q", got)
	}
}
