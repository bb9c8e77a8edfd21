package ctl

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pushd/pushd/appliance"
	"github.com/pushd/pushd/internal/poll"
)

// TestBenchConnect_InProcessWorkers opens 200 real sessions from two
// in-process workers against a node and checks the report.
func TestBenchConnect_InProcessWorkers(t *testing.T) {
	t.Parallel()
	node := startTestNode(t, false)
	start := time.Now()
	r := harness{env: node.env()}.run(t, "bench", "connect", "--conns", "200", "--workers", "2", "--hold", "100ms", "--json").expect(t, exitOK)
	rep := decodeJSON[connectReport](t, r)
	if rep.Scenario != "connect" || rep.Transport != "ws" || rep.Conns != 200 || rep.Connected != 200 || rep.Workers != 2 || rep.Errors != 0 {
		t.Fatalf("report %+v\nstderr:\n%s", rep, r.stderr)
	}
	if rep.ConnectPerS <= 0 || rep.ConnectS <= 0 || rep.HeartbeatS != 0.4 {
		t.Errorf("rates %+v", rep)
	}
	// The node's heartbeat is 400ms: the hold stretches to 2.5 intervals.
	if rep.HoldS != 1.0 || time.Since(start) < time.Second {
		t.Errorf("hold %.2fs after %s, want 1s", rep.HoldS, time.Since(start))
	}
	if rep.ServerRSSBytes == nil || *rep.ServerRSSBytes <= 0 || rep.ServerRSSBeforeBytes == nil || rep.RSSBytesPerConn == nil {
		t.Errorf("rss not measured: %+v\nstderr:\n%s", rep, r.stderr)
	}
}

func TestBenchConnect_TCPWithHeartbeatCheck(t *testing.T) {
	t.Parallel()
	node := startTestNode(t, false)
	r := harness{env: node.env()}.run(t, "bench", "connect", "--conns", "50", "--url", node.tcpURL(),
		"--metrics-url", "http://"+node.n.Addrs().WS+"/metrics", "--heartbeat-check", "--hold", "0s", "--rate", "500").expect(t, exitOK)
	for _, want := range []string{
		"transport     tcp",
		"conns         50 requested, 50 connected",
		"errors        0 (connect failures 0, drops 0, heartbeat misses 0)",
		"held          1.0s (heartbeat 0.4s)",
	} {
		if err := contains(r.stdout, want); err != nil {
			t.Error(err)
		}
	}
	// 50 connects at 500/s take about 0.1s.
	rep := decodeJSON[connectReport](t, harness{env: node.env()}.run(t, "bench", "connect", "--conns", "50", "--url", node.tcpURL(),
		"--hold", "0s", "--rate", "500", "-o", "json").expect(t, exitOK))
	if rep.ConnectS < 0.09 || rep.ConnectPerS > 600 {
		t.Errorf("rate not applied: %d in %.3fs (%.0f/s)", rep.Connected, rep.ConnectS, rep.ConnectPerS)
	}
}

// TestBenchConnect_DropsAreErrors stops the node during the hold: every
// connection drops, and the run says so and exits 1.
func TestBenchConnect_DropsAreErrors(t *testing.T) {
	t.Parallel()
	node := startTestNode(t, false)
	_, errOut, _, done := harness{env: node.env()}.start(t, "bench", "connect", "--conns", "20", "--hold", "2s")
	poll.Until(t, 10*time.Second, func() error { return contains(errOut.String(), "20/20 connected") })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := node.n.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("bench did not finish")
	}
	if err := contains(errOut.String(), "pushctl bench connect: 20 errors: 20× control drain"); err != nil {
		t.Error(err)
	}
}

func TestBenchConnect_ConnectFailuresAreErrors(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	env := testEnv("")
	r := harness{env: env}.run(t, "bench", "connect", "--conns", "5", "--url", "ws://"+addr+"/v1/ws", "--json").expect(t, exitFailure)
	rep := decodeJSON[connectReport](t, r)
	if rep.Connected != 0 || rep.ConnectFailures != 5 || rep.Errors != 5 || rep.ServerRSSBytes != nil {
		t.Fatalf("report %+v", rep)
	}
	if rep.ErrorReasons["connect: connection refused"] != 5 {
		t.Errorf("reasons %v", rep.ErrorReasons)
	}
	if err := contains(r.stderr, "cannot measure server RSS"); err != nil {
		t.Error(err)
	}
}

func TestBenchConnect_UsageErrors(t *testing.T) {
	t.Parallel()
	env := testEnv("")
	env["PUSHD_URL"] = "ws://127.0.0.1:1/v1/ws"
	h := harness{env: env}
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--conns", "0"}, "--conns 0"},
		{[]string{"--conns", "40000", "--workers", "2"}, "at most 15000"},
		{[]string{"--sources", "127.0.0.2,nope"}, `"nope" is not an IP`},
		{[]string{"--transport", "quic"}, "--transport"},
		{[]string{"--url", "http://x"}, "want ws://"},
		{[]string{"--local", "--url", "ws://x/v1/ws"}, "exclude each other"},
		{[]string{"--local", "--pushd", "/nonexistent/pushd"}, "start /nonexistent/pushd"},
	}
	for _, tc := range cases {
		r := h.run(t, append([]string{"bench", "connect"}, tc.args...)...)
		if r.code == exitOK {
			t.Errorf("%v: succeeded", tc.args)
			continue
		}
		if err := contains(r.stderr, tc.want); err != nil {
			t.Errorf("%v: %v", tc.args, err)
		}
	}
	noURL := testEnv("")
	r := harness{env: noURL}.run(t, "bench", "connect").expect(t, exitUsage)
	if err := contains(r.stderr, "missing url: set --url or $PUSHD_URL"); err != nil {
		t.Error(err)
	}
}

