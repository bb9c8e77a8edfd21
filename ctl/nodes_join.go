package ctl

import (
	"github.com/pushd/pushd/appliance/api"

	"net/url"

	"github.com/urfave/cli/v2"
)

func nodesJoinCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:  "join",
		Usage: "add a node to the region (pushd --join does this itself)",
		Description: "Raft keeps an odd number of voters, up to five: the second and fourth members wait as\n" +
			"non-voters until a third or fifth can vote with them, and members after the fifth voter\n" +
			"stay non-voters. Joining again with the same id updates the node's addresses.",
		Flags: adminFlags(
			&cli.StringFlag{Name: "id", Usage: "node id (required)"},
			&cli.StringFlag{Name: "raft-addr", Usage: "host:port of the node's Raft listener (required)"},
			&cli.StringFlag{Name: "admin-addr", Usage: "host:port of the node's admin API (required)"},
			&cli.StringFlag{Name: "device-addr", Usage: "WebSocket URL dispatch gives devices, e.g. ws://10.0.0.4:8080/v1/ws"},
			&cli.StringFlag{Name: "tcp-addr", Usage: "raw TCP URL dispatch gives devices, e.g. tcp://10.0.0.4:8081"},
			&cli.StringFlag{Name: "push-addr", Usage: "host:port of the node's push API"},
			&cli.IntFlag{Name: "weight", Usage: "share of new devices, 0-1000 (default 100)"},
		),
		Action: func(c *cli.Context) error { return runNodesJoin(c, e) },
	}
}

func runNodesJoin(c *cli.Context, e *env) error {
	if _, err := exactArgs(c); err != nil {
		return err
	}
	req := &api.JoinRequest{ID: c.String("id"), RaftAddr: c.String("raft-addr"), AdminAddr: c.String("admin-addr"),
		DeviceAddr: c.String("device-addr"), TCPAddr: c.String("tcp-addr"), PushAddr: c.String("push-addr")}
	for _, r := range []struct{ flag, v string }{{"id", req.ID}, {"raft-addr", req.RaftAddr}, {"admin-addr", req.AdminAddr}} {
		if r.v == "" {
			return usagef("missing --%s", r.flag)
		}
	}
	// Dispatch hands these URLs to devices as they are: catch a bare
	// host:port here rather than on the devices.
	if err := checkURL("device-addr", req.DeviceAddr, "ws", "wss"); err != nil {
		return err
	}
	if err := checkURL("tcp-addr", req.TCPAddr, "tcp", "tls"); err != nil {
		return err
	}
	if c.IsSet("weight") {
		w := c.Int("weight")
		if w < 0 || w > 1000 {
			return usagef("--weight %d: must be 0 to 1000", w)
		}
		req.Weight = &w
	}
	cl, f, err := adminSetup(c, e)
	if err != nil {
		return err
	}
	m, err := cl.JoinNode(c.Context, req)
	if err != nil {
		return adminFailed("nodes join "+req.ID, err)
	}
	if f == formatJSON {
		return writeJSON(e.stdout, m)
	}
	t := newTable(e.stdout)
	t.row("NODE", m.ID)
	t.row("VOTER", boolCell(m.Voter))
	t.row("WEIGHT", itoa(m.Weight))
	t.row("DRAINING", boolCell(m.Draining))
	t.row("RAFT_ADDR", m.RaftAddr)
	t.row("ADMIN_ADDR", m.AdminAddr)
	t.row("DEVICE_ADDR", m.DeviceAddr)
	t.row("TCP_ADDR", m.TCPAddr)
	t.row("PUSH_ADDR", m.PushAddr)
	return t.flush()
}

// checkURL checks an optional URL flag's scheme.
func checkURL(flag, v string, schemes ...string) error {
	if v == "" {
		return nil
	}
	u, err := url.Parse(v)
	if err == nil && u.Host != "" {
		for _, s := range schemes {
			if u.Scheme == s {
				return nil
			}
		}
	}
	return usagef("--%s %q: want a %s://host:port URL", flag, v, schemes[0])
}
