package ctl

import (
	"github.com/pushd/pushd/appliance/api"

	"github.com/urfave/cli/v2"
)

func nodesListCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:   "list",
		Usage:  "list the members and their addresses, weights and drain state",
		Flags:  adminFlags(),
		Action: func(c *cli.Context) error { return runNodesList(c, e) },
	}
}

// nodesListed is the JSON output of nodes list: the member records of the
// status answer, without what each node reported.
type nodesListed struct {
	Leader string       `json:"leader"`
	Nodes  []api.Member `json:"nodes"`
}

func runNodesList(c *cli.Context, e *env) error {
	if _, err := exactArgs(c); err != nil {
		return err
	}
	cl, f, err := adminSetup(c, e)
	if err != nil {
		return err
	}
	// The status endpoint is the one that lists members.
	st, err := cl.Status(c.Context)
	if err != nil {
		return adminFailed("nodes list", err)
	}
	out := nodesListed{Leader: st.Leader, Nodes: make([]api.Member, 0, len(st.Nodes))}
	for _, n := range st.Nodes {
		out.Nodes = append(out.Nodes, n.Member)
	}
	if f == formatJSON {
		return writeJSON(e.stdout, out)
	}
	t := newTable(e.stdout, "NODE", "LEADER", "VOTER", "WEIGHT", "DRAINING", "RAFT_ADDR", "ADMIN_ADDR", "DEVICE_ADDR", "TCP_ADDR", "PUSH_ADDR")
	for _, m := range out.Nodes {
		leader := ""
		if m.ID == out.Leader {
			leader = "*"
		}
		t.row(m.ID, leader, boolCell(m.Voter), itoa(m.Weight), boolCell(m.Draining), m.RaftAddr, m.AdminAddr, m.DeviceAddr, m.TCPAddr, m.PushAddr)
	}
	return t.flush()
}
