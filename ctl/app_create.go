package ctl

import (
	"github.com/pushd/pushd/appliance/api"

	"github.com/urfave/cli/v2"
)

func appCreateCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:      "create",
		Usage:     "create an app; prints its token secret and API key, once",
		ArgsUsage: "APP",
		Description: "Business servers mint device tokens with the secret (key id k1) and push with the API key.\n" +
			"Neither is shown again: reads list ids only.",
		Flags:  adminFlags(limitFlags(false)...),
		Action: func(c *cli.Context) error { return runAppCreate(c, e) },
	}
}

func runAppCreate(c *cli.Context, e *env) error {
	a, err := exactArgs(c, "APP")
	if err != nil {
		return err
	}
	if err := nonNegative(c, "max-payload", "rate", "burst"); err != nil {
		return err
	}
	cl, f, err := adminSetup(c, e)
	if err != nil {
		return err
	}
	limits := api.AppLimits{MaxPayload: c.Int("max-payload"), RatePerSec: c.Int("rate"), Burst: c.Int("burst"), Businesses: c.StringSlice("business")}
	res, err := cl.CreateApp(c.Context, a[0], limits)
	if err != nil {
		return adminFailed("app create "+a[0], err)
	}
	if f == formatJSON {
		err = writeJSON(e.stdout, res)
	} else {
		t := newTable(e.stdout)
		t.row("APP", res.ID)
		t.row("KEY_ID", res.KeyID)
		t.row("SECRET_BASE64", res.SecretBase64)
		t.row("API_KEY_ID", res.APIKeyID)
		t.row("API_KEY", res.APIKey)
		err = t.flush()
	}
	shownOnce(e, "the secret and API key are shown this once and never again: store them now")
	return err
}
