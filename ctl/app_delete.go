package ctl

import (
	"github.com/urfave/cli/v2"
)

func appDeleteCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:      "delete",
		Usage:     "delete an app for good (needs --yes)",
		ArgsUsage: "APP",
		Flags:     adminFlags(&cli.BoolFlag{Name: "yes", Usage: "confirm the deletion"}),
		Action:    func(c *cli.Context) error { return runAppDelete(c, e) },
	}
}

func runAppDelete(c *cli.Context, e *env) error {
	a, err := exactArgs(c, "APP")
	if err != nil {
		return err
	}
	if !c.Bool("yes") {
		return usagef("app delete %s removes the app with its secrets and API keys for good: its devices and business servers are refused from then on; add --yes to confirm", a[0])
	}
	cl, f, err := adminSetup(c, e)
	if err != nil {
		return err
	}
	res, err := cl.DeleteApp(c.Context, a[0])
	if err != nil {
		return adminFailed("app delete "+a[0], err)
	}
	return writeApplied(e, f, res, "app "+a[0]+" deleted")
}
