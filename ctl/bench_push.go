package ctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/pushd/pushd/appliance/api"
	"github.com/pushd/pushd/ctl/load"
)

func benchPushCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:  "push",
		Usage: "drive the push API and measure delivery rate, latency and loss",
		Description: "--mode online (default): devices are held connected by worker processes with the Go SDK,\n" +
			"which receive and ack; every payload carries its send time, so each receipt yields the\n" +
			"push→device latency. At the end pushctl waits until each device's ack cursor covers what it\n" +
			"was sent, then counts lost (accepted, never received) and duplicate messages.\n" +
			"--mode stored: devices stay offline (fresh ids per run); measures the durable accept rate and\n" +
			"then checks through GET /v1/devices that every inbox holds what was accepted.\n" +
			"With an admin URL and token (--local, pushd --dev's pushctl.json, or the flags), it also reads\n" +
			"the Redis primaries' CPU time from the region's status before and after sending: the Redis CPU\n" +
			"per pushed device-message (redis_cpu_us_per_push).\n" +
			"Exits 1 when anything was lost, duplicated, refused or left unacked.",
		Flags: append(append(append(append([]cli.Flag{
			&cli.StringFlag{Name: "mode", Usage: "online or stored", Value: "online"},
			&cli.DurationFlag{Name: "wait", Usage: "how long to wait at the end for acks (online) or to verify inboxes (stored)", Value: 30 * time.Second},
		}, pushLoadFlags()...), benchFlags()...), append(settingFlags(setPushURL, setURL, setApp, setAPIKey, setKeyID, setSecret, setAdminURL, setAdminToken), insecureFlag())...), outputFlags()...),
		Action: func(c *cli.Context) error { return runBenchPush(c, e) },
	}
}

func runBenchPush(c *cli.Context, e *env) error {
	format, err := outputFormat(c)
	if err != nil {
		return err
	}
	if c.NArg() > 0 {
		return usagef("unexpected arguments %q", c.Args().Slice())
	}
	run, err := pushFromFlags(c)
	if err != nil {
		return err
	}
	plan, err := benchPlan(c, e, format)
	if err != nil {
		return err
	}
	t, err := resolveBenchTarget(c, e, !run.Stored, nil)
	if err != nil {
		return err
	}
	defer t.stop()
	run.Target = t.target
	if run.Target.App, err = t.k.require(setApp); err != nil {
		return err
	}
	cl, err := pushClient(t.k, run.Concurrency)
	if err != nil {
		return err
	}
	run.API, run.CPU = cl, t.cpu()
	run.RedisCPU = redisCPU(t.k)
	rep, err := run.Run(c.Context, plan)
	if rep == nil {
		return benchError(err)
	}
	if err := printPushReport(e.stdout, format, rep); err != nil {
		return err
	}
	if err != nil {
		return err
	}
	if rep.Trimmed > 0 {
		fmt.Fprintf(e.stderr, "pushctl bench push: note: the inbox cap trimmed %d pushes, more than it holds per device; not lost (each device is told of the gap) but not measured either: give more --devices\n", rep.Trimmed)
	}
	if rep.Lost+rep.Duplicates+rep.Errors+rep.Unacked > 0 {
		fmt.Fprintf(e.stderr, "pushctl bench push: %d lost, %d duplicates, %d errors, %d unacked", rep.Lost, rep.Duplicates, rep.Errors, rep.Unacked)
		if len(rep.ErrorReasons) > 0 {
			fmt.Fprintf(e.stderr, ": %s", rep.ErrorReasons)
		}
		fmt.Fprintln(e.stderr)
		return errReported
	}
	return nil
}

// pushFromFlags reads and checks the flags of bench push.
func pushFromFlags(c *cli.Context) (load.Push, error) {
	mode := c.String("mode")
	if mode != "online" && mode != "stored" {
		return load.Push{}, usagef("--mode %q: want online or stored", mode)
	}
	s, err := pushLoadFromFlags(c)
	s.Stored = mode == "stored"
	return s, err
}

// pushLoadFlags are the flags of the pushes bench push and bench bridge
// send.
func pushLoadFlags() []cli.Flag {
	return []cli.Flag{
		&cli.IntFlag{Name: "devices", Usage: "distinct target devices", Value: 1000},
		&cli.IntFlag{Name: "pushes", Usage: "device-messages to send (default: 10 per device, or unlimited with --duration)"},
		&cli.IntFlag{Name: "batch", Usage: "devices per request (each request is one message)", Value: 100},
		&cli.Float64Flag{Name: "rate", Usage: "device-messages per second, 0 for as fast as possible"},
		&cli.DurationFlag{Name: "duration", Usage: "stop sending after this long"},
		&cli.IntFlag{Name: "payload-size", Usage: "payload bytes, at least 20 (the send time)", Value: 64},
		&cli.IntFlag{Name: "concurrency", Usage: "requests in flight", Value: 8},
	}
}

