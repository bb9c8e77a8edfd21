package ctl

import (
	"github.com/urfave/cli/v2"
)

func degradeOffCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:   "off",
		Usage:  "end degrade: pushes flow again and devices are told (CONTROL restored)",
		Flags:  adminFlags(&cli.StringFlag{Name: "reason", Usage: "why, for the audit log"}),
		Action: func(c *cli.Context) error { return runDegradeOff(c, e) },
	}
}

func runDegradeOff(c *cli.Context, e *env) error {
	if _, err := exactArgs(c); err != nil {
		return err
	}
	if err := degradeParentFlags(c, "reason"); err != nil {
		return err
	}
	// --reason may come before "off" as well (`degrade --reason x off`).
	reason, _ := lookupString(c, "reason")
	cl, f, err := adminSetup(c, e)
	if err != nil {
		return err
	}
	res, err := cl.DegradeOff(c.Context, reason)
	if err != nil {
		return adminFailed("degrade off", err)
	}
	return writeApplied(e, f, res, "degrade off")
}
