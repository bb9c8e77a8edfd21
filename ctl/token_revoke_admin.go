package ctl

import (
	"github.com/urfave/cli/v2"
)

func tokenRevokeAdminCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:      "revoke-admin",
		Usage:     "revoke an admin API token (not the one making the call)",
		ArgsUsage: "ID",
		Flags:     adminFlags(),
		Action:    func(c *cli.Context) error { return runTokenRevokeAdmin(c, e) },
	}
}

func runTokenRevokeAdmin(c *cli.Context, e *env) error {
	a, err := exactArgs(c, "ID")
	if err != nil {
		return err
	}
	cl, f, err := adminSetup(c, e)
	if err != nil {
		return err
	}
	res, err := cl.RevokeAdminToken(c.Context, a[0])
	if err != nil {
		return adminFailed("token revoke-admin "+a[0], err)
	}
	return writeApplied(e, f, res, "admin token "+a[0]+" revoked")
}
