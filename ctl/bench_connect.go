package ctl

import (
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/pushd/pushd/ctl/load"
)

func benchConnectCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:  "connect",
		Usage: "open N device sessions, hold them, report connect rate and server memory per connection",
		Description: "Opens --conns authenticated sessions (HELLO with a minted token, WELCOME, PINGs at the\n" +
			"interval WELCOME gives) from worker processes of at most 15,000 connections each, holds them\n" +
			"--hold after the last one connected, and counts the ones that failed or dropped. Exits 1 when\n" +
			"any did.",
		Flags: append(append(append([]cli.Flag{
			&cli.IntFlag{Name: "conns", Usage: "connections to open", Value: 1000},
			&cli.DurationFlag{Name: "hold", Usage: "how long to hold them once all are connected (stretched to 2.5 heartbeat intervals when that is at most 1m, or always with --heartbeat-check)", Value: 10 * time.Second},
			&cli.Float64Flag{Name: "rate", Usage: "connects per second over all workers, 0 for as fast as possible"},
			&cli.BoolFlag{Name: "heartbeat-check", Usage: "hold at least 2.5 heartbeat intervals and count connections whose PINGs went unanswered as errors"},
			&cli.DurationFlag{Name: "heartbeat", Usage: "with --local: the server's heartbeat interval (0: its default)", Value: 5 * time.Second},
		}, benchFlags()...), append(settingFlags(setURL, setApp, setKeyID, setSecret), insecureFlag())...), outputFlags()...),
		Action: func(c *cli.Context) error { return runBenchConnect(c, e) },
	}
}

func runBenchConnect(c *cli.Context, e *env) error {
	format, err := outputFormat(c)
	if err != nil {
		return err
	}
	if c.NArg() > 0 {
		return usagef("unexpected arguments %q", c.Args().Slice())
	}
	run := load.Connect{Conns: c.Int("conns"), Hold: c.Duration("hold"), Rate: c.Float64("rate"), HeartbeatCheck: c.Bool("heartbeat-check")}
	switch {
	case run.Conns < 1:
		return usagef("--conns %d: must be at least 1", run.Conns)
	case run.Hold < 0:
		return usagef("--hold %s: must not be negative", run.Hold)
	case run.Rate < 0:
		return usagef("--rate %g: must not be negative", run.Rate)
	}
	plan, err := benchPlan(c, e, format)
	if err != nil {
		return err
	}
	var localArgs []string
	if hb := c.Duration("heartbeat"); hb > 0 {
		localArgs = append(localArgs, "--heartbeat", hb.String())
	}
	t, err := resolveBenchTarget(c, e, true, localArgs)
	if err != nil {
		return err
	}
	defer t.stop()
	run.Target, run.RSS = t.target, t.rss()
	rep, err := run.Run(c.Context, plan)
	if err != nil {
		return benchError(err)
	}
	if err := printConnectReport(e.stdout, format, rep); err != nil {
		return err
	}
	if rep.Errors > 0 {
		fmt.Fprintf(e.stderr, "pushctl bench connect: %d errors: %s\n", rep.Errors, rep.ErrorReasons)
		return errReported
	}
	return nil
}

func printConnectReport(w io.Writer, format format, r *load.ConnectReport) error {
	if format == formatJSON {
		return writeJSON(w, r)
	}
	t := newTable(w)
	t.row("scenario", r.Scenario)
	t.row("transport", r.Transport)
	t.row("workers", strconv.Itoa(r.Workers))
	t.row("conns", fmt.Sprintf("%d requested, %d connected", r.Conns, r.Connected))
	t.row("connect rate", fmt.Sprintf("%.1f conn/s over %.3fs", r.ConnectPerS, r.ConnectS))
	t.row("held", fmt.Sprintf("%.1fs (heartbeat %.1fs)", r.HoldS, r.HeartbeatS))
	errs := fmt.Sprintf("%d (connect failures %d, drops %d", r.Errors, r.ConnectFailures, r.Drops)
	if r.HeartbeatMisses != nil {
		errs += fmt.Sprintf(", heartbeat misses %d", *r.HeartbeatMisses)
	}
	t.row("errors", errs+")")
	t.row("server rss", formatRSS(r.ServerRSSBytes, r.ServerRSSBeforeBytes))
	per := "unknown"
	if r.RSSBytesPerConn != nil {
		per = fmt.Sprintf("%.0f bytes", *r.RSSBytesPerConn)
	}
	t.row("rss per conn", per)
	t.row("duration", fmt.Sprintf("%.1fs", r.DurationS))
	return t.flush()
}

func formatRSS(after, before *int64) string {
	if after == nil {
		return "unknown"
	}
	s := fmt.Sprintf("%.1f MiB", float64(*after)/(1<<20))
	if before != nil {
		s += fmt.Sprintf(" (before connecting %.1f MiB)", float64(*before)/(1<<20))
	}
	return s
}
