package ctl

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/pushd/pushd/appliance/api"
	"github.com/pushd/pushd/appliance/token"
)

func traceCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:      "trace",
		Usage:     "show a message's journey through the region, hop by hop",
		ArgsUsage: "MSG_ID",
		Description: "Asks every member for what it did with the message (GET /v1/admin/trace/{id}) and prints\n" +
			"the events in time order: accepted, stored, routed, handed, written, retransmitted, acked,\n" +
			"fanout, and what went another way (missed, not_stored, shed). Nodes keep their events for\n" +
			"--trace-ttl (10 min) in at most --trace-memory (64 MiB) each; a restarted node forgets its own.\n" +
			"A member that does not answer is named on stderr: its part of the journey is missing.",
		Flags:  adminFlags(),
		Action: func(c *cli.Context) error { return runTrace(c, e) },
	}
}

func runTrace(c *cli.Context, e *env) error {
	a, err := exactArgs(c, "MSG_ID")
	if err != nil {
		return err
	}
	id := a[0]
	if !token.ValidID(id) {
		return usagef("message id %q: ids are 1-128 letters, digits or ._:- (the push API's answer has it as \"id\")", id)
	}
	cl, f, err := adminSetup(c, e)
	if err != nil {
		return err
	}
	tr, err := cl.Trace(c.Context, id)
	if err != nil {
		return adminFailed("trace "+id, err)
	}
	for _, n := range tr.Nodes {
		if !n.OK {
			fmt.Fprintf(e.stderr, "pushctl: trace %s: node %s did not answer (%s): its events are missing\n", id, n.ID, n.Error)
		}
	}
	if len(tr.Events) == 0 {
		if f == formatJSON {
			if err := writeJSON(e.stdout, tr); err != nil {
				return err
			}
		}
		return errors.New("trace " + id + ": no node holds an event of this message (events are kept 10 minutes by default, " +
			"less under heavy load, and a restarted node forgets its own)")
	}
	if f == formatJSON {
		return writeJSON(e.stdout, tr)
	}
	t := newTable(e.stdout, "TIME", "+MS", "NODE", "EVENT", "DEVICE", "SEQ", "DETAIL")
	start := tr.Events[0].Time
	for _, ev := range tr.Events {
		seq := ""
		if ev.Seq > 0 {
			seq = strconv.FormatUint(ev.Seq, 10)
		}
		t.row(ev.Time.UTC().Format("2006-01-02T15:04:05.000000Z"), strconv.FormatFloat(float64(ev.Time.Sub(start))/float64(time.Millisecond), 'f', 3, 64),
			ev.Node, ev.Event, ev.Device, seq, traceDetail(ev))
	}
	return t.flush()
}

// traceDetail says in words what an event's fields say.
func traceDetail(ev api.TraceEvent) string {
	switch ev.Event {
	case "accepted":
		what := fmt.Sprintf("%d devices", ev.Devices)
		switch {
		case ev.Devices == 1:
			what = "1 device"
		case ev.Group != "":
			what = "group " + ev.Group
		case ev.Broadcast:
			what = "broadcast"
		}
		return fmt.Sprintf("app %s, API key %s, %s", ev.App, ev.APIKey, what)
	case "stored":
		where := "device offline: kept in its inbox"
		switch ev.Route {
		case "":
		case ev.Node:
			where = "device connected to this node"
		default:
			where = "device connected to " + ev.Route
		}
		if ev.Duplicate {
			return "a repeat of an earlier push (same idempotency key): stored once; " + where
		}
		return where
	case "routed":
		what := fmt.Sprintf("delivery entry for %d devices", ev.Targets)
		switch {
		case ev.Targets == 1:
			what = "delivery entry for 1 device"
		case ev.Targets == 0:
			what = "group entry"
		}
		if ev.Error != "" {
			return what + " to " + ev.To + " not written: " + ev.Error
		}
		return what + " to " + ev.To
	case "handed":
		return "session " + ev.Session + " (" + ev.Via + ")"
	case "retransmitted":
		return fmt.Sprintf("session %s, attempt %d", ev.Session, ev.Attempt)
	case "written", "acked":
		return "session " + ev.Session
	case "shed":
		return "session " + ev.Session + ": dropped by the degrade policy"
	case "fanout":
		who := "the app's devices (broadcast)"
		if ev.Group != "" {
			who = "group " + ev.Group
		}
		sessions := 0
		if ev.Sessions != nil {
			sessions = *ev.Sessions
		}
		return fmt.Sprintf("%d sessions of %s", sessions, who)
	}
	return strings.TrimSpace(ev.Reason)
}
