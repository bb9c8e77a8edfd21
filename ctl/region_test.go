package ctl

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pushd/pushd/appliance"
	"github.com/pushd/pushd/internal/poll"
	"github.com/pushd/pushd/raftmeta"
	"github.com/pushd/pushd/raftmeta/raftmetatest"
	"github.com/pushd/pushd/streams"
	"github.com/pushd/pushd/streams/streamstest"
)

// testRegion is a pushd region in the test process: real Raft over
// loopback TCP (raftmetatest's fast timings), one real redis-server, and
// an appliance node with its admin API on each Raft node, registered in
// the member list as pushd registers itself.
type testRegion struct {
	raft  *raftmetatest.Cluster
	nodes []*appliance.Node
	// root is an admin-role token with the id "root".
	root string
}

func startTestRegion(t *testing.T, size int) *testRegion {
	t.Helper()
	if underRace {
		t.Skip("real nbio listeners trip the race detector inside nbio (see race_test.go)")
	}
	srv := streamstest.StartRedis(t)
	r := &testRegion{raft: raftmetatest.NewCluster(t, size)}
	var tok raftmeta.AdminToken
	r.root, tok = raftmeta.NewAdminToken("root", raftmeta.RoleAdmin)
	if _, err := r.raft.Apply(context.Background(), raftmeta.CreateAdminToken(tok)); err != nil {
		t.Fatal(err)
	}
	// Stop the nodes together: each takes about a second (a blocked
	// Redis stream read), and the test should not wait for them in turn.
	t.Cleanup(func() {
		var wg sync.WaitGroup
		for _, n := range r.nodes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				if err := n.Shutdown(ctx); err != nil {
					t.Errorf("shutdown %s: %v", n.ID(), err)
				}
			}()
		}
		wg.Wait()
	})
	for i := range size {
		r.startNode(t, i, srv)
	}
	// Every node must know every member's admin address before a test
	// asks it for status or writes through it.
	r.raft.WaitConverged(t)
	return r
}

// startNode starts node i and adds it to r.nodes, which the cleanup
// registered by startTestRegion stops.
func (r *testRegion) startNode(t *testing.T, i int, srv *streamstest.Server) {
	t.Helper()
	id := r.raft.Member(i).ID
	cfg := appliance.Config{
		NodeID:           id,
		WSAddr:           "127.0.0.1:0",
		TCPAddr:          "127.0.0.1:0",
		PushAddr:         "127.0.0.1:0",
		AdminAddr:        "127.0.0.1:0",
		HandshakeTimeout: 2 * time.Second,
		ConnectRate:      -1,
		DrainSpread:      100 * time.Millisecond,
	}
	n, err := appliance.New(cfg, appliance.Deps{Store: streams.New(srv.Client(t), streams.Config{}), Meta: r.raft.Store(i)})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	r.nodes = append(r.nodes, n)
	// Writes on a follower are forwarded to the leader's admin address,
	// and status asks every member's: register them as pushd does.
	var m raftmeta.Member
	poll.Until(t, 10*time.Second, func() error {
		var ok bool
		if m, ok = r.raft.Store(i).State().Members[id]; !ok {
			return fmt.Errorf("node %s has not caught up with its own member record", id)
		}
		return nil
	})
	a := n.Addrs()
	m.AdminAddr, m.PushAddr, m.DeviceAddr, m.TCPAddr = a.Admin, a.Push, "ws://"+a.WS+"/v1/ws", "tcp://"+a.TCP
	if _, err := r.raft.Apply(context.Background(), raftmeta.UpsertMember(m)); err != nil {
		t.Fatal(err)
	}
}

// env points pushctl at node i's admin API with token (none when "").
func (r *testRegion) env(i int, token string) map[string]string {
	e := map[string]string{"PUSHD_ADMIN_URL": "http://" + r.nodes[i].Addrs().Admin}
	if token != "" {
		e["PUSHD_ADMIN_TOKEN"] = token
	}
	return e
}

// as runs pushctl against node i with token.
func (r *testRegion) as(i int, token string) harness { return harness{env: r.env(i, token)} }

func (r *testRegion) leader(t *testing.T) int {
	t.Helper()
	i, _ := r.raft.WaitForLeader(t)
	return i
}

// tableRows splits a table's output into its cells, header first.
func tableRows(out string) [][]string {
	var rows [][]string
	for _, line := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		if line == "" {
			break
		}
		rows = append(rows, strings.Fields(line))
	}
	return rows
}

// kvRows reads the key-value block of a table output: the block after
// the first blank line when there is one, else the whole output.
func kvRows(out string) map[string]string {
	if _, after, ok := strings.Cut(out, "\n\n"); ok {
		out = after
	}
	kv := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		k, v, _ := strings.Cut(line, " ")
		kv[k] = strings.TrimSpace(v)
	}
	return kv
}
