package ctl

import (
	"errors"
	"fmt"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/pushd/pushd/appliance/api"
)

func nodesWaitCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:      "wait",
		Usage:     "wait until a node is healthy: answering, ready, not draining or stopping, reaching Redis",
		ArgsUsage: "NODE",
		Description: "Asks the region's status every half second until NODE answers, takes devices (it is ready:\n" +
			"its metadata caught up; not draining or stopping; a full node counts) and reaches Redis.\n" +
			"Exits 0 then, 1 after --timeout. A rolling restart runs it after each node's restart.",
		Flags:  adminFlags(&cli.DurationFlag{Name: "timeout", Usage: "how long to wait", Value: 2 * time.Minute}),
		Action: func(c *cli.Context) error { return runNodesWait(c, e) },
	}
}

// nodeWaited is the JSON output of nodes wait.
type nodeWaited struct {
	Node        string  `json:"node"`
	Healthy     bool    `json:"healthy"`
	WaitedS     float64 `json:"waited_s"`
	RaftState   string  `json:"raft_state,omitempty"`
	Connections int64   `json:"connections"`
}

func runNodesWait(c *cli.Context, e *env) error {
	a, err := exactArgs(c, "NODE")
	if err != nil {
		return err
	}
	timeout := c.Duration("timeout")
	if timeout <= 0 {
		return usagef("--timeout %s: must be positive", timeout)
	}
	cl, f, err := adminSetup(c, e)
	if err != nil {
		return err
	}
	id := a[0]
	start := time.Now()
	why := "no answer from the region yet"
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		st, err := cl.Status(c.Context)
		var n *api.NodeStatus
		switch {
		case err != nil:
			var ae *api.APIError
			if errors.As(err, &ae) && ae.Status < 500 {
				return adminFailed("nodes wait "+id, err)
			}
			why = err.Error()
		default:
			for i := range st.Nodes {
				if st.Nodes[i].ID == id {
					n = &st.Nodes[i]
				}
			}
			if n == nil {
				return fmt.Errorf("nodes wait %s: not a member of the region", id)
			}
			why = unhealthy(n)
		}
		if why == "" {
			out := nodeWaited{Node: id, Healthy: true, WaitedS: time.Since(start).Seconds(), RaftState: n.RaftState, Connections: n.Connections}
			if f == formatJSON {
				return writeJSON(e.stdout, out)
			}
			_, err := fmt.Fprintf(e.stdout, "node %s healthy after %s: %s, redis up, %d devices\n", id,
				time.Since(start).Round(100*time.Millisecond), n.RaftState, n.Connections)
			return err
		}
		if time.Since(start) >= timeout {
			return fmt.Errorf("nodes wait %s: not healthy after %s: %s", id, timeout, why)
		}
		select {
		case <-c.Context.Done():
			return c.Context.Err()
		case <-tick.C:
		}
	}
}

// unhealthy says why a member is not healthy yet; "" when it is.
func unhealthy(n *api.NodeStatus) string {
	switch {
	case !n.Alive:
		return "it does not answer"
	case n.Refusing != "" && n.Refusing != "full":
		return "it is " + n.Refusing
	case n.Redis != "up":
		return "it does not reach Redis"
	}
	return ""
}
