package ctl

import (
	"github.com/urfave/cli/v2"
)

func appRevokeKeyCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:      "revoke-key",
		Usage:     "revoke one of an app's push API keys",
		ArgsUsage: "APP KEY_ID",
		Flags:     adminFlags(),
		Action:    func(c *cli.Context) error { return runAppRevokeKey(c, e) },
	}
}

func runAppRevokeKey(c *cli.Context, e *env) error {
	a, err := exactArgs(c, "APP", "KEY_ID")
	if err != nil {
		return err
	}
	cl, f, err := adminSetup(c, e)
	if err != nil {
		return err
	}
	res, err := cl.RevokeAPIKey(c.Context, a[0], a[1])
	if err != nil {
		return adminFailed("app revoke-key "+a[0]+" "+a[1], err)
	}
	return writeApplied(e, f, res, "app "+a[0]+": API key "+a[1]+" revoked")
}
