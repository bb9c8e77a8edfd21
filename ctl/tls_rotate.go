package ctl

import (
	"fmt"

	"github.com/urfave/cli/v2"
)

func tlsRotateCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:  "rotate",
		Usage: "give a node a new key and certificate, used from its next connection on (no restart)",
		Description: "The node makes the new key itself; a node keeping the region CA's key signs the certificate,\n" +
			"for the node's current addresses. Connections already open keep the old certificate until they close.",
		ArgsUsage: "NODE",
		Flags:     adminFlags(&cli.IntFlag{Name: "days", Usage: "validity of the new certificate in days (0: 365)"}),
		Action:    func(c *cli.Context) error { return runTLSRotate(c, e) },
	}
}

func runTLSRotate(c *cli.Context, e *env) error {
	a, err := exactArgs(c, "NODE")
	if err != nil {
		return err
	}
	if err := nonNegative(c, "days"); err != nil {
		return err
	}
	cl, f, err := adminSetup(c, e)
	if err != nil {
		return err
	}
	res, err := cl.RotateCertificate(c.Context, a[0], c.Int("days"))
	if err != nil {
		return adminFailed("tls rotate "+a[0], err)
	}
	return writeApplied(e, f, res, fmt.Sprintf("node %s: new certificate %s (was %s), valid until %s, issued by %s; new connections use it",
		res.Node, res.Serial, res.PreviousSerial, timeCell(res.NotAfter), res.IssuedBy))
}
