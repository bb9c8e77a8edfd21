package ctl

import (
	"fmt"
	"io"
	"net/url"
	"strconv"
	"time"

	"github.com/urfave/cli/v2"
)

// maxAutoHold caps how far the hold is stretched to cover heartbeats
// without --heartbeat-check: with the default 30 s interval, holding for
// 75 s by default would make every run slow.
const maxAutoHold = time.Minute

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
		}, benchFlags()...), settingFlags(setURL, setApp, setKeyID, setSecret)...), outputFlags()...),
		Action: func(c *cli.Context) error { return runBenchConnect(c, e) },
	}
}

// connectReport is the result of bench connect; -o json prints it as is.
type connectReport struct {
	Scenario        string         `json:"scenario"`
	Transport       string         `json:"transport"`
	Conns           int            `json:"conns"`
	Connected       int            `json:"connected"`
	Workers         int            `json:"workers"`
	ConnectPerS     float64        `json:"connect_per_s"`
	ConnectS        float64        `json:"connect_s"`
	HoldS           float64        `json:"hold_s"`
	HeartbeatS      float64        `json:"heartbeat_s"`
	Errors          int            `json:"errors"`
	ConnectFailures int            `json:"connect_failures"`
	Drops           int            `json:"drops"`
	HeartbeatMisses *int           `json:"heartbeat_misses,omitempty"`
	ErrorReasons    map[string]int `json:"error_reasons,omitempty"`
	// Server memory: after everything connected and was held, before
	// connecting, and the difference per held connection. null when the
	// server could not be measured.
	ServerRSSBytes       *int64   `json:"server_rss_bytes"`
	ServerRSSBeforeBytes *int64   `json:"server_rss_before_bytes"`
	RSSBytesPerConn      *float64 `json:"rss_bytes_per_conn"`
	DurationS            float64  `json:"duration_s"`
}

func runBenchConnect(c *cli.Context, e *env) error {
	format, err := outputFormat(c)
	if err != nil {
		return err
	}
	if c.NArg() > 0 {
		return usagef("unexpected arguments %q", c.Args().Slice())
	}
	conns, hold, rate := c.Int("conns"), c.Duration("hold"), c.Float64("rate")
	switch {
	case conns < 1:
		return usagef("--conns %d: must be at least 1", conns)
	case hold < 0:
		return usagef("--hold %s: must not be negative", hold)
	case rate < 0:
		return usagef("--rate %g: must not be negative", rate)
	}
	var localArgs []string
	if hb := c.Duration("heartbeat"); hb > 0 {
		localArgs = append(localArgs, "--heartbeat", hb.String())
	}
	t, err := resolveBenchTarget(c, e, localArgs)
	if err != nil {
		return err
	}
	defer t.stop()
	plans, err := planWorkers(conns, c.Int("workers"), c.String("sources"), t.deviceURL)
	if err != nil {
		return err
	}
	ctx := c.Context
	prefix := "bench-" + runID() + "-"
	jobs := make([]workerJob, len(plans))
	for i, p := range plans {
		jobs[i] = workerJob{Scenario: scenarioConnect, URL: t.deviceURL, App: t.app, KeyID: t.keyID, Secret: t.secret,
			DevicePrefix: prefix, First: p.first, Count: p.count, Source: p.source,
			Rate: rate * float64(p.count) / float64(conns), HeartbeatCheck: c.Bool("heartbeat-check")}
	}
	rep := &connectReport{Scenario: "connect", Transport: transportOf(t.deviceURL), Conns: conns, Workers: len(plans)}
	reasons := reasons{}

	pool, err := startPool(ctx, e, jobs, nil)
	if err != nil {
		return err
	}
	defer pool.close()
	if _, err := pool.await(ctx, evReady, workerStartTimeout); err != nil {
		return err
	}
	probe := serverRSS(t)
	before := measureRSS(c, e, probe, "before connecting")

	start := time.Now()
	if err := pool.send(cmdStart); err != nil {
		return err
	}
	connected, err := pool.await(ctx, evConnected, 0)
	if err != nil {
		return err
	}
	connectDur := time.Since(start)
	var hb time.Duration
	for _, ev := range connected {
		rep.Connected += ev.OK
		rep.ConnectFailures += ev.Failed
		reasons.merge(ev.Errors)
		hb = max(hb, time.Duration(ev.HeartbeatMS)*time.Millisecond)
	}
	rep.ConnectS = connectDur.Seconds()
	if connectDur > 0 {
		rep.ConnectPerS = float64(rep.Connected) / connectDur.Seconds()
	}
	rep.HeartbeatS = hb.Seconds()
	held := effectiveHold(hold, hb, c.Bool("heartbeat-check"))
	if rep.Connected == 0 {
		held = 0 // nothing to hold
	}
	rep.HoldS = held.Seconds()
	if format == formatTable {
		fmt.Fprintf(e.stderr, "pushctl bench: %d/%d connected in %.2fs; holding %s\n", rep.Connected, conns, rep.ConnectS, held)
	}
	if err := sleepCtx(ctx, held); err != nil {
		return err
	}
	after := measureRSS(c, e, probe, "after the hold")
	if err := pool.send(cmdStop); err != nil {
		return err
	}
	done, err := pool.await(ctx, evDone, workerStopTimeout)
	if err != nil {
		return err
	}
	rep.DurationS = time.Since(start).Seconds()
	alive := 0
	misses := 0
	for _, ev := range done {
		rep.Drops += ev.Drops
		misses += ev.HeartbeatMisses
		alive += ev.Alive
		reasons.merge(ev.Errors)
	}
	if c.Bool("heartbeat-check") {
		rep.HeartbeatMisses = &misses
	}
	rep.Errors = rep.ConnectFailures + rep.Drops + misses
	if len(reasons) > 0 {
		rep.ErrorReasons = reasons
	}
	rep.ServerRSSBytes, rep.ServerRSSBeforeBytes = after, before
	if after != nil && before != nil && alive > 0 {
		per := float64(*after-*before) / float64(alive)
		rep.RSSBytesPerConn = &per
	}
	if err := printConnectReport(e.stdout, format, rep); err != nil {
		return err
	}
	if rep.Errors > 0 {
		fmt.Fprintf(e.stderr, "pushctl bench connect: %d errors: %s\n", rep.Errors, reasons)
		return errReported
	}
	return nil
}

// effectiveHold stretches the hold to 2.5 heartbeat intervals, so every
// connection has pinged at least twice and the server's idle reaper (two
// missed intervals) has had its chance: always with --heartbeat-check,
// otherwise only when that is short.
func effectiveHold(hold, hb time.Duration, check bool) time.Duration {
	if hb <= 0 {
		return hold
	}
	need := 2*hb + hb/2
	if check || need <= maxAutoHold {
		return max(hold, need)
	}
	return hold
}

// measureRSS probes the server, warning on stderr when it cannot.
func measureRSS(c *cli.Context, e *env, probe rssProbe, when string) *int64 {
	if probe == nil {
		fmt.Fprintf(e.stderr, "pushctl bench: cannot measure server RSS %s: no metrics URL (pass --metrics-url)\n", when)
		return nil
	}
	v, err := probe(c.Context)
	if err != nil {
		fmt.Fprintf(e.stderr, "pushctl bench: cannot measure server RSS %s: %v\n", when, err)
		return nil
	}
	return &v
}

func transportOf(deviceURL string) string {
	u, err := url.Parse(deviceURL)
	if err != nil {
		return ""
	}
	return u.Scheme
}

func printConnectReport(w io.Writer, format format, r *connectReport) error {
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
