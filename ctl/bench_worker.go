package ctl

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/pushd/pushd/ctl/load"
)

// benchWorkerCommand is a bench worker: pushctl re-executed by bench
// connect or bench push to hold a share of the devices, driven in JSON
// lines on stdin and stdout (see package load).
func benchWorkerCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:   "worker",
		Usage:  "internal: a bench worker process, driven over stdin/stdout by bench connect or bench push",
		Hidden: true,
		Action: func(c *cli.Context) error {
			if err := load.Work(c.Context, e.stdin, e.stdout, e.stderr); err != nil {
				return fmt.Errorf("bench worker: %w", err)
			}
			return nil
		},
	}
}
