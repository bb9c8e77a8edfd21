package ctl

import (
	"github.com/urfave/cli/v2"
)

func nodesDrainCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:      "drain",
		Usage:     "stop sending new devices to a node and move its devices elsewhere (--off undoes it)",
		ArgsUsage: "NODE",
		Flags:     adminFlags(&cli.BoolFlag{Name: "off", Usage: "stop draining"}),
		Action:    func(c *cli.Context) error { return runNodesDrain(c, e) },
	}
}

func runNodesDrain(c *cli.Context, e *env) error {
	a, err := exactArgs(c, "NODE")
	if err != nil {
		return err
	}
	cl, f, err := adminSetup(c, e)
	if err != nil {
		return err
	}
	draining := !c.Bool("off")
	res, err := cl.DrainNode(c.Context, a[0], draining)
	if err != nil {
		return adminFailed("nodes drain "+a[0], err)
	}
	line := "node " + a[0] + " draining: dispatch sends it no new devices and its connected devices are moving to other nodes"
	if !draining {
		line = "node " + a[0] + " no longer draining"
	}
	return writeApplied(e, f, res, line)
}
