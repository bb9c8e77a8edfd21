package ctl

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
)

const (
	// maxConnsPerWorker keeps a worker process under the 20,000 open
	// files a process may hold here, with room for its own files.
	maxConnsPerWorker = 15000
	// workerStartTimeout bounds a worker's start up to its "ready" line.
	workerStartTimeout = 30 * time.Second
	// workerStopTimeout bounds the wait for a worker's final report once
	// told to stop; closing 15,000 connections takes well under it.
	workerStopTimeout = 60 * time.Second
)

// benchCommand groups the load tests.
func benchCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:  "bench",
		Usage: "load-test a pushd node",
		Subcommands: []*cli.Command{
			benchConnectCommand(e),
			benchPushCommand(e),
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
		&cli.StringFlag{Name: "pushd", Usage: "pushd binary for --local (default: next to pushctl, else on PATH)", TakesFile: true},
		&cli.StringFlag{Name: "metrics-url", Usage: "where to scrape the server's process_resident_memory_bytes (default: <ws base>/metrics)"},
	}
}

// workerPlan is one worker's share of the devices.
type workerPlan struct {
	first, count int
	source       string // local IP to bind, "" for the system's choice
}

// planWorkers splits n devices over worker processes of at most
// maxConnsPerWorker each, giving each worker a source address. A loopback
// target gets 127.0.0.2, .3, … by default, because one source address can
// hold only as many connections to one server port as the ephemeral port
// range allows.
func planWorkers(n, workers int, sourcesFlag, target string) ([]workerPlan, error) {
	if n <= 0 {
		return nil, usagef("need at least one device")
	}
	if workers < 0 {
		return nil, usagef("--workers %d: must not be negative", workers)
	}
	if workers == 0 {
		workers = (n + maxConnsPerWorker - 1) / maxConnsPerWorker
	}
	workers = min(workers, n)
	if per := (n + workers - 1) / workers; per > maxConnsPerWorker {
		return nil, usagef("%d devices over %d workers is %d per worker; a worker holds at most %d (a process may open at most 20,000 files): raise --workers",
			n, workers, per, maxConnsPerWorker)
	}
	var sources []string
	if sourcesFlag != "" {
		for _, s := range strings.Split(sourcesFlag, ",") {
			s = strings.TrimSpace(s)
			if net.ParseIP(s) == nil {
				return nil, usagef("--sources: %q is not an IP address", s)
			}
			sources = append(sources, s)
		}
	} else if loopbackTarget(target) {
		if workers > 253 {
			return nil, usagef("%d workers: too many for default loopback sources; give --sources", workers)
		}
		for i := range workers {
			sources = append(sources, "127.0.0."+strconv.Itoa(2+i))
		}
	}
	plans := make([]workerPlan, workers)
	perSource := map[string]int{}
	first := 0
	for i := range plans {
		count := n / workers
		if i < n%workers {
			count++
		}
		plans[i] = workerPlan{first: first, count: count}
		if len(sources) > 0 {
			plans[i].source = sources[i%len(sources)]
			perSource[plans[i].source] += count
		}
		first += count
	}
	if ports := ephemeralPorts(); ports > 0 {
		for s, c := range perSource {
			if c > ports {
				return nil, usagef("source %s would hold %d connections to one server port, but the ephemeral port range has %d ports: add --sources", s, c, ports)
			}
		}
	}
	return plans, nil
}

// loopbackTarget reports whether a device URL points at an IPv4 loopback
// address, where any 127.0.0.x can be a source.
func loopbackTarget(rawURL string) bool {
	u, err := url.Parse(rawURL)
	if err != nil {
		return false
	}
	host := u.Hostname()
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.To4() != nil && ip.IsLoopback()
}

// ephemeralPorts returns the size of the local port range, or 0 when it
// cannot be read (not Linux).
func ephemeralPorts() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0
	}
	lo, err1 := strconv.Atoi(f[0])
	hi, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil || hi < lo {
		return 0
	}
	return hi - lo + 1
}

// benchTarget holds what a bench run talks to, resolved from the config or
// from the throwaway local server.
type benchTarget struct {
	k          *config
	local      *localServer // nil unless --local
	deviceURL  string
	metricsURL string // "" when unknown
	app, keyID string
	secret     []byte
}

