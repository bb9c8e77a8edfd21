package ctl

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/pushd/pushd/ctl/load"
)

// benchCommand groups the load tests. The load generator itself is
// package load; the bench commands turn flags and settings into its
// input and print its reports.
func benchCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:  "bench",
		Usage: "load-test a pushd node",
		Subcommands: []*cli.Command{
			benchConnectCommand(e),
			benchPushCommand(e),
			benchBridgeCommand(e),
			benchFloorCommand(e),
			benchFanoutCommand(e),
			benchWorkerCommand(e),
		},
	}
}

// benchFlags are the flags both scenarios share: where the devices
// connect from and to, and the throwaway local server.
func benchFlags() []cli.Flag {
	return []cli.Flag{
		&cli.IntFlag{Name: "workers", Usage: "worker processes holding the connections (default: one per 15,000)"},
		&cli.StringFlag{Name: "transport", Usage: "ws or tcp: which config URL to use when --url is not given", Value: "ws"},
		&cli.StringFlag{Name: "sources", Usage: "comma-separated local addresses, one per worker in turn (default for a loopback target: 127.0.0.2, 127.0.0.3, …)"},
		&cli.BoolFlag{Name: "local", Usage: "start a throwaway `pushd --dev` for the run and stop it after"},
		&cli.BoolFlag{Name: "tls", Usage: "with --local: TLS on every hop (pushd --dev-tls: devices, push API and Redis, and Raft and the admin API with mutual TLS)"},
		&cli.StringFlag{Name: "pushd", Usage: "pushd binary for --local (default: next to pushctl, else on PATH)", TakesFile: true},
		&cli.StringFlag{Name: "metrics-url", Usage: "where to scrape the server's process_resident_memory_bytes and process_cpu_seconds_total (default: <ws base>/metrics)"},
	}
}

// benchPlan turns the shared flags into a load.Plan: workers re-executing
// pushctl as `pushctl bench worker` (in tests, e.worker in goroutines),
// warnings on stderr, and progress on stderr too unless the output is
// JSON.
func benchPlan(c *cli.Context, e *env, format format) (load.Plan, error) {
	p := load.Plan{
		Workers: c.Int("workers"),
		Warn:    func(err error) { fmt.Fprintf(e.stderr, "pushctl bench: %v\n", err) },
	}
	if p.Workers < 0 {
		return p, usagef("--workers %d: must not be negative", p.Workers)
	}
	if s := c.String("sources"); s != "" {
		for _, src := range strings.Split(s, ",") {
			src = strings.TrimSpace(src)
			if net.ParseIP(src) == nil {
				return p, usagef("--sources: %q is not an IP address", src)
			}
			p.Sources = append(p.Sources, src)
		}
	}
	if format == formatTable {
		p.Progress = func(s string) { fmt.Fprintf(e.stderr, "pushctl bench: %s\n", s) }
	}
	if e.worker != nil {
		p.Spawn = load.InProcess(e.worker, e.stderr)
	} else {
		p.Spawn = func(ctx context.Context) (*load.Proc, error) {
			exe, err := os.Executable()
			if err != nil {
				return nil, fmt.Errorf("find pushctl executable: %w", err)
			}
			return load.Exec(exe, []string{"bench", "worker"}, e.stderr)(ctx)
		}
	}
	return p, nil
}

// benchError makes a load plan error a usage error: the flags asked for
// something that cannot run.
func benchError(err error) error {
	if errors.Is(err, load.ErrPlan) {
		return usagef("%v", err)
	}
	return err
}

// benchTarget holds what a bench run talks to, resolved from the config or
// from the throwaway local server.
type benchTarget struct {
	k          *config
	local      *load.Local // nil unless --local
	target     load.Target
	metricsURL string      // "" when unknown
	tls        *tls.Config // what https:// and wss:// trust; nil: the system's roots
	stderr     io.Writer
}

