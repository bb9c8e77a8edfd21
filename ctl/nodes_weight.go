package ctl

import (
	"strconv"

	"github.com/urfave/cli/v2"
)

func nodesWeightCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:      "weight",
		Usage:     "set a node's share of new devices (0-1000; 100 is the default)",
		ArgsUsage: "NODE WEIGHT",
		Flags:     adminFlags(),
		Action:    func(c *cli.Context) error { return runNodesWeight(c, e) },
	}
}

func runNodesWeight(c *cli.Context, e *env) error {
	a, err := exactArgs(c, "NODE", "WEIGHT")
	if err != nil {
		return err
	}
	w, err := strconv.Atoi(a[1])
	if err != nil || w < 0 || w > 1000 {
		return usagef("WEIGHT %q: want a whole number from 0 to 1000", a[1])
	}
	cl, f, err := adminSetup(c, e)
	if err != nil {
		return err
	}
	res, err := cl.SetNodeWeight(c.Context, a[0], w)
	if err != nil {
		return adminFailed("nodes weight "+a[0], err)
	}
	return writeApplied(e, f, res, "node "+a[0]+" weight "+itoa(w))
}
