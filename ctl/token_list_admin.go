package ctl

import (
	"github.com/pushd/pushd/appliance/api"

	"github.com/urfave/cli/v2"
)

func tokenListAdminCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:   "list-admin",
		Usage:  "list the admin API tokens' ids and roles (needs an admin token)",
		Flags:  adminFlags(),
		Action: func(c *cli.Context) error { return runTokenListAdmin(c, e) },
	}
}

func runTokenListAdmin(c *cli.Context, e *env) error {
	if _, err := exactArgs(c); err != nil {
		return err
	}
	cl, f, err := adminSetup(c, e)
	if err != nil {
		return err
	}
	toks, err := cl.AdminTokens(c.Context)
	if err != nil {
		return adminFailed("token list-admin", err)
	}
	if f == formatJSON {
		if toks == nil {
			toks = []api.AdminToken{}
		}
		return writeJSON(e.stdout, map[string][]api.AdminToken{"tokens": toks})
	}
	t := newTable(e.stdout, "ID", "ROLE", "CREATED")
	for _, tok := range toks {
		t.row(tok.ID, tok.Role, timeCell(tok.Created))
	}
	return t.flush()
}
