package load

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// Probe measures a server: its resident memory in bytes (ProcRSS,
// ScrapeRSS), or the CPU time it has used so far in nanoseconds
// (ProcCPU, ScrapeCPU). A Probe is called from one goroutine at a time.
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

// ProcCPU measures the CPU time, user and system, the process pid has
// used: utime and stime from /proc/<pid>/stat (Linux), in clock ticks of
// 10 ms.
func ProcCPU(pid int) Probe {
	return func(context.Context) (int64, error) { return procCPU(pid) }
}

// ScrapeCPU measures a server's CPU time through its Prometheus text
// endpoint at url: its process_cpu_seconds_total. A nil hc means a client
// with a 10 s timeout.
func ScrapeCPU(hc *http.Client, url string) Probe {
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Second}
	}
	return func(ctx context.Context) (int64, error) {
		s, err := scrapeMetric(ctx, hc, url, "process_cpu_seconds_total")
		return int64(s * 1e9), err
	}
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
// there is no probe or it failed. what names the measure (server RSS,
// server CPU) and when the moment, in the warning.
func (p Plan) measure(ctx context.Context, probe Probe, what, when string) *int64 {
	if probe == nil {
		return nil
	}
	v, err := probe(ctx)
	if err != nil {
		p.warn(fmt.Errorf("cannot measure %s %s: %w", what, when, err))
		return nil
	}
	return &v
}

// clockTicks is the unit of utime and stime in /proc/<pid>/stat: USER_HZ,
// 100 on every Linux architecture Go supports.
const clockTicks = 100

// procCPU reads utime and stime from /proc/<pid>/stat, in nanoseconds.
func procCPU(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read cpu time of pid %d: %w", pid, err)
	}
	// The command name, field 2, is in parentheses and may hold spaces:
	// the fields counted from 3 start after its closing one.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("pid %d: unexpected /proc stat %q", pid, b)
	}
	fields := strings.Fields(string(b[i+1:]))
	// utime and stime are fields 14 and 15: 11 and 12 after field 3.
	if len(fields) < 13 {
		return 0, fmt.Errorf("pid %d: unexpected /proc stat %q", pid, b)
	}
	var ticks int64
	for _, f := range fields[11:13] {
		v, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("pid %d: /proc stat cpu time %q: %w", pid, f, err)
		}
		ticks += v
	}
	return ticks * (int64(time.Second) / clockTicks), nil
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

// scrapeMetric reads the value of the metric name, the first sample of
// it, from a Prometheus text endpoint.
func scrapeMetric(ctx context.Context, hc *http.Client, url, name string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, fmt.Errorf("scrape %s: %w", url, err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, fmt.Errorf("scrape %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("scrape %s: HTTP %d", url, resp.StatusCode)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, name)
		if !ok || (rest != "" && rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		fields := strings.Fields(rest)
		if strings.HasPrefix(rest, "{") {
			// Labels: the value follows the closing brace.
			if i := strings.LastIndexByte(rest, '}'); i >= 0 {
				fields = strings.Fields(rest[i+1:])
			}
		}
		if len(fields) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			return 0, fmt.Errorf("scrape %s: %s value %q: %w", url, name, fields[0], err)
		}
		return v, nil
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("scrape %s: %w", url, err)
	}
	return 0, fmt.Errorf("scrape %s: no %s (is this pushd's /metrics?)", url, name)
}
