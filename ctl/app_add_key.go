package ctl

import (
	"github.com/urfave/cli/v2"
)

func appAddKeyCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:      "add-key",
		Usage:     "add a push API key to an app; prints it, once",
		ArgsUsage: "APP",
		Description: "To replace a key without downtime: add a new one, move the business servers to it,\n" +
			"then app revoke-key the old one.",
		Flags:  adminFlags(),
		Action: func(c *cli.Context) error { return runAppAddKey(c, e) },
	}
}

func runAppAddKey(c *cli.Context, e *env) error {
	a, err := exactArgs(c, "APP")
	if err != nil {
		return err
	}
	cl, f, err := adminSetup(c, e)
	if err != nil {
		return err
	}
	res, err := cl.AddAPIKey(c.Context, a[0])
	if err != nil {
		return adminFailed("app add-key "+a[0], err)
	}
	if f == formatJSON {
		err = writeJSON(e.stdout, res)
	} else {
		t := newTable(e.stdout)
		t.row("APP", a[0])
		t.row("API_KEY_ID", res.APIKeyID)
		t.row("API_KEY", res.APIKey)
		err = t.flush()
	}
	shownOnce(e, "the API key is shown this once and never again: store it now")
	return err
}
