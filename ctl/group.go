package ctl

import (
	"fmt"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/pushd/pushd/appliance/api"
)

// groupCommand groups the group subcommands: membership and catch-up
// streams, through the push API with the app's key.
func groupCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:  "group",
		Usage: "groups: add and remove members, show them, keep a catch-up stream",
		Subcommands: []*cli.Command{
			groupChangeCommand(e, api.OpAdd),
			groupChangeCommand(e, api.OpRemove),
			groupShowCommand(e),
			groupStreamCommand(e),
		},
	}
}

func groupChangeCommand(e *env, op string) *cli.Command {
	usage := "add devices and users to a group; their sessions join it at once and at every connect"
	if op == api.OpRemove {
		usage = "remove devices and users from a group; their sessions leave it at once"
	}
	return &cli.Command{
		Name:      op,
		Usage:     usage,
		ArgsUsage: "GROUP",
		Flags: append(append([]cli.Flag{
			&cli.StringSliceFlag{Name: "device", Usage: "a device (repeatable)"},
			&cli.StringSliceFlag{Name: "user", Usage: "a user: every device the user connects with (repeatable)"},
		}, settingFlags(setPushURL, setApp, setAPIKey)...), outputFlags()...),
		Action: func(c *cli.Context) error { return runGroupChange(c, e, op) },
	}
}

func runGroupChange(c *cli.Context, e *env, op string) error {
	format, err := outputFormat(c)
	if err != nil {
		return err
	}
	a, err := exactArgs(c, "GROUP")
	if err != nil {
		return err
	}
	req := &api.GroupMembersRequest{Op: &op, Devices: c.StringSlice("device"), Users: c.StringSlice("user")}
	if len(req.Devices)+len(req.Users) == 0 {
		return usagef("give --device, --user or both")
	}
	k, err := loadConfig(c, e)
	if err != nil {
		return err
	}
	app, err := k.require(setApp)
	if err != nil {
		return err
	}
	req.App = &app
	cl, err := pushClient(k, 0)
	if err != nil {
		return err
	}
	resp, err := cl.ChangeGroupMembers(c.Context, a[0], req)
	if err != nil {
		return fmt.Errorf("group %s %s: %w", op, a[0], err)
	}
	var rejected []string
	for _, r := range resp.Results {
		if r.Status == api.MemberRejected {
			rejected = append(rejected, memberName(r.Device, r.User)+" ("+r.Reason+")")
		}
	}
	if format == formatJSON {
		err = writeJSON(e.stdout, resp)
	} else {
		t := newTable(e.stdout, "MEMBER", "STATUS", "SESSIONS", "REASON")
		for _, r := range resp.Results {
			t.row(memberName(r.Device, r.User), r.Status, itoa(r.Sessions), orDash(r.Reason))
		}
		err = t.flush()
	}
	if err != nil {
		return err
	}
	if len(rejected) > 0 {
		return fmt.Errorf("group %s %s: %d of %d members rejected: %s", op, a[0], len(rejected), len(resp.Results), strings.Join(rejected, ", "))
	}
	return nil
}

// memberName prints a member: device:ID or user:ID.
func memberName(device, user string) string {
	if user != "" {
		return "user:" + user
	}
	return "device:" + device
}

func groupShowCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:      "show",
		Usage:     "show a group's size, its members and its catch-up stream",
		ArgsUsage: "GROUP",
		Description: "Members come a page at a time (--count, at most 1000); --cursor is the NEXT_CURSOR a\n" +
			"previous page printed, and --all reads every page.",
		Flags: append(append([]cli.Flag{
			&cli.IntFlag{Name: "count", Usage: "members per page, 1 to 1000", Value: 100},
			&cli.StringFlag{Name: "cursor", Usage: "the page to read: the previous page's NEXT_CURSOR"},
			&cli.BoolFlag{Name: "all", Usage: "read every page"},
		}, settingFlags(setPushURL, setApp, setAPIKey)...), outputFlags()...),
		Action: func(c *cli.Context) error { return runGroupShow(c, e) },
	}
}

