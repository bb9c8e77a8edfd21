package ctl

import (
	"fmt"
	"net"
	"slices"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/pushd/pushd/appliance/api"
)

const defaultRestartCommand = "ssh {host} sudo systemctl restart pushd"

func nodesRestartPlanCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:  "restart-plan",
		Usage: "print a rolling restart of the region: one node at a time, the Raft leader last",
		Description: "Prints a shell script that restarts every member in turn (--command, {host} being the host\n" +
			"of its admin address and {node} its id) and runs 'pushctl nodes wait' after each, so the next\n" +
			"node restarts only once the region sees the last one healthy. Followers go first, by id, the\n" +
			"leader last: the region changes leader once. Each pushd drains on SIGTERM (its devices move\n" +
			"to the others in paced batches) and hands Raft leadership on; systemctl restart returns once\n" +
			"the new process told systemd it is ready. Refuses (exit 1) while a member is unhealthy:\n" +
			"restarting another would risk the Raft majority. Run it with: pushctl nodes restart-plan | sh",
		Flags: adminFlags(&cli.StringFlag{Name: "command", Usage: "how to restart one node; {host} and {node} are replaced",
			Value: defaultRestartCommand}),
		Action: func(c *cli.Context) error { return runNodesRestartPlan(c, e) },
	}
}

// restartPlan is the JSON output of nodes restart-plan.
type restartPlan struct {
	Leader string        `json:"leader"`
	Steps  []restartStep `json:"steps"`
}

type restartStep struct {
	Node        string `json:"node"`
	Host        string `json:"host"`
	RaftState   string `json:"raft_state"`
	Connections int64  `json:"connections"`
	Restart     string `json:"restart"`
	Wait        string `json:"wait"`
}

func runNodesRestartPlan(c *cli.Context, e *env) error {
	if _, err := exactArgs(c); err != nil {
		return err
	}
	tmpl := strings.TrimSpace(c.String("command"))
	if tmpl == "" {
		return usagef("--command is empty: say how to restart one node, e.g. %q", defaultRestartCommand)
	}
	cl, f, err := adminSetup(c, e)
	if err != nil {
		return err
	}
	st, err := cl.Status(c.Context)
	if err != nil {
		return adminFailed("nodes restart-plan", err)
	}
	if st.Leader == "" {
		return fmt.Errorf("nodes restart-plan: the region has no Raft leader right now; restart nothing until it has one")
	}
	nodes := slices.Clone(st.Nodes)
	for i := range nodes {
		if why := unhealthy(&nodes[i]); why != "" {
			return fmt.Errorf("nodes restart-plan: node %s is not healthy (%s): bring it back, or remove it, before restarting another", nodes[i].ID, why)
		}
	}
	// Followers by id, then the leader.
	slices.SortStableFunc(nodes, func(a, b api.NodeStatus) int {
		switch {
		case a.ID == st.Leader:
			return 1
		case b.ID == st.Leader:
			return -1
		}
		return strings.Compare(a.ID, b.ID)
	})
	plan := restartPlan{Leader: st.Leader, Steps: []restartStep{}}
	for _, n := range nodes {
		host, _, err := net.SplitHostPort(n.AdminAddr)
		if err != nil {
			host = n.AdminAddr
		}
		cmd := strings.NewReplacer("{host}", host, "{node}", n.ID).Replace(tmpl)
		plan.Steps = append(plan.Steps, restartStep{Node: n.ID, Host: host, RaftState: n.RaftState, Connections: n.Connections,
			Restart: cmd, Wait: "pushctl nodes wait " + n.ID + " --timeout 2m"})
	}
	if f == formatJSON {
		return writeJSON(e.stdout, plan)
	}
	w := e.stdout
	fmt.Fprintf(w, "#!/bin/sh\n# Rolling restart of the region's %d nodes, one at a time, the Raft leader (%s) last.\n", len(plan.Steps), st.Leader)
	fmt.Fprintln(w, "# Each pushd sends its devices to the others in paced batches when it stops, and hands Raft")
	fmt.Fprintln(w, "# leadership on; 'pushctl nodes wait' holds the next step until the region sees it healthy.")
	fmt.Fprintln(w, "# The wait steps read pushctl's settings from the environment or its config file.")
	fmt.Fprintln(w, "set -e")
	for i, s := range plan.Steps {
		fmt.Fprintf(w, "\n# %d/%d %s: %s, %d devices\n%s\n%s\n", i+1, len(plan.Steps), s.Node, s.RaftState, s.Connections, s.Restart, s.Wait)
	}
	return nil
}
