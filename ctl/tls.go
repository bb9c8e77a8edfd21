package ctl

import "github.com/urfave/cli/v2"

// tlsCommand groups the region's certificates: the nodes' (Raft and the
// admin API run mutual TLS with them) and those of services such as
// Redis, all of the region's CA.
func tlsCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:  "tls",
		Usage: "the region's certificates: list the nodes', issue one, rotate a node's",
		Subcommands: []*cli.Command{
			tlsListCommand(e),
			tlsIssueCommand(e),
			tlsRotateCommand(e),
		},
	}
}