func runGroupShow(c *cli.Context, e *env) error {
	format, err := outputFormat(c)
	if err != nil {
		return err
	}
	a, err := exactArgs(c, "GROUP")
	if err != nil {
		return err
	}
	count := c.Int("count")
	switch {
	case count < 1 || count > 1000:
		return usagef("--count %d: 1 to 1000", count)
	case c.Bool("all") && c.IsSet("cursor"):
		return usagef("--all reads every page: leave --cursor out")
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
	st, err := cl.Group(c.Context, app, a[0], c.String("cursor"), count)
	for err == nil && c.Bool("all") && st.NextCursor != "" {
		var next *api.GroupState
		if next, err = cl.Group(c.Context, app, a[0], st.NextCursor, count); err == nil {
			next.Members = append(st.Members, next.Members...)
			st = next
		}
	}
	if err != nil {
		return fmt.Errorf("group show %s: %w", a[0], err)
	}
	if format == formatJSON {
		return writeJSON(e.stdout, st)
	}
	stream := "off"
	if s := st.Stream; s.MaxLen > 0 {
		stream = fmt.Sprintf("%d messages, %s; epoch %s, last %d, trimmed up to %d", s.MaxLen, s.MaxAge, s.Epoch, s.Last, s.Trimmed)
	}
	fmt.Fprintf(e.stdout, "APP          %s\nGROUP        %s\nSIZE         %d\nSTREAM       %s\nNEXT_CURSOR  %s\n\n",
		st.App, st.Group, st.Size, stream, orDash(st.NextCursor))
	t := newTable(e.stdout, "MEMBER")
	for _, m := range st.Members {
		t.row(memberName(m.Device, m.User))
	}
	return t.flush()
}

func groupStreamCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:      "stream",
		Usage:     "keep a catch-up stream of a group's recent messages, or stop keeping one",
		ArgsUsage: "GROUP",
		Description: "A group push is then appended once to the stream, and a member that reconnects with\n" +
			"its cursor gets what it missed; --max-len 1 to 1000 messages, --max-age 1s to 24h.\n" +
			"--off deletes the stream: members' cursors of it read as not recovered later.",
		Flags: append(append([]cli.Flag{
			&cli.Int64Flag{Name: "max-len", Usage: "the most messages the stream keeps, 1 to 1000"},
			&cli.DurationFlag{Name: "max-age", Usage: "the longest a message is kept, 1s to 24h"},
			&cli.BoolFlag{Name: "off", Usage: "keep no stream"},
		}, settingFlags(setPushURL, setApp, setAPIKey)...), outputFlags()...),
		Action: func(c *cli.Context) error { return runGroupStream(c, e) },
	}
}

func runGroupStream(c *cli.Context, e *env) error {
	format, err := outputFormat(c)
	if err != nil {
		return err
	}
	a, err := exactArgs(c, "GROUP")
	if err != nil {
		return err
	}
	req := &api.GroupStreamRequest{}
	switch {
	case c.Bool("off") && (c.IsSet("max-len") || c.IsSet("max-age")):
		return usagef("--off keeps no stream: leave --max-len and --max-age out")
	case c.Bool("off"):
		req.MaxLen = api.Ptr(int64(0))
	case !c.IsSet("max-len") || !c.IsSet("max-age"):
		return usagef("give --max-len and --max-age, or --off")
	default:
		n, age := c.Int64("max-len"), c.Duration("max-age")
		if n < 1 || n > 1000 {
			return usagef("--max-len %d: 1 to 1000", n)
		}
		if age < time.Second || age > 24*time.Hour {
			return usagef("--max-age %s: 1s to 24h", age)
		}
		req.MaxLen, req.MaxAge = &n, api.Ptr(age.String())
	}
	k, err := loadConfig(c, e)
	if err != nil {
		return err
	}
	app, err := k.require(setApp)
	if err != nil {
		return err
	}
	req.App = &app
	cl, err := pushClient(k, 0)
	if err != nil {
		return err
	}
	st, err := cl.SetGroupStream(c.Context, a[0], req)
	if err != nil {
		return fmt.Errorf("group stream %s: %w", a[0], err)
	}
	if format == formatJSON {
		return writeJSON(e.stdout, st)
	}
	if st.MaxLen == 0 {
		fmt.Fprintf(e.stdout, "group %s keeps no catch-up stream\n", a[0])
		return nil
	}
	fmt.Fprintf(e.stdout, "group %s keeps a catch-up stream of %d messages, %s (epoch %s, last %d)\n", a[0], st.MaxLen, st.MaxAge, st.Epoch, st.Last)
	return nil
}
