package ctl

import "github.com/urfave/cli/v2"

// nodesCommand groups the region membership subcommands.
func nodesCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:  "nodes",
		Usage: "the region's members: list, join, remove, drain, weight, wait, restart-plan",
		Subcommands: []*cli.Command{
			nodesListCommand(e),
			nodesJoinCommand(e),
			nodesRemoveCommand(e),
			nodesDrainCommand(e),
			nodesWeightCommand(e),
			nodesWaitCommand(e),
			nodesRestartPlanCommand(e),
		},
	}
}