func TestPlanWorkers(t *testing.T) {
	t.Parallel()
	ws := "ws://127.0.0.1:8080/v1/ws"
	plans, err := planWorkers(40000, 0, "", ws)
	if err != nil || len(plans) != 3 {
		t.Fatalf("40000 conns: %v, %v", plans, err)
	}
	want := []workerPlan{{0, 13334, "127.0.0.2"}, {13334, 13333, "127.0.0.3"}, {26667, 13333, "127.0.0.4"}}
	for i := range want {
		if plans[i] != want[i] {
			t.Errorf("plan %d = %+v, want %+v", i, plans[i], want[i])
		}
	}
	plans, _ = planWorkers(10, 4, "10.0.0.1,10.0.0.2", "ws://push.example.com/v1/ws")
	if plans[2].source != "10.0.0.1" || plans[3].source != "10.0.0.2" || plans[0].count != 3 || plans[3].count != 2 {
		t.Errorf("explicit sources: %+v", plans)
	}
	plans, _ = planWorkers(10, 2, "", "ws://push.example.com/v1/ws")
	if plans[0].source != "" {
		t.Errorf("remote target got a loopback source: %+v", plans)
	}
	plans, _ = planWorkers(3, 8, "", ws)
	if len(plans) != 3 {
		t.Errorf("more workers than conns: %+v", plans)
	}
	if ports := ephemeralPorts(); ports > 0 {
		if _, err := planWorkers(2*ports, 8, "127.0.0.2", ws); err == nil || !strings.Contains(err.Error(), "ephemeral port range") {
			t.Errorf("one source for %d conns: %v", 2*ports, err)
		}
	}
}

func TestEffectiveHold(t *testing.T) {
	t.Parallel()
	cases := []struct {
		hold, hb time.Duration
		check    bool
		want     time.Duration
	}{
		{10 * time.Second, 0, false, 10 * time.Second},
		{10 * time.Second, 5 * time.Second, false, 12500 * time.Millisecond},
		{10 * time.Second, 30 * time.Second, false, 10 * time.Second},
		{10 * time.Second, 30 * time.Second, true, 75 * time.Second},
		{time.Minute, time.Second, false, time.Minute},
	}
	for _, c := range cases {
		if got := effectiveHold(c.hold, c.hb, c.check); got != c.want {
			t.Errorf("effectiveHold(%s, %s, %v) = %s, want %s", c.hold, c.hb, c.check, got, c.want)
		}
	}
}

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
	if got := metricsURLFor("wss://push.example.com:8443/v1/ws"); got != "https://push.example.com:8443/metrics" {
		t.Errorf("metrics url %q", got)
	}
	if got := metricsURLFor("tcp://h:1"); got != "" {
		t.Errorf("metrics url for tcp %q", got)
	}
}

// TestBenchConnect_ReExecWorkers builds pushctl and runs it, so the workers
// are real processes re-executing the binary.
func TestBenchConnect_ReExecWorkers(t *testing.T) {
	if testing.Short() {
		t.Skip("builds pushctl")
	}
	t.Parallel()
	if underRace {
		t.Skip("real nbio listeners trip the race detector inside nbio (see race_test.go)")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "pushctl")
	build := exec.Command("go", "build", "-o", bin, "github.com/pushd/pushd/ctl/cmd/pushctl")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	// A slower heartbeat than the other tests': the build and the
	// parallel tests load both cores, and a 400ms interval (900ms idle
	// limit) is then too tight to hold reliably.
	node := startTestNode(t, false, func(c *appliance.Config) { c.HeartbeatInterval = 2 * time.Second })
	cmd := exec.Command(bin, "bench", "connect", "--conns", "100", "--workers", "2", "--hold", "0s", "--json")
	cmd.Dir = dir
	cmd.Env = os.Environ()
	for k, v := range node.env() {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("pushctl bench connect: %v\nstderr:\n%s", err, stderr.String())
	}
	rep := decodeJSON[connectReport](t, result{stdout: stdout.String()})
	if rep.Connected != 100 || rep.Workers != 2 || rep.Errors != 0 {
		t.Fatalf("report %+v\nstderr:\n%s", rep, stderr.String())
	}
}

// TestBenchConnect_InterruptStopsWorkers cancels a run mid-hold: it ends
// at once, says so, and leaves no worker behind (the pool waits for them).
func TestBenchConnect_InterruptStopsWorkers(t *testing.T) {
	t.Parallel()
	node := startTestNode(t, false)
	_, errOut, stop, _ := harness{env: node.env()}.start(t, "bench", "connect", "--conns", "30", "--hold", "1m")
	poll.Until(t, 10*time.Second, func() error { return contains(errOut.String(), "30/30 connected") })
	start := time.Now()
	r := stop().expect(t, exitFailure)
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("took %s to stop", el)
	}
	if err := contains(r.stderr, "pushctl: interrupted"); err != nil {
		t.Error(err)
	}
	if r.stdout != "" {
		t.Errorf("interrupted run printed a report:\n%s", r.stdout)
	}
}
