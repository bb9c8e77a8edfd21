package ctl

import (
	"github.com/pushd/pushd/appliance/api"

	"strings"

	"github.com/urfave/cli/v2"
)

// degradeCommand sets degrade with its own flags and holds off and status
// as subcommands. urfave/cli runs the parent's Action when no subcommand
// name follows its flags, so `degrade --priority low --reason x` and
// `degrade off --reason y` both parse.
func degradeCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:      "degrade",
		Usage:     "shed pushes region-wide during an incident; degrade off ends it, degrade status shows it",
		UsageText: "pushctl degrade --priority low|normal|high [--business B …] --reason TEXT\npushctl degrade off [--reason TEXT]\npushctl degrade status",
		Description: "Within a second every node refuses new pushes at or below --priority with 503 degraded,\n" +
			"drops the queued ones instead of sending them, and tells the connected devices it concerns\n" +
			"(CONTROL degraded). low sheds low; normal sheds low and normal; high sheds everything.\n" +
			"--business limits the shedding to those businesses. Setting it again replaces the policy.",
		Flags: adminFlags(
			&cli.StringFlag{Name: "priority", Usage: "shed pushes at or below this priority: low, normal or high"},
			&cli.StringSliceFlag{Name: "business", Usage: "shed only pushes of this business (repeatable); default every business"},
			&cli.StringFlag{Name: "reason", Usage: "why (required): shown to operators, in the audit log and to devices"},
		),
		Subcommands: []*cli.Command{degradeOffCommand(e), degradeStatusCommand(e)},
		Action:      func(c *cli.Context) error { return runDegrade(c, e) },
	}
}

// degradePriorities are the values of --priority, lowest first.
var degradePriorities = []string{"low", "normal", "high"}

func runDegrade(c *cli.Context, e *env) error {
	if c.Args().First() == "help" && c.NArg() == 1 {
		// As for the pure groups (groupAction): `degrade help` is help.
		cli.HelpPrinter(e.stdout, cli.SubcommandHelpTemplate, c.Command)
		return nil
	}
	if c.NArg() > 0 {
		return usagef("unknown command %q: degrade takes off or status, or --priority and --reason", c.Args().First())
	}
	p := c.String("priority")
	switch {
	case !c.IsSet("priority"):
		return usagef("missing --priority (low, normal or high); 'degrade off' ends degrade, 'degrade status' shows it")
	case !validPriority(p):
		return usagef("--priority %q: want low, normal or high", p)
	case strings.TrimSpace(c.String("reason")) == "":
		return usagef("missing --reason: it is shown to operators, in the audit log and to devices")
	}
	businesses := c.StringSlice("business")
	cl, f, err := adminSetup(c, e)
	if err != nil {
		return err
	}
	res, err := cl.SetDegrade(c.Context, &api.DegradeRequest{Priority: p, Businesses: businesses, Reason: c.String("reason")})
	if err != nil {
		return adminFailed("degrade", err)
	}
	return writeApplied(e, f, res, "degrade on: "+shedText(p, businesses))
}

func validPriority(p string) bool {
	for _, v := range degradePriorities {
		if p == v {
			return true
		}
	}
	return false
}

// shedText says what a degrade policy refuses.
func shedText(priority string, businesses []string) string {
	var parts []string
	for _, v := range degradePriorities {
		parts = append(parts, v)
		if v == priority {
			break
		}
	}
	s := "refusing " + strings.Join(parts, " and ") + " priority pushes"
	if len(parts) == len(degradePriorities) {
		s = "refusing pushes of every priority"
	}
	if len(businesses) > 0 {
		s += " of " + strings.Join(businesses, ", ")
	}
	return s
}

// degradeRows adds the degrade policy to a key-value table. The rows are
// the same whether degrade is on or off, so scripts find them in place;
// after degrade off, REASON, BY and SINCE describe the off command.
func degradeRows(t *table, d api.DegradeState) {
	state := "off"
	if d.Active {
		state = "on"
	}
	t.row("DEGRADE", state)
	t.row("PRIORITY", d.Priority)
	t.row("BUSINESSES", listCell(d.Businesses))
	t.row("REASON", d.Reason)
	t.row("BY", d.By)
	t.row("SINCE", timeCell(d.Since))
}

// degradeParentFlags refuses degrade's own flags given before a subcommand
// (`degrade --priority high off`), which would otherwise be silently
// ignored. allowed names the ones the subcommand takes over.
func degradeParentFlags(c *cli.Context, allowed ...string) error {
	lineage := c.Lineage()
	if len(lineage) < 2 {
		return nil
	}
	parent := lineage[1]
	for _, name := range []string{"priority", "business", "reason"} {
		ok := false
		for _, a := range allowed {
			ok = ok || a == name
		}
		if !ok && parent.IsSet(name) {
			return usagef("--%s sets degrade; it does not go with 'degrade %s'", name, c.Command.Name)
		}
	}
	return nil
}