// resolveBenchTarget loads the config, starts the local server when asked
// (the caller must call stop), and resolves the device URL and token
// settings; devices false resolves only what a run whose devices never
// connect needs (the app).
func resolveBenchTarget(c *cli.Context, e *env, devices bool, localArgs []string) (_ *benchTarget, err error) {
	k, err := loadConfig(c, e)
	if err != nil {
		return nil, err
	}
	transport := c.String("transport")
	if devices && transport != "ws" && transport != "tcp" {
		return nil, usagef("--transport %q: want ws or tcp", transport)
	}
	t := &benchTarget{k: k, stderr: e.stderr}
	_, urlFlag := lookupString(c, setURL.flag())
	if c.Bool("tls") && !c.Bool("local") {
		return nil, usagef("--tls goes with --local; a region of your own says how it is reached in its URLs (https://, wss://) and --ca-file")
	}
	if c.Bool("local") {
		if devices && urlFlag {
			return nil, usagef("--url and --local exclude each other: --local uses the server it starts")
		}
		if err := t.startLocal(c, e, localArgs); err != nil {
			return nil, err
		}
		defer func() {
			if err != nil {
				t.stop()
			}
		}()
	}
	if !devices {
		return t, nil
	}
	explicitURL := urlFlag || (t.local == nil && e.getenv(setURL.env()) != "")
	switch {
	case explicitURL || transport == "ws":
		t.target.URL = k.get(setURL)
	default:
		t.target.URL = k.fileValue(func(f *fileConfig) string { return f.TCPURL })
	}
	if t.target.URL == "" {
		if transport == "tcp" {
			return nil, usagef("missing device URL: set --url or $%s, or \"tcp_url\" in the config file", setURL.env())
		}
		_, err := k.require(setURL)
		return nil, err
	}
	u, err := url.Parse(t.target.URL)
	if err != nil || (u.Scheme != "ws" && u.Scheme != "wss" && u.Scheme != "tcp" && u.Scheme != "tls") || u.Host == "" {
		return nil, usagef("device URL %q: want ws://host:port/v1/ws or tcp://host:port", t.target.URL)
	}
	if t.target.CA, err = k.caPEM(); err != nil {
		return nil, err
	}
	if t.tls, err = k.tlsConfig(); err != nil {
		return nil, err
	}
	t.metricsURL = c.String("metrics-url")
	if t.metricsURL == "" {
		ws := t.target.URL
		if u.Scheme == "tcp" || u.Scheme == "tls" {
			ws = k.fileValue(func(f *fileConfig) string { return f.WSURL })
		}
		t.metricsURL = load.MetricsURL(ws)
	}
	for _, s := range []struct {
		set setting
		dst *string
	}{{setApp, &t.target.App}, {setKeyID, &t.target.KeyID}} {
		if *s.dst, err = k.require(s.set); err != nil {
			return nil, err
		}
	}
	if t.target.Secret, err = k.secret(); err != nil {
		return nil, err
	}
	t.target.Insecure = c.Bool("insecure")
	return t, nil
}

// startLocal starts the throwaway server of --local and makes the config
// file it wrote this run's settings, ahead of the environment, which
// describes some other server.
func (t *benchTarget) startLocal(c *cli.Context, e *env, args []string) error {
	if c.Bool("tls") {
		args = append(args, "--dev-tls")
	}
	l, err := load.StartLocal(c.Context, c.String("pushd"), args...)
	if errors.Is(err, load.ErrNoPushd) {
		return usagef("--local: no pushd binary next to pushctl or on PATH; build one (go build -o bin/pushd ./appliance/cmd/pushd) or pass --pushd")
	}
	if err != nil {
		return fmt.Errorf("--local: %w", err)
	}
	t.local = l
	fmt.Fprintf(e.stderr, "pushctl bench: started %s (pid %d) in %s\n", l.Bin, l.PID(), l.Dir)
	b, err := readLimited(l.ConfigFile, maxConfigBytes)
	if err == nil {
		var f fileConfig
		if err = json.Unmarshal(b, &f); err == nil {
			t.k.override = &f
			return nil
		}
	}
	t.stop()
	return fmt.Errorf("--local: read %s: %w", l.ConfigFile, err)
}

// stop stops the local server, if any.
func (t *benchTarget) stop() {
	if t.local == nil {
		return
	}
	if err := t.local.Stop(); err != nil {
		fmt.Fprintf(t.stderr, "pushctl bench: %v\n", err)
	}
	t.local = nil
}

// cpu picks how to measure the server's CPU: /proc for the pushd --local
// started, else its Prometheus endpoint; a probe that says why not when
// neither is possible.
func (t *benchTarget) cpu() load.CPUProbe {
	if t.local != nil {
		return t.local.CPU()
	}
	if t.metricsURL == "" {
		return func(context.Context) (time.Duration, error) {
			return 0, errors.New("no metrics URL (pass --metrics-url)")
		}
	}
	return load.ScrapeCPU(httpClient(1, t.tls), t.metricsURL)
}

// rss picks how to measure the server: /proc for the pushd --local
// started, else its Prometheus endpoint; a probe that says why not when
// neither is possible.
func (t *benchTarget) rss() load.Probe {
	if t.local != nil {
		return t.local.RSS()
	}
	if t.metricsURL == "" {
		return func(context.Context) (int64, error) {
			return 0, errors.New("no metrics URL (pass --metrics-url)")
		}
	}
	return load.ScrapeRSS(httpClient(1, t.tls), t.metricsURL)
}
