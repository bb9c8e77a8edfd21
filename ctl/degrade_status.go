package ctl

import (
	"github.com/urfave/cli/v2"
)

func degradeStatusCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:   "status",
		Usage:  "show the degrade policy",
		Flags:  adminFlags(),
		Action: func(c *cli.Context) error { return runDegradeStatus(c, e) },
	}
}

func runDegradeStatus(c *cli.Context, e *env) error {
	if _, err := exactArgs(c); err != nil {
		return err
	}
	if err := degradeParentFlags(c); err != nil {
		return err
	}
	cl, f, err := adminSetup(c, e)
	if err != nil {
		return err
	}
	d, err := cl.Degrade(c.Context)
	if err != nil {
		return adminFailed("degrade status", err)
	}
	if f == formatJSON {
		return writeJSON(e.stdout, d)
	}
	t := newTable(e.stdout)
	degradeRows(t, *d)
	return t.flush()
}
