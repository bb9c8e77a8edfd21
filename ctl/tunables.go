package ctl

import "github.com/urfave/cli/v2"

// tunablesCommand groups the delivery settings subcommands.
func tunablesCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:        "tunables",
		Usage:       "region-wide delivery settings: show, set",
		Subcommands: []*cli.Command{tunablesShowCommand(e), tunablesSetCommand(e)},
	}
}
