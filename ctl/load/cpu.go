package load

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// CPUProbe measures the CPU time a server has used so far (user and
// system, every thread). A CPUProbe is called from one goroutine at a time.
type CPUProbe func(ctx context.Context) (time.Duration, error)

// clockTick is the unit of /proc's utime and stime: USER_HZ, 100 on every
// Linux architecture Go supports.
const clockTick = 10 * time.Millisecond

// ProcCPU measures the process pid on this host: utime and stime from
// /proc/<pid>/stat (Linux), at 10 ms resolution.
func ProcCPU(pid int) CPUProbe {
	return func(context.Context) (time.Duration, error) { return procCPU(pid) }
}

// ScrapeCPU measures a server through its Prometheus text endpoint at
// url: its process_cpu_seconds_total. A nil hc means a client with a 10 s
// timeout.
func ScrapeCPU(hc *http.Client, url string) CPUProbe {
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Second}
	}
	return func(ctx context.Context) (time.Duration, error) {
		v, err := scrapeMetric(ctx, hc, url, "process_cpu_seconds_total")
		return time.Duration(v * float64(time.Second)), err
	}
}

func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read cpu of pid %d: %w", pid, err)
	}
	// The command name, field 2, is in parentheses and may hold spaces:
	// the fields after it start past the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	f := strings.Fields(s[i+1:])
	// After the name: state is field 3, utime 14 and stime 15.
	if i < 0 || len(f) < 13 {
		return 0, fmt.Errorf("pid %d: unexpected /proc stat %q", pid, s)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("pid %d: utime %q, stime %q", pid, f[11], f[12])
	}
	return time.Duration(utime+stime) * clockTick, nil
}

// selfCPU is the CPU time this process has used: user and system, every
// thread.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// measureCPU runs probe, warning through the plan when it fails; nil when
// there is no probe or it failed.
func (p Plan) measureCPU(ctx context.Context, probe CPUProbe, when string) *time.Duration {
	if probe == nil {
		return nil
	}
	v, err := probe(ctx)
	if err != nil {
		p.warn(fmt.Errorf("cannot measure server CPU %s: %w", when, err))
		return nil
	}
	return &v
}

// scrapeMetric reads the first sample of the metric name from a
// Prometheus text endpoint (its labels, if any, ignored).
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
