package ctl

import "github.com/urfave/cli/v2"

// appCommand groups the app (tenant) subcommands.
func appCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:  "app",
		Usage: "apps: create, list, rotate secrets, limits, API keys, delete",
		Subcommands: []*cli.Command{
			appCreateCommand(e),
			appListCommand(e),
			appRotateSecretCommand(e),
			appSetLimitsCommand(e),
			appClientGroupsCommand(e),
			appAddKeyCommand(e),
			appRevokeKeyCommand(e),
			appDeleteCommand(e),
		},
	}
}

// limitFlags are the flags of an app's limits, shared by app create and
// app set-limits. With keep, an absent flag keeps the app's value, and the
// help says so instead of showing a default.
func limitFlags(keep bool) []cli.Flag {
	unset := ""
	if keep {
		unset = "unchanged"
	}
	return []cli.Flag{
		&cli.IntFlag{Name: "max-payload", Usage: "push payload limit in bytes (0: the server's default)", DefaultText: unset},
		&cli.IntFlag{Name: "rate", Usage: "device-messages per second, per node (a push to 10 devices counts 10; 0: unlimited)", DefaultText: unset},
		&cli.IntFlag{Name: "burst", Usage: "device-messages allowed in one burst, and the most one push request may target (0: one second of --rate)", DefaultText: unset},
		&cli.StringSliceFlag{Name: "business", Usage: "business the app may push for (repeatable; none: any)", DefaultText: unset},
	}
}
