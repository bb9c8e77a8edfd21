package ctl

import (
	"github.com/pushd/pushd/appliance/api"

	"github.com/urfave/cli/v2"
)

func auditCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:  "audit",
		Usage: "show the region's last writes: who changed what, newest last",
		Description: "The region keeps its last 1,000 writes. ACTOR is the id of the admin token that made the\n" +
			"write; REQUEST its request id (one per pushctl invocation, kept across retries).",
		Flags:  adminFlags(&cli.IntFlag{Name: "limit", Usage: "show the newest N entries (0: all the region keeps)", Value: 20}),
		Action: func(c *cli.Context) error { return runAudit(c, e) },
	}
}

func runAudit(c *cli.Context, e *env) error {
	if _, err := exactArgs(c); err != nil {
		return err
	}
	if err := nonNegative(c, "limit"); err != nil {
		return err
	}
	cl, f, err := adminSetup(c, e)
	if err != nil {
		return err
	}
	entries, err := cl.Audit(c.Context)
	if err != nil {
		return adminFailed("audit", err)
	}
	if n := c.Int("limit"); n > 0 && len(entries) > n {
		entries = entries[len(entries)-n:]
	}
	if f == formatJSON {
		if entries == nil {
			entries = []api.AuditEntry{}
		}
		return writeJSON(e.stdout, map[string][]api.AuditEntry{"entries": entries})
	}
	t := newTable(e.stdout, "TIME", "ACTOR", "OP", "TARGET", "REQUEST", "WHAT")
	for _, en := range entries {
		t.row(timeCell(en.Time), en.Actor, en.Op, en.Target, en.RequestID, orDash(en.Summary))
	}
	return t.flush()
}
