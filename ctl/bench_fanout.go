package ctl

import (
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/pushd/pushd/ctl/load"
)

func benchFanoutCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:  "fanout",
		Usage: "hold N subscribers in a group or the whole app, push to them, and time the last one against the machine's floor",
		Description: "Measures the machine's floor first (bench floor, with as many connections over the same\n" +
			"workers), then holds --subscribers sessions from worker processes of at most 15,000 each,\n" +
			"makes them members of --group through the push API (or, without one, broadcasts to the\n" +
			"app), and pushes: one at a time (--pushes, each after the last one reached every subscriber)\n" +
			"or at --rate for --duration. It reports, per push, the time from the push call to the first\n" +
			"and to the last subscriber, deliveries per second, lost and duplicate deliveries, the server's\n" +
			"CPU per delivery, and last_member_ms p50 over the floor. Exits 1 when anything was lost,\n" +
			"duplicated or refused.",
		Flags: append(append(append([]cli.Flag{
			&cli.IntFlag{Name: "subscribers", Usage: "sessions to hold", Value: 1000},
			&cli.StringFlag{Name: "group", Usage: "the group the subscribers join and the pushes go to (default: broadcast to the app)"},
			&cli.IntFlag{Name: "pushes", Usage: "pushes one at a time, when --rate is 0", Value: 10},
			&cli.Float64Flag{Name: "rate", Usage: "pushes per second (0: one at a time)"},
			&cli.DurationFlag{Name: "duration", Usage: "how long to push at --rate", Value: 10 * time.Second},
			&cli.IntFlag{Name: "payload-size", Usage: "bytes per message, 8 to 4096", Value: 64},
			&cli.DurationFlag{Name: "wait", Usage: "how long to wait for one push's deliveries (one at a time), or for all of them after the last push (--rate)", Value: 10 * time.Second},
			&cli.IntFlag{Name: "floor-rounds", Usage: "rounds of the floor measured first; 0 measures none", Value: 5},
		}, benchFlags()...), settingFlags(setPushURL, setURL, setApp, setAPIKey, setKeyID, setSecret)...), outputFlags()...),
		Action: func(c *cli.Context) error { return runBenchFanout(c, e) },
	}
}

func runBenchFanout(c *cli.Context, e *env) error {
	format, err := outputFormat(c)
	if err != nil {
		return err
	}
	if c.NArg() > 0 {
		return usagef("unexpected arguments %q", c.Args().Slice())
	}
	run := load.Fanout{Subscribers: c.Int("subscribers"), Group: c.String("group"), Pushes: c.Int("pushes"),
		Rate: c.Float64("rate"), Duration: c.Duration("duration"), PayloadSize: c.Int("payload-size"),
		Wait: c.Duration("wait"), FloorRounds: c.Int("floor-rounds")}
	switch {
	case run.Subscribers < 1:
		return usagef("--subscribers %d: must be at least 1", run.Subscribers)
	case run.Pushes < 1:
		return usagef("--pushes %d: must be at least 1", run.Pushes)
	case run.Rate < 0 || run.Duration <= 0 || run.Wait <= 0:
		return usagef("--rate must not be negative, --duration and --wait must be positive")
	case run.PayloadSize < 8 || run.PayloadSize > 4096:
		return usagef("--payload-size %d: 8 to 4096", run.PayloadSize)
	case run.FloorRounds < 0:
		return usagef("--floor-rounds %d: 0 (no floor) or more", run.FloorRounds)
	case run.FloorRounds > 0 && run.Subscribers > 19000:
		return usagef("--subscribers %d: the floor holds at most 19,000 connections in pushctl; give --floor-rounds 0", run.Subscribers)
	}
	if run.FloorRounds == 0 {
		run.FloorRounds = -1
	}
	plan, err := benchPlan(c, e, format)
	if err != nil {
		return err
	}
	t, err := resolveBenchTarget(c, e, true, nil)
	if err != nil {
		return err
	}
	defer t.stop()
	run.Target, run.CPU = t.target, t.cpu()
	cl, err := pushClient(t.k, 64)
	if err != nil {
		return err
	}
	run.API = cl
	rep, err := run.Run(c.Context, plan)
	if err != nil {
		return benchError(err)
	}
	if err := printFanoutReport(e.stdout, format, rep); err != nil {
		return err
	}
	if rep.Lost+rep.Duplicates+rep.Errors > 0 {
		fmt.Fprintf(e.stderr, "pushctl bench fanout: %d lost, %d duplicates, %d errors\n", rep.Lost, rep.Duplicates, rep.Errors)
		return errReported
	}
	return nil
}

func printFanoutReport(w io.Writer, format format, r *load.FanoutReport) error {
	if format == formatJSON {
		return writeJSON(w, r)
	}
	ms := func(l load.Latency) string {
		return fmt.Sprintf("p50 %.3fms  p99 %.3fms  max %.3fms", l.P50, l.P99, l.Max)
	}
	opt := func(v *float64, format string) string {
		if v == nil {
			return "unknown"
		}
		return fmt.Sprintf(format, *v)
	}
	t := newTable(w)
	t.row("scenario", r.Scenario)
	t.row("subscribers", strconv.Itoa(r.Subscribers))
	t.row("pushes", strconv.Itoa(r.Pushes))
	t.row("deliveries", fmt.Sprintf("%d (%.0f/s)", r.Deliveries, r.DeliveriesPerS))
	t.row("first member", ms(r.FirstMemberMS))
	t.row("last member", ms(r.LastMemberMS))
	t.row("floor", opt(r.FloorMS, "%.3fms"))
	t.row("last member p50 / floor", opt(r.FloorRatio, "%.2f"))
	t.row("server cpu per delivery", opt(r.CPUUSPerDelivery, "%.2fµs"))
	t.row("lost", strconv.Itoa(r.Lost))
	t.row("duplicates", strconv.Itoa(r.Duplicates))
	t.row("errors", strconv.Itoa(r.Errors))
	return t.flush()
}
