package ctl

import (
	"github.com/pushd/pushd/appliance/api"

	"github.com/urfave/cli/v2"
)

func appListCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:   "list",
		Usage:  "list the apps with their key ids and limits",
		Flags:  adminFlags(),
		Action: func(c *cli.Context) error { return runAppList(c, e) },
	}
}

func runAppList(c *cli.Context, e *env) error {
	if _, err := exactArgs(c); err != nil {
		return err
	}
	cl, f, err := adminSetup(c, e)
	if err != nil {
		return err
	}
	apps, err := cl.Apps(c.Context)
	if err != nil {
		return adminFailed("app list", err)
	}
	if f == formatJSON {
		if apps == nil {
			apps = []api.App{}
		}
		return writeJSON(e.stdout, map[string][]api.App{"apps": apps})
	}
	t := newTable(e.stdout, "APP", "KEY_IDS", "API_KEYS", "MAX_PAYLOAD", "RATE", "BURST", "BUSINESSES", "CLIENT_GROUPS", "CREATED")
	for _, a := range apps {
		joins := "allow"
		if !a.ClientGroups {
			joins = "deny"
		}
		t.row(a.ID, listCell(a.KeyIDs), listCell(a.APIKeys), limitCell(a.MaxPayload, "default"),
			limitCell(a.RatePerSec, "unlimited"), limitCell(a.Burst, "unlimited"), anyCell(a.Businesses), joins, timeCell(a.Created))
	}
	return t.flush()
}

// limitCell says what a zero limit means instead of printing 0.
func limitCell(v int, zero string) string {
	if v == 0 {
		return zero
	}
	return itoa(v)
}

func anyCell(businesses []string) string {
	if len(businesses) == 0 {
		return "any"
	}
	return listCell(businesses)
}
