package ctl

import (
	"github.com/pushd/pushd/appliance/api"

	"strconv"
	"strings"

	"github.com/urfave/cli/v2"
)

func tunablesSetCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:  "set",
		Usage: "change region-wide delivery settings; the ones not given keep their value",
		Description: "Every node applies them within a second, to new and existing sessions. A setting once\n" +
			"set region-wide stays so until set again.",
		Flags: adminFlags(
			&cli.Int64Flag{Name: "inbox-max-len", Usage: "unacked messages each device's inbox keeps; older ones are trimmed, and the device told", DefaultText: "unchanged"},
			&cli.DurationFlag{Name: "inbox-ttl", Usage: "the longest a message waits for its device, and the TTL of a push that names none (at most the nodes' own inbox TTL)", DefaultText: "unchanged"},
			&cli.DurationFlag{Name: "ack-timeout", Usage: "how long a sent message waits for its ack before it is resent", DefaultText: "unchanged"},
			&cli.DurationFlag{Name: "ack-backoff-max", Usage: "the longest wait between resends", DefaultText: "unchanged"},
			&cli.IntFlag{Name: "window", Usage: "unacked messages in flight per session, 1-1024", DefaultText: "unchanged"},
			&cli.IntFlag{Name: "queue-frames", Usage: "frames a session may queue before it is cut as a slow consumer", DefaultText: "unchanged"},
			&cli.IntFlag{Name: "queue-bytes", Usage: "bytes a session may queue before it is cut as a slow consumer", DefaultText: "unchanged"},
		),
		Action: func(c *cli.Context) error { return runTunablesSet(c, e) },
	}
}

func runTunablesSet(c *cli.Context, e *env) error {
	if _, err := exactArgs(c); err != nil {
		return err
	}
	var req api.Tunables
	var changed []string
	for _, d := range []struct {
		flag string
		dst  *string
	}{{"inbox-ttl", &req.InboxTTL}, {"ack-timeout", &req.AckTimeout}, {"ack-backoff-max", &req.AckBackoffMax}} {
		if !c.IsSet(d.flag) {
			continue
		}
		v := c.Duration(d.flag)
		if v <= 0 {
			return usagef("--%s %s: must be more than 0", d.flag, v)
		}
		*d.dst = v.String()
		changed = append(changed, d.flag+" "+v.String())
	}
	for _, n := range []struct {
		flag     string
		dst      *int
		min, max int
	}{{"window", &req.InFlightWindow, 1, 1024}, {"queue-frames", &req.QueueFrames, 1, 0}, {"queue-bytes", &req.QueueBytes, 1, 0}} {
		if !c.IsSet(n.flag) {
			continue
		}
		v := c.Int(n.flag)
		if v < n.min || (n.max > 0 && v > n.max) {
			if n.max > 0 {
				return usagef("--%s %d: must be %d to %d", n.flag, v, n.min, n.max)
			}
			return usagef("--%s %d: must be %d or more", n.flag, v, n.min)
		}
		*n.dst = v
		changed = append(changed, n.flag+" "+itoa(v))
	}
	if c.IsSet("inbox-max-len") {
		v := c.Int64("inbox-max-len")
		if v < 1 {
			return usagef("--inbox-max-len %d: must be 1 or more", v)
		}
		req.InboxMaxLen = v
		changed = append(changed, "inbox-max-len "+strconv.FormatInt(v, 10))
	}
	if len(changed) == 0 {
		return usagef("nothing to change: give --inbox-max-len, --inbox-ttl, --ack-timeout, --ack-backoff-max, --window, --queue-frames or --queue-bytes")
	}
	cl, f, err := adminSetup(c, e)
	if err != nil {
		return err
	}
	res, err := cl.SetTunables(c.Context, &req)
	if err != nil {
		return adminFailed("tunables set", err)
	}
	return writeApplied(e, f, res, "tunables set: "+strings.Join(changed, ", "))
}
