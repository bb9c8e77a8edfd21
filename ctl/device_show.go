package ctl

import (
	"fmt"
	"strconv"

	"github.com/urfave/cli/v2"
)

// deviceCommand groups device subcommands.
func deviceCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:        "device",
		Usage:       "inspect devices",
		Subcommands: []*cli.Command{deviceShowCommand(e)},
	}
}

func deviceShowCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:      "show",
		Usage:     "show a device's route, inbox and ack cursor",
		ArgsUsage: "DEVICE",
		Flags:     append(settingFlags(setPushURL, setApp, setAPIKey), outputFlags()...),
		Action:    func(c *cli.Context) error { return runDeviceShow(c, e) },
	}
}

func runDeviceShow(c *cli.Context, e *env) error {
	format, err := outputFormat(c)
	if err != nil {
		return err
	}
	switch c.NArg() {
	case 0:
		return usagef("missing DEVICE")
	case 1:
	default:
		return usagef("want one DEVICE, got %q", c.Args().Slice())
	}
	device := c.Args().First()
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
	st, err := cl.Device(c.Context, app, device)
	if err != nil {
		return fmt.Errorf("device show %s: %w", device, err)
	}
	if format == formatJSON {
		return writeJSON(e.stdout, st)
	}
	node, connEpoch := "", ""
	if st.Route != nil {
		node, connEpoch = st.Route.Node, strconv.FormatUint(st.Route.Epoch, 10)
	}
	t := newTable(e.stdout)
	t.row("APP", st.App)
	t.row("DEVICE", st.Device)
	t.row("ONLINE", strconv.FormatBool(st.Online))
	t.row("NODE", node)
	t.row("CONN_EPOCH", connEpoch)
	t.row("INBOX_EPOCH", st.Epoch)
	t.row("LAST", strconv.FormatUint(st.Last, 10))
	t.row("ACKED", strconv.FormatUint(st.Acked, 10))
	t.row("INBOX_LEN", strconv.FormatInt(st.InboxLen, 10))
	t.row("LOST", strconv.FormatUint(st.Lost, 10))
	return t.flush()
}
