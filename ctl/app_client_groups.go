package ctl

import (
	"fmt"

	"github.com/urfave/cli/v2"
)

func appClientGroupsCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:      "set-client-groups",
		Usage:     "allow or deny an app's devices their own JOIN and LEAVE of groups",
		ArgsUsage: "APP allow|deny",
		Description: "allow (every app's default): devices may JOIN and LEAVE groups for their connection.\n" +
			"deny: they are answered join_refused, and the app's groups are its business's alone\n" +
			"(pushctl group add, POST /v1/groups/{group}/members).",
		Flags:  adminFlags(),
		Action: func(c *cli.Context) error { return runAppClientGroups(c, e) },
	}
}

func runAppClientGroups(c *cli.Context, e *env) error {
	a, err := exactArgs(c, "APP", "allow|deny")
	if err != nil {
		return err
	}
	var allow bool
	switch a[1] {
	case "allow":
		allow = true
	case "deny":
	default:
		return usagef("%q: want allow or deny", a[1])
	}
	cl, f, err := adminSetup(c, e)
	if err != nil {
		return err
	}
	res, err := cl.SetAppClientGroups(c.Context, a[0], allow)
	if err != nil {
		return adminFailed("app set-client-groups "+a[0], err)
	}
	what := "devices may JOIN and LEAVE groups"
	if !allow {
		what = "devices' JOIN and LEAVE refused: its groups are its business's"
	}
	return writeApplied(e, f, res, fmt.Sprintf("app %s: %s", a[0], what))
}
