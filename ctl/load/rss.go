package load

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// Probe measures a server's resident memory in bytes. A Probe is called
// from one goroutine at a time.
type Probe func(ctx context.Context) (int64, error)

// ProcRSS measures the process pid on this host: VmRSS from
// /proc/<pid>/status (Linux).
func ProcRSS(pid int) Probe {
	return func(context.Context) (int64, error) { return procRSS(pid) }
}

// ScrapeRSS measures a server through its Prometheus text endpoint at
// url: its process_resident_memory_bytes. A nil hc means a client with a
// 10 s timeout.
func ScrapeRSS(hc *http.Client, url string) Probe {
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Second}
	}
	return func(ctx context.Context) (int64, error) { return scrapeRSS(ctx, hc, url) }
}

// MetricsURL derives pushd's metrics endpoint, <ws base>/metrics, from
// its WebSocket device URL; "" if wsURL is not a ws:// or wss:// URL.
func MetricsURL(wsURL string) string {
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

// measure runs probe, warning through the plan when it fails; nil when
// there is no probe or it failed.
func (p Plan) measure(ctx context.Context, probe Probe, when string) *int64 {
	if probe == nil {
		return nil
	}
	v, err := probe(ctx)
	if err != nil {
		p.warn(fmt.Errorf("cannot measure server RSS %s: %w", when, err))
		return nil
	}
	return &v
}

// procRSS reads VmRSS from /proc/<pid>/status.
func procRSS(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("read rss of pid %d: %w", pid, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "VmRSS:") {
			continue
		}
		fields := strings.Fields(strings.TrimPrefix(line, "VmRSS:"))
		if len(fields) != 2 || fields[1] != "kB" {
			return 0, fmt.Errorf("pid %d: unexpected VmRSS line %q", pid, line)
		}
		kb, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("pid %d: VmRSS %q: %w", pid, fields[0], err)
		}
		return kb << 10, nil
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("read rss of pid %d: %w", pid, err)
	}
	return 0, fmt.Errorf("pid %d: no VmRSS in /proc status", pid)
}

// scrapeRSS reads process_resident_memory_bytes from a Prometheus text
// endpoint.
func scrapeRSS(ctx context.Context, hc *http.Client, url string) (int64, error) {
	v, err := scrapeMetric(ctx, hc, url, "process_resident_memory_bytes")
	return int64(v), err
}