// resolveBenchTarget loads the config, starts the local server when asked
// (the caller must call stop), and resolves the device URL and token
// settings.
func resolveBenchTarget(c *cli.Context, e *env, localArgs []string) (_ *benchTarget, err error) {
	k, err := loadConfig(c, e)
	if err != nil {
		return nil, err
	}
	transport := c.String("transport")
	if transport != "ws" && transport != "tcp" {
		return nil, usagef("--transport %q: want ws or tcp", transport)
	}
	t := &benchTarget{k: k}
	_, urlFlag := lookupString(c, setURL.flag())
	if c.Bool("local") {
		if urlFlag {
			return nil, usagef("--url and --local exclude each other: --local uses the server it starts")
		}
		if t.local, err = startLocal(c.Context, e, c.String("pushd"), localArgs); err != nil {
			return nil, err
		}
		k.override = &t.local.cfg
		defer func() {
			if err != nil {
				t.stop()
			}
		}()
	}
	explicitURL := urlFlag || (t.local == nil && e.getenv(setURL.env()) != "")
	switch {
	case explicitURL || transport == "ws":
		t.deviceURL = k.get(setURL)
	default:
		t.deviceURL = k.fileValue(func(f *fileConfig) string { return f.TCPURL })
	}
	if t.deviceURL == "" {
		if transport == "tcp" {
			return nil, usagef("missing device URL: set --url or $%s, or \"tcp_url\" in the config file", setURL.env())
		}
		_, err := k.require(setURL)
		return nil, err
	}
	u, err := url.Parse(t.deviceURL)
	if err != nil || (u.Scheme != "ws" && u.Scheme != "wss" && u.Scheme != "tcp" && u.Scheme != "tls") || u.Host == "" {
		return nil, usagef("device URL %q: want ws://host:port/v1/ws or tcp://host:port", t.deviceURL)
	}
	t.metricsURL = c.String("metrics-url")
	if t.metricsURL == "" {
		ws := t.deviceURL
		if u.Scheme == "tcp" || u.Scheme == "tls" {
			ws = k.fileValue(func(f *fileConfig) string { return f.WSURL })
		}
		t.metricsURL = metricsURLFor(ws)
	}
	for _, s := range []struct {
		set setting
		dst *string
	}{{setApp, &t.app}, {setKeyID, &t.keyID}} {
		if *s.dst, err = k.require(s.set); err != nil {
			return nil, err
		}
	}
	if t.secret, err = k.secret(); err != nil {
		return nil, err
	}
	if _, err := mintFunc(t.app, t.keyID, t.secret)("bench-check"); err != nil {
		return nil, usagef("cannot mint device tokens: %v", err)
	}
	return t, nil
}

// stop stops the local server, if any.
func (t *benchTarget) stop() {
	if t.local != nil {
		t.local.stop()
		t.local = nil
	}
}

// metricsURLFor derives <ws base>/metrics from a WebSocket URL; "" if it is
// not one.
func metricsURLFor(wsURL string) string {
	u, err := url.Parse(wsURL)
	if err != nil || u.Host == "" {
		return ""
	}
	switch u.Scheme {
	case "ws":
		u.Scheme = "http"
	case "wss":
		u.Scheme = "https"
	default:
		return ""
	}
	return (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: "/metrics"}).String()
}

// runID names one bench run, so its device ids are its own: devices of an
// earlier run neither kick these nor leave messages in their inboxes.
func runID() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// sleepCtx waits d or until ctx is done.
func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// reasons counts failures by a short reason, keeping a few distinct ones
// so a run with thousands of failures prints a readable summary.
type reasons map[string]int

const maxReasons = 8

func (r reasons) add(reason string, n int) {
	if _, ok := r[reason]; !ok && len(r) >= maxReasons {
		reason = "other"
	}
	r[reason] += n
}

func (r reasons) merge(o map[string]int) {
	for k, v := range o {
		r.add(k, v)
	}
}

func (r reasons) String() string {
	parts := make([]string, 0, len(r))
	for k, v := range r {
		parts = append(parts, fmt.Sprintf("%d× %s", v, k))
	}
	slices.Sort(parts)
	return strings.Join(parts, "; ")
}
