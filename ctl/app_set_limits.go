package ctl

import (
	"github.com/pushd/pushd/appliance/api"

	"fmt"

	"github.com/urfave/cli/v2"
)

func appSetLimitsCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:      "set-limits",
		Usage:     "change an app's limits; the ones not given keep their value",
		ArgsUsage: "APP",
		Description: "The API replaces all of an app's limits at once, so the current ones are read first and\n" +
			"only those given here change. --any-business lifts the business restriction.",
		Flags: adminFlags(append(limitFlags(true),
			&cli.BoolFlag{Name: "any-business", Usage: "allow every business (clears --business)"})...),
		Action: func(c *cli.Context) error { return runAppSetLimits(c, e) },
	}
}

func runAppSetLimits(c *cli.Context, e *env) error {
	a, err := exactArgs(c, "APP")
	if err != nil {
		return err
	}
	if err := nonNegative(c, "max-payload", "rate", "burst"); err != nil {
		return err
	}
	if c.IsSet("business") && c.Bool("any-business") {
		return usagef("--business and --any-business contradict each other")
	}
	if !c.IsSet("max-payload") && !c.IsSet("rate") && !c.IsSet("burst") && !c.IsSet("business") && !c.IsSet("any-business") {
		return usagef("nothing to change: give --max-payload, --rate, --burst, --business or --any-business")
	}
	cl, f, err := adminSetup(c, e)
	if err != nil {
		return err
	}
	op := "app set-limits " + a[0]
	apps, err := cl.Apps(c.Context)
	if err != nil {
		return adminFailed(op, err)
	}
	var limits *api.AppLimits
	for _, app := range apps {
		if app.ID == a[0] {
			limits = &app.AppLimits
		}
	}
	if limits == nil {
		return fmt.Errorf("%s: app %q: not found", op, a[0])
	}
	if c.IsSet("max-payload") {
		limits.MaxPayload = c.Int("max-payload")
	}
	if c.IsSet("rate") {
		limits.RatePerSec = c.Int("rate")
	}
	if c.IsSet("burst") {
		limits.Burst = c.Int("burst")
	}
	if c.IsSet("business") {
		limits.Businesses = c.StringSlice("business")
	}
	if c.Bool("any-business") {
		limits.Businesses = nil
	}
	res, err := cl.SetAppLimits(c.Context, a[0], *limits)
	if err != nil {
		return adminFailed(op, err)
	}
	return writeApplied(e, f, res, fmt.Sprintf("app %s limits: max_payload %s, rate %s, burst %s, businesses %s", a[0],
		limitCell(limits.MaxPayload, "default"), limitCell(limits.RatePerSec, "unlimited"),
		limitCell(limits.Burst, "unlimited"), anyCell(limits.Businesses)))
}
