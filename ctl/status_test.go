package ctl

import (
	"github.com/pushd/pushd/appliance/api"

	"fmt"
	"strings"
	"testing"
)

// TestStatus_ThreeNodesOneLeader asks a real 3-node region, through a
// follower, for its status and its member list.
func TestStatus_ThreeNodesOneLeader(t *testing.T) {
	t.Parallel()
	r := startTestRegion(t, 3)
	li := r.leader(t)
	leaderID := r.Nodes[li].ID()
	via := (li + 1) % 3

	out := r.as(via, r.Admin).run(t, "status").expect(t, exitOK).stdout
	rows := tableRows(out)
	if want := "NODE LEADER RAFT LAST APPLIED CONNS REDIS ALIVE"; strings.Join(rows[0], " ") != want {
		t.Fatalf("header %q, want %q", rows[0], want)
	}
	if len(rows) != 4 {
		t.Fatalf("%d node rows, want 3:\n%s", len(rows)-1, out)
	}
	leaders := 0
	for i, row := range rows[1:] {
		if row[0] != r.Nodes[i].ID() {
			t.Errorf("row %d is %s, want %s (sorted by id)", i, row[0], r.Nodes[i].ID())
		}
		state := "Follower"
		if row[1] == "*" {
			leaders++
			state = "Leader"
			if row[0] != leaderID {
				t.Errorf("%s marked leader, the leader is %s", row[0], leaderID)
			}
		}
		if row[2] != state || row[3] == "-" || row[4] == "-" || row[5] != "0" || row[6] != "up" || row[7] != "true" {
			t.Errorf("row %q: want %s, indexes, 0 connections, redis up, alive", row, state)
		}
	}
	if leaders != 1 {
		t.Errorf("%d rows marked leader:\n%s", leaders, out)
	}
	kv := kvRows(out)
	if kv["REGION"] != "default" || kv["DEGRADE"] != "off" || kv["REDIS"] != "up" {
		t.Errorf("degrade and redis block %v:\n%s", kv, out)
	}

	st := decodeJSON[api.RegionStatus](t, r.as(via, r.Admin).run(t, "status", "-o", "json").expect(t, exitOK))
	if st.Leader != leaderID || len(st.Nodes) != 3 || st.Redis != "up" || st.Degrade.Active {
		t.Fatalf("status JSON %+v", st)
	}
	for _, n := range st.Nodes {
		if !n.Alive || n.RaftState == "" || n.LastIndex == 0 || n.AdminAddr == "" {
			t.Errorf("node %+v", n)
		}
	}

	out = r.as(via, r.Admin).run(t, "nodes", "list").expect(t, exitOK).stdout
	rows = tableRows(out)
	if want := "NODE LEADER VOTER WEIGHT DRAINING RAFT_ADDR ADMIN_ADDR DEVICE_ADDR TCP_ADDR PUSH_ADDR"; strings.Join(rows[0], " ") != want {
		t.Fatalf("header %q, want %q", rows[0], want)
	}
	for i, row := range rows[1:] {
		n := r.Nodes[i]
		marker := "-"
		if n.ID() == leaderID {
			marker = "*"
		}
		want := fmt.Sprintf("%s %s true 100 false %s %s %s %s %s", n.ID(), marker, r.Raft.Member(i).RaftAddr,
			strings.TrimPrefix(n.AdminURL, "http://"), n.DeviceURL(), n.TCPURL, strings.TrimPrefix(n.PushURL, "http://"))
		if got := strings.Join(row, " "); got != want {
			t.Errorf("row\n%s\nwant\n%s", got, want)
		}
	}
	list := decodeJSON[nodesListed](t, r.as(via, r.Admin).run(t, "nodes", "list", "--json").expect(t, exitOK))
	if list.Leader != leaderID || len(list.Nodes) != 3 || !list.Nodes[0].Voter {
		t.Fatalf("nodes list JSON %+v", list)
	}
}
