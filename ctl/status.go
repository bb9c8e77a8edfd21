package ctl

import (
	"fmt"
	"strconv"

	"github.com/urfave/cli/v2"

	"github.com/pushd/pushd/appliance/api"
)

func statusCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:  "status",
		Usage: "show the region: members, Raft state, connections, degrade, Redis",
		Description: "The node asked (--admin-url) asks every member for its own state; a member that does\n" +
			"not answer within a second is listed with ALIVE false. LEADER marks the Raft leader.\n" +
			"Then the Redis that node reaches: its topology (single, sentinel, cluster), the durability\n" +
			"mode, and a row per primary and replica: the primary's slots (cluster) and appendfsync, each\n" +
			"replica's state, its lag (seconds since its last acknowledgement) and the bytes it is behind.",
		Flags:  adminFlags(),
		Action: func(c *cli.Context) error { return runStatus(c, e) },
	}
}

func runStatus(c *cli.Context, e *env) error {
	if _, err := exactArgs(c); err != nil {
		return err
	}
	cl, f, err := adminSetup(c, e)
	if err != nil {
		return err
	}
	st, err := cl.Status(c.Context)
	if err != nil {
		return adminFailed("status", err)
	}
	if f == formatJSON {
		return writeJSON(e.stdout, st)
	}
	t := newTable(e.stdout, "NODE", "LEADER", "RAFT", "LAST", "APPLIED", "CONNS", "REDIS", "ALIVE")
	for _, n := range st.Nodes {
		leader := ""
		if n.ID == st.Leader {
			leader = "*"
		}
		if !n.Alive {
			t.row(n.ID, leader, "", "", "", "", "", "false")
			continue
		}
		t.row(n.ID, leader, n.RaftState, strconv.FormatUint(n.LastIndex, 10), strconv.FormatUint(n.AppliedIndex, 10),
			strconv.FormatInt(n.Connections, 10), n.Redis, "true")
	}
	if err := t.flush(); err != nil {
		return err
	}
	fmt.Fprintln(e.stdout)
	kv := newTable(e.stdout)
	kv.row("REGION", st.Region)
	degradeRows(kv, st.Degrade)
	kv.row("REDIS", st.Redis)
	rt := st.RedisTopology
	if rt != nil {
		kv.row("TOPOLOGY", rt.Topology)
		kv.row("DURABILITY", durabilityCell(rt))
		if rt.Error != "" {
			kv.row("REDIS_ERROR", rt.Error)
		}
	}
	if err := kv.flush(); err != nil {
		return err
	}
	for _, n := range st.Nodes {
		if n.Alive && n.Region != st.Region {
			fmt.Fprintf(e.stderr, "pushctl status: node %s says it is in region %q, not %q: give every node of a region the same --region\n",
				n.ID, n.Region, st.Region)
		}
	}
	if rt == nil || len(rt.Primaries) == 0 {
		return nil
	}
	fmt.Fprintln(e.stdout)
	rep := newTable(e.stdout, "PRIMARY", "ROLE", "SLOTS", "APPENDFSYNC", "REPLICA", "STATE", "LAG", "BEHIND")
	for _, p := range rt.Primaries {
		if len(p.Replicas) == 0 {
			rep.row(p.Addr, p.Role, p.Slots, p.AppendFsync, "", "", "", "")
		}
		for _, r := range p.Replicas {
			rep.row(p.Addr, p.Role, p.Slots, p.AppendFsync, r.Addr, r.State,
				strconv.FormatInt(r.LagSeconds, 10)+"s", strconv.FormatInt(r.BehindBytes, 10))
		}
	}
	return rep.flush()
}

// durabilityCell says what a push answered stored promises.
func durabilityCell(rt *api.RedisTopology) string {
	if rt.WaitReplicas == 0 {
		return rt.Durability
	}
	return fmt.Sprintf("%s: each push waits for %d replica(s), up to %s", rt.Durability, rt.WaitReplicas, rt.WaitTimeout)
}