// pushLoadFromFlags reads and checks pushLoadFlags and --wait.
func pushLoadFromFlags(c *cli.Context) (load.Push, error) {
	s := load.Push{Devices: c.Int("devices"), Pushes: c.Int("pushes"), Batch: c.Int("batch"),
		Rate: c.Float64("rate"), Duration: c.Duration("duration"), PayloadSize: c.Int("payload-size"),
		Concurrency: c.Int("concurrency"), Wait: c.Duration("wait")}
	switch {
	case s.Devices < 1:
		return s, usagef("--devices %d: must be at least 1", s.Devices)
	case s.Batch < 1 || s.Batch > load.MaxBatch || s.Batch > s.Devices:
		return s, usagef("--batch %d: must be 1..%d and at most --devices (%d)", s.Batch, load.MaxBatch, s.Devices)
	case s.Pushes < 0 || s.Duration < 0 || s.Rate < 0:
		return s, usagef("--pushes, --duration and --rate must not be negative")
	case s.PayloadSize < load.MinPayload || s.PayloadSize > load.MaxPayload:
		return s, usagef("--payload-size %d: must be %d..%d (the payload carries its send time)", s.PayloadSize, load.MinPayload, load.MaxPayload)
	case s.Concurrency < 1:
		return s, usagef("--concurrency %d: must be at least 1", s.Concurrency)
	case s.Wait <= 0:
		return s, usagef("--wait %s: must be positive", s.Wait)
	}
	return s, nil
}

func printPushReport(w io.Writer, format format, r *load.PushReport) error {
	if format == formatJSON {
		return writeJSON(w, r)
	}
	t := newTable(w)
	t.row("scenario", r.Scenario)
	t.row("mode", r.Mode)
	if r.Region != "" {
		t.row("region", r.Region+" (the devices'; pushed through another)")
	}
	if r.Transport != "" {
		t.row("transport", r.Transport)
	}
	t.row("devices", fmt.Sprintf("%d (batch %d)", r.Devices, r.Batch))
	if r.Workers > 0 {
		t.row("workers", strconv.Itoa(r.Workers))
	}
	t.row("pushes", fmt.Sprintf("%d accepted of %d sent", r.Pushes, r.Requested))
	if r.Mode == "online" {
		t.row("received", strconv.Itoa(r.Received))
		t.row("delivered rate", fmt.Sprintf("%.1f pushes/s", r.PushesPerS))
		t.row("accept rate", fmt.Sprintf("%.1f pushes/s", r.AcceptPerS))
		t.row("latency push→device", fmt.Sprintf("p50 %.3fms  p99 %.3fms  max %.3fms", r.LatencyMS.P50, r.LatencyMS.P99, r.LatencyMS.Max))
	} else {
		t.row("accept rate", fmt.Sprintf("%.1f pushes/s", r.AcceptPerS))
		t.row("latency request", fmt.Sprintf("p50 %.3fms  p99 %.3fms  max %.3fms", r.LatencyMS.P50, r.LatencyMS.P99, r.LatencyMS.Max))
	}
	t.row("lost", strconv.Itoa(r.Lost))
	if r.Trimmed > 0 {
		t.row("trimmed by the inbox cap", strconv.Itoa(r.Trimmed))
	}
	t.row("duplicates", strconv.Itoa(r.Duplicates))
	t.row("errors", fmt.Sprintf("%d (failed requests %d)", r.Errors, r.FailedRequests))
	if r.Mode == "online" {
		t.row("unacked", strconv.Itoa(r.Unacked))
		t.row("device drops", strconv.Itoa(r.Drops))
	}
	if r.RedisCPUPerPushUS > 0 {
		t.row("redis CPU", fmt.Sprintf("%.1f µs per push", r.RedisCPUPerPushUS))
	}
	t.row("duration", fmt.Sprintf("%.3fs", r.DurationS))
	cpu := "unknown"
	if r.ServerCPUS != nil {
		cpu = fmt.Sprintf("%.2fs", *r.ServerCPUS)
		if r.ServerCPUUSPerPush != nil {
			cpu += fmt.Sprintf(" (%.2fµs per push)", *r.ServerCPUUSPerPush)
		}
	}
	t.row("server cpu", cpu)
	return t.flush()
}

// redisCPU reads the region's Redis CPU from its status (the primaries'
// CPU time, added up), or is nil without an admin URL and token.
func redisCPU(k *config) func(ctx context.Context) (time.Duration, error) {
	base, tok := k.get(setAdminURL), k.get(setAdminToken)
	if base == "" || tok == "" {
		return nil
	}
	cl, err := api.NewClient(base, tok, nil)
	if err != nil {
		return nil
	}
	return func(ctx context.Context) (time.Duration, error) {
		st, err := cl.Status(ctx)
		if err != nil {
			return 0, err
		}
		rt := st.RedisTopology
		if rt == nil || rt.Error != "" || len(rt.Primaries) == 0 {
			return 0, errors.New("the status shows no Redis primaries")
		}
		var s float64
		for _, p := range rt.Primaries {
			s += p.CPUSeconds
		}
		return time.Duration(s * float64(time.Second)), nil
	}
}
