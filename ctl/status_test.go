package ctl

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pushd/pushd/appliance"
	"github.com/pushd/pushd/appliance/api"
	"github.com/pushd/pushd/appliance/appliancetest"
	"github.com/pushd/pushd/streams"
	"github.com/pushd/pushd/streams/streamstest"
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

// TestStatus_RedisTopology: status shows the Redis the node reaches, its
// durability, and a row per primary and replica, for a primary with a
// replica and for a cluster.
func TestStatus_RedisTopology(t *testing.T) {
	t.Parallel()
	t.Run("primary and replica", func(t *testing.T) {
		t.Parallel()
		var replica *streamstest.Server
		r := startTestRegionWith(t, 1, appliancetest.RegionOptions{
			Redis: func(t testing.TB) streamstest.Redis {
				p := streamstest.StartRedis(t)
				replica = streamstest.StartReplica(t, p)
				return p
			},
			Streams: streams.Config{WaitReplicas: 1, WaitTimeout: 300 * time.Millisecond},
			Config: func(_ int, cfg *appliance.Config) {
				cfg.RedisTopology, cfg.Durability = "single", "strict"
			},
		})
		out := r.as(0, r.Admin).run(t, "status").expect(t, exitOK).stdout
		kv := kvRows(out)
		if kv["TOPOLOGY"] != "single" || kv["DURABILITY"] != "strict: each push waits for 1 replica(s), up to 300ms" {
			t.Fatalf("redis block %v:\n%s", kv, out)
		}
		blocks := strings.Split(strings.TrimRight(out, "\n"), "\n\n")
		if len(blocks) != 3 {
			t.Fatalf("%d blocks, want nodes, settings and replication:\n%s", len(blocks), out)
		}
		rows := tableRows(blocks[2])
		primary := r.Redis.(*streamstest.Server).Addr()
		if want := "PRIMARY ROLE SLOTS APPENDFSYNC REPLICA STATE LAG BEHIND"; strings.Join(rows[0], " ") != want {
			t.Fatalf("header %q, want %q", rows[0], want)
		}
		if len(rows) != 2 || rows[1][0] != primary || rows[1][1] != "master" || rows[1][2] != "-" || rows[1][3] != "always" ||
			rows[1][4] != replica.Addr() || rows[1][5] != "online" {
			t.Fatalf("replication rows %q", rows)
		}
		st := decodeJSON[api.RegionStatus](t, r.as(0, r.Admin).run(t, "status", "-o", "json").expect(t, exitOK))
		rt := st.RedisTopology
		if rt == nil || rt.Topology != "single" || rt.WaitReplicas != 1 || rt.WaitTimeout != "300ms" || len(rt.Primaries) != 1 ||
			rt.Primaries[0].CPUSeconds <= 0 || len(rt.Primaries[0].Replicas) != 1 || rt.Primaries[0].Replicas[0].BehindBytes < 0 {
			t.Fatalf("redis_topology %+v", rt)
		}
	})
	t.Run("cluster", func(t *testing.T) {
		t.Parallel()
		r := startTestRegionWith(t, 1, appliancetest.RegionOptions{
			Redis: func(t testing.TB) streamstest.Redis { return streamstest.StartCluster(t) },
			Config: func(_ int, cfg *appliance.Config) {
				cfg.RedisTopology, cfg.Durability = "cluster", "fast"
			},
		})
		out := r.as(0, r.Admin).run(t, "status").expect(t, exitOK).stdout
		if kv := kvRows(out); kv["TOPOLOGY"] != "cluster" || kv["DURABILITY"] != "fast" {
			t.Fatalf("redis block %v:\n%s", kv, out)
		}
		blocks := strings.Split(strings.TrimRight(out, "\n"), "\n\n")
		rows := tableRows(blocks[len(blocks)-1])
		if len(rows) != 4 {
			t.Fatalf("%d primary rows, want 3:\n%s", len(rows)-1, out)
		}
		for i, slots := range []string{"0-5460", "5461-10922", "10923-16383"} {
			if rows[i+1][2] != slots || rows[i+1][4] != "-" {
				t.Fatalf("row %q, want slots %s and no replica", rows[i+1], slots)
			}
		}
	})
}
