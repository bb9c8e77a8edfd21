package ctl

import (
	"github.com/urfave/cli/v2"
)

func nodesRemoveCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:      "remove",
		Usage:     "remove a member from Raft and the member list for good",
		ArgsUsage: "NODE",
		Description: "For a dead node or one retired for good. A reachable non-voter takes a removed voter's\n" +
			"place. Removing the leader makes it hand leadership on and leave; stop its pushd afterwards.",
		Flags:  adminFlags(),
		Action: func(c *cli.Context) error { return runNodesRemove(c, e) },
	}
}

func runNodesRemove(c *cli.Context, e *env) error {
	a, err := exactArgs(c, "NODE")
	if err != nil {
		return err
	}
	cl, f, err := adminSetup(c, e)
	if err != nil {
		return err
	}
	res, err := cl.RemoveNode(c.Context, a[0])
	if err != nil {
		return adminFailed("nodes remove "+a[0], err)
	}
	return writeApplied(e, f, res, "removed node "+res.Removed)
}
