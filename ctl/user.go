package ctl

import (
	"fmt"
	"strconv"
	"time"

	"github.com/urfave/cli/v2"
)

// userCommand groups user subcommands.
func userCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:        "user",
		Usage:       "inspect users",
		Subcommands: []*cli.Command{userShowCommand(e)},
	}
}

func userShowCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:      "show",
		Usage:     "show the devices a push to a user reaches, and the user's groups",
		ArgsUsage: "USER",
		Flags:     append(settingFlags(setPushURL, setApp, setAPIKey), outputFlags()...),
		Action:    func(c *cli.Context) error { return runUserShow(c, e) },
	}
}

func runUserShow(c *cli.Context, e *env) error {
	format, err := outputFormat(c)
	if err != nil {
		return err
	}
	a, err := exactArgs(c, "USER")
	if err != nil {
		return err
	}
	k, err := loadConfig(c, e)
	if err != nil {
		return err
	}
	app, err := k.require(setApp)
	if err != nil {
		return err
	}
	cl, err := pushClient(k, 0)
	if err != nil {
		return err
	}
	st, err := cl.User(c.Context, app, a[0])
	if err != nil {
		return fmt.Errorf("user show %s: %w", a[0], err)
	}
	if format == formatJSON {
		return writeJSON(e.stdout, st)
	}
	fmt.Fprintf(e.stdout, "APP     %s\nUSER    %s\nGROUPS  %s\n\n", st.App, st.User, orDash(listCell(st.Groups)))
	t := newTable(e.stdout, "DEVICE", "ONLINE", "NODE", "LAST_SEEN")
	for _, d := range st.Devices {
		node := "-"
		if d.Route != nil {
			node = d.Route.Node
		}
		t.row(d.Device, strconv.FormatBool(d.Online), node, d.LastSeen.Format(time.RFC3339))
	}
	return t.flush()
}
