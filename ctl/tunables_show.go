package ctl

import (
	"strconv"

	"github.com/urfave/cli/v2"
)

func tunablesShowCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:  "show",
		Usage: "show the delivery settings in force on the node asked",
		Description: "What the node behind --admin-url applies now: the region-wide values set with\n" +
			"'tunables set', else the node's own configuration.",
		Flags:  adminFlags(),
		Action: func(c *cli.Context) error { return runTunablesShow(c, e) },
	}
}

func runTunablesShow(c *cli.Context, e *env) error {
	if _, err := exactArgs(c); err != nil {
		return err
	}
	cl, f, err := adminSetup(c, e)
	if err != nil {
		return err
	}
	tun, err := cl.Tunables(c.Context)
	if err != nil {
		return adminFailed("tunables show", err)
	}
	if f == formatJSON {
		return writeJSON(e.stdout, tun)
	}
	t := newTable(e.stdout)
	t.row("INBOX_MAX_LEN", strconv.FormatInt(tun.InboxMaxLen, 10))
	t.row("INBOX_TTL", tun.InboxTTL)
	t.row("ACK_TIMEOUT", tun.AckTimeout)
	t.row("ACK_BACKOFF_MAX", tun.AckBackoffMax)
	t.row("WINDOW", itoa(tun.InFlightWindow))
	t.row("QUEUE_FRAMES", itoa(tun.QueueFrames))
	t.row("QUEUE_BYTES", itoa(tun.QueueBytes))
	return t.flush()
}
