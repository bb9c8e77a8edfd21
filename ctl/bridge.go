package ctl

import "github.com/urfave/cli/v2"

// bridgeCommand groups the commands about the Kafka bridge between
// regions.
func bridgeCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:        "bridge",
		Usage:       "the Kafka bridge between regions: status",
		Subcommands: []*cli.Command{bridgeStatusCommand(e)},
	}
}
