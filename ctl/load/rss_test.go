package load

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pushd/pushd/internal/poll"
)

func TestServerRSS_ProcAndMetrics(t *testing.T) {
	t.Parallel()
	rss, err := procRSS(os.Getpid())
	if err != nil || rss < 1<<20 {
		t.Fatalf("procRSS(self) = %d, %v", rss, err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"+
			"# TYPE process_resident_memory_bytes gauge\n"+
			"process_resident_memory_bytes_total 1\n"+
			"process_resident_memory_bytes 4.5056e+07\n")
	}))
	defer srv.Close()
	v, err := scrapeRSS(context.Background(), http.DefaultClient, srv.URL)
	if err != nil || v != 45056000 {
		t.Fatalf("scrapeRSS = %d, %v", v, err)
	}
	if _, err := scrapeRSS(context.Background(), http.DefaultClient, srv.URL+"/x"); err != nil {
		t.Fatalf("same body on another path: %v", err)
	}
	if got := MetricsURL("wss://push.example.com:8443/v1/ws"); got != "https://push.example.com:8443/metrics" {
		t.Errorf("metrics url %q", got)
	}
	if got := MetricsURL("tcp://h:1"); got != "" {
		t.Errorf("metrics url for tcp %q", got)
	}
}

func TestProbes(t *testing.T) {
	t.Parallel()
	if v, err := ProcRSS(os.Getpid())(context.Background()); err != nil || v <= 0 {
		t.Fatalf("ProcRSS(self) = %d, %v", v, err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "process_resident_memory_bytes{instance=\"a\"} 1024\n")
	}))
	defer srv.Close()
	if v, err := ScrapeRSS(nil, srv.URL)(context.Background()); err != nil || v != 1024 {
		t.Fatalf("ScrapeRSS with labels = %d, %v", v, err)
	}
	var warned []error
	p := Plan{Warn: func(err error) { warned = append(warned, err) }}
	if v := p.measure(context.Background(), ScrapeRSS(nil, srv.URL+"/"), "server RSS", "now"); v == nil || *v != 1024 {
		t.Errorf("measure = %v", v)
	}
	failing := func(context.Context) (int64, error) { return 0, fmt.Errorf("down") }
	if v := p.measure(context.Background(), failing, "server RSS", "before connecting"); v != nil || len(warned) != 1 ||
		warned[0].Error() != "cannot measure server RSS before connecting: down" {
		t.Errorf("failed measure = %v, warned %v", v, warned)
	}
	if v := p.measure(context.Background(), nil, "server RSS", "now"); v != nil || len(warned) != 1 {
		t.Errorf("nil probe = %v, warned %v", v, warned)
	}
}

// TestProbes_CPU: the CPU time of a process through /proc grows as it
// works; through /metrics it is process_cpu_seconds_total.
func TestProbes_CPU(t *testing.T) {
	t.Parallel()
	before, err := ProcCPU(os.Getpid())(context.Background())
	if err != nil || before < 0 {
		t.Fatalf("ProcCPU(self) = %s, %v", before, err)
	}
	var after time.Duration
	poll.Until(t, 30*time.Second, func() error {
		// Busy for 50 ms of wall time: at least a clock tick of CPU
		// once the scheduler lets this run.
		for start := time.Now(); time.Since(start) < 50*time.Millisecond; {
		}
		if after, err = procCPU(os.Getpid()); err != nil || after <= before {
			return fmt.Errorf("cpu time %s after work, %s before (%v)", after, before, err)
		}
		return nil
	})
	if _, err := procCPU(1 << 30); err == nil {
		t.Error("procCPU of a pid that does not exist: no error")
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 12.25\n")
	}))
	defer srv.Close()
	if v, err := ScrapeCPU(nil, srv.URL)(context.Background()); err != nil || v != 12250*time.Millisecond {
		t.Fatalf("ScrapeCPU = %s, %v", v, err)
	}
	empty := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer empty.Close()
	if _, err := ScrapeCPU(nil, empty.URL)(context.Background()); err == nil || !strings.Contains(err.Error(), "no process_cpu_seconds_total") {
		t.Fatalf("ScrapeCPU of a page without it: %v", err)
	}
}
