package appliance

import (
	"fmt"
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
