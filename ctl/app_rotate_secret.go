package ctl

import (
	"github.com/urfave/cli/v2"
)

func appRotateSecretCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:      "rotate-secret",
		Usage:     "add a new token secret (the next key id); prints it, once",
		ArgsUsage: "APP",
		Description: "Tokens signed with the previous two secrets stay valid, so business servers can switch\n" +
			"to the new key id at their pace; older secrets are dropped.",
		Flags:  adminFlags(),
		Action: func(c *cli.Context) error { return runAppRotateSecret(c, e) },
	}
}

func runAppRotateSecret(c *cli.Context, e *env) error {
	a, err := exactArgs(c, "APP")
	if err != nil {
		return err
	}
	cl, f, err := adminSetup(c, e)
	if err != nil {
		return err
	}
	res, err := cl.RotateSecret(c.Context, a[0])
	if err != nil {
		return adminFailed("app rotate-secret "+a[0], err)
	}
	if f == formatJSON {
		err = writeJSON(e.stdout, res)
	} else {
		t := newTable(e.stdout)
		t.row("APP", a[0])
		t.row("KEY_ID", res.KeyID)
		t.row("SECRET_BASE64", res.SecretBase64)
		err = t.flush()
	}
	shownOnce(e, "the secret is shown this once and never again: store it now")
	return err
}
