package ctl

import (
	"fmt"
	"io"
	"strconv"

	"github.com/urfave/cli/v2"

	"github.com/pushd/pushd/ctl/load"
)

func benchFloorCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:  "floor",
		Usage: "measure the machine's floor for one small write to each of N loopback connections",
		Description: "pushctl accepts --conns loopback connections from worker processes (at most 15,000 each,\n" +
			"on 127.0.0.2, 127.0.0.3, …, as bench fanout's subscribers), then, --rounds times, writes one\n" +
			"--payload-size message to each from one goroutine per CPU and times until the workers read the\n" +
			"last one, one read call per message: what the kernel and the Go runtime cost for a fan-out\n" +
			"on this machine, with no server in between. It also reports the CPU per write and read.",
		Flags: append([]cli.Flag{
			&cli.IntFlag{Name: "conns", Usage: "loopback connections, at most 19,000 (pushctl holds one end of each)", Value: 15000},
			&cli.IntFlag{Name: "rounds", Usage: "rounds to time", Value: 5},
			&cli.IntFlag{Name: "payload-size", Usage: "bytes per message, 8 to 4096", Value: 64},
			&cli.IntFlag{Name: "workers", Usage: "worker processes holding the connections (default: one per 15,000)"},
			&cli.StringFlag{Name: "sources", Usage: "comma-separated local addresses, one per worker in turn (default: 127.0.0.2, 127.0.0.3, …)"},
		}, outputFlags()...),
		Action: func(c *cli.Context) error { return runBenchFloor(c, e) },
	}
}

func runBenchFloor(c *cli.Context, e *env) error {
	format, err := outputFormat(c)
	if err != nil {
		return err
	}
	if c.NArg() > 0 {
		return usagef("unexpected arguments %q", c.Args().Slice())
	}
	run := load.Floor{Pairs: c.Int("conns"), Rounds: c.Int("rounds"), PayloadSize: c.Int("payload-size")}
	switch {
	case run.Pairs < 1 || run.Pairs > 19000:
		return usagef("--conns %d: 1 to 19,000 (pushctl holds one end of each, and a process may open at most 20,000 files)", run.Pairs)
	case run.Rounds < 1:
		return usagef("--rounds %d: must be at least 1", run.Rounds)
	case run.PayloadSize < 8 || run.PayloadSize > 4096:
		return usagef("--payload-size %d: 8 to 4096", run.PayloadSize)
	}
	plan, err := benchPlan(c, e, format)
	if err != nil {
		return err
	}
	rep, err := run.Run(c.Context, plan)
	if err != nil {
		return benchError(err)
	}
	return printFloorReport(e.stdout, format, rep)
}

func printFloorReport(w io.Writer, format format, r *load.FloorReport) error {
	if format == formatJSON {
		return writeJSON(w, r)
	}
	t := newTable(w)
	t.row("scenario", r.Scenario)
	t.row("pairs", strconv.Itoa(r.Pairs))
	t.row("workers", strconv.Itoa(r.Workers))
	t.row("rounds", strconv.Itoa(r.Rounds))
	t.row("first read", fmt.Sprintf("p50 %.3fms  p99 %.3fms  max %.3fms", r.FirstReadMS.P50, r.FirstReadMS.P99, r.FirstReadMS.Max))
	t.row("last read", fmt.Sprintf("p50 %.3fms  p99 %.3fms  max %.3fms", r.LastReadMS.P50, r.LastReadMS.P99, r.LastReadMS.Max))
	t.row("floor", fmt.Sprintf("%.3fms", r.FloorMS))
	t.row("cpu per write+read", fmt.Sprintf("%.2fµs", r.CPUUSPerWriteRead))
	t.row("duration", fmt.Sprintf("%.1fs", r.DurationS))
	return t.flush()
}
