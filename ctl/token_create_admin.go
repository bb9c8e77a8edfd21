package ctl

import (
	"fmt"

	"github.com/urfave/cli/v2"
)

func tokenCreateAdminCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:      "create-admin",
		Usage:     "create an admin API token with a role; prints it, once",
		ArgsUsage: "ID",
		Description: "Roles: viewer reads; operator also degrades, drains and sets node weights; admin does\n" +
			"everything. ID names the token in the audit log. The region keeps only the token's hash.",
		Flags:  adminFlags(&cli.StringFlag{Name: "role", Usage: "viewer, operator or admin (required)"}),
		Action: func(c *cli.Context) error { return runTokenCreateAdmin(c, e) },
	}
}

func runTokenCreateAdmin(c *cli.Context, e *env) error {
	a, err := exactArgs(c, "ID")
	if err != nil {
		return err
	}
	switch role := c.String("role"); role {
	case "viewer", "operator", "admin":
	case "":
		return usagef("missing --role (viewer, operator or admin)")
	default:
		return usagef("--role %q: want viewer, operator or admin", role)
	}
	cl, f, err := adminSetup(c, e)
	if err != nil {
		return err
	}
	res, err := cl.CreateAdminToken(c.Context, a[0], c.String("role"))
	if err != nil {
		return adminFailed("token create-admin "+a[0], err)
	}
	// The table form is the token alone, so it can be captured:
	// PUSHD_ADMIN_TOKEN=$(pushctl token create-admin ID --role viewer).
	if f == formatJSON {
		err = writeJSON(e.stdout, res)
	} else {
		_, err = fmt.Fprintln(e.stdout, res.Token)
	}
	shownOnce(e, "the "+res.Role+" token "+res.ID+" is shown this once and never again: store it now")
	return err
}
