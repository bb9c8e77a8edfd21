package ctl

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pushd/pushd/appliance"
	"github.com/pushd/pushd/ctl/load"
	"github.com/pushd/pushd/internal/poll"
)

// TestBenchConnect_InProcessWorkers opens 200 real sessions from two
// in-process workers against a node and checks the report.
func TestBenchConnect_InProcessWorkers(t *testing.T) {
	t.Parallel()
	// A second's heartbeat: at 0.4s a loaded machine's workers fell behind
	// their PINGs and the node cut 153 of 200 sessions heartbeat_missed.
	node := startTestNode(t, false, func(cfg *appliance.Config) { cfg.HeartbeatInterval = time.Second })
	args := []string{"bench", "connect", "--conns", "200", "--workers", "2", "--hold", "100ms", "--json"}
	if node.WSURL == "" {
		// Devices connect over raw TCP (-race), whose URL names no
		// metrics endpoint; over WebSocket it is found from the URL.
		args = append(args, "--metrics-url", node.HTTPURL+"/metrics")
	}
	start := time.Now()
	r := harness{env: nodeEnv(node)}.run(t, args...).expect(t, exitOK)
	rep := decodeJSON[load.ConnectReport](t, r)
	if rep.Scenario != "connect" || rep.Transport != transportOf(node.DeviceURL()) || rep.Conns != 200 || rep.Connected != 200 || rep.Workers != 2 || rep.Errors != 0 {
		t.Fatalf("report %+v\nstderr:\n%s", rep, r.stderr)
	}
	if rep.ConnectPerS <= 0 || rep.ConnectS <= 0 || rep.HeartbeatS != 1 {
		t.Errorf("rates %+v", rep)
	}
	// The hold stretches to 2.5 heartbeat intervals.
	if rep.HoldS != 2.5 || time.Since(start) < 2500*time.Millisecond {
		t.Errorf("hold %.2fs after %s, want 2.5s", rep.HoldS, time.Since(start))
	}
	if rep.ServerRSSBytes == nil || *rep.ServerRSSBytes <= 0 || rep.ServerRSSBeforeBytes == nil || rep.RSSBytesPerConn == nil {
		t.Errorf("rss not measured: %+v\nstderr:\n%s", rep, r.stderr)
	}
}

func TestBenchConnect_TCPWithHeartbeatCheck(t *testing.T) {
	t.Parallel()
	// A PONG missing for two intervals is a miss: a second's interval
	// keeps a busy machine's scheduling delays from counting as misses.
	node := startTestNode(t, false, func(cfg *appliance.Config) { cfg.HeartbeatInterval = time.Second })
	r := harness{env: nodeEnv(node)}.run(t, "bench", "connect", "--conns", "50", "--url", node.TCPURL,
		"--metrics-url", node.HTTPURL+"/metrics", "--heartbeat-check", "--hold", "0s", "--rate", "500").expect(t, exitOK)
	for _, want := range []string{
		"transport     tcp",
		"conns         50 requested, 50 connected",
		"errors        0 (connect failures 0, drops 0, heartbeat misses 0)",
		"held          2.5s (heartbeat 1.0s)",
	} {
		if err := contains(r.stdout, want); err != nil {
			t.Error(err)
		}
	}
	// 50 connects at 500/s take about 0.1s.
	rep := decodeJSON[load.ConnectReport](t, harness{env: nodeEnv(node)}.run(t, "bench", "connect", "--conns", "50", "--url", node.TCPURL,
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
	_, errOut, _, done := harness{env: nodeEnv(node)}.start(t, "bench", "connect", "--conns", "20", "--hold", "2s")
	poll.Until(t, 10*time.Second, func() error { return contains(errOut.String(), "20/20 connected") })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := node.Stop(ctx); err != nil {
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
	rep := decodeJSON[load.ConnectReport](t, r)
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

// TestBenchConnect_ReExecWorkers builds pushctl and runs it, so the workers
// are real processes re-executing the binary.
func TestBenchConnect_ReExecWorkers(t *testing.T) {
	if testing.Short() {
		t.Skip("builds pushctl")
	}
	t.Parallel()
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
	for k, v := range nodeEnv(node) {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("pushctl bench connect: %v\nstderr:\n%s", err, stderr.String())
	}
	rep := decodeJSON[load.ConnectReport](t, result{stdout: stdout.String()})
	if rep.Connected != 100 || rep.Workers != 2 || rep.Errors != 0 {
		t.Fatalf("report %+v\nstderr:\n%s", rep, stderr.String())
	}
}

// TestBenchConnect_InterruptStopsWorkers cancels a run mid-hold: it ends
// at once, says so, and leaves no worker behind (the pool waits for them).
func TestBenchConnect_InterruptStopsWorkers(t *testing.T) {
	t.Parallel()
	node := startTestNode(t, false)
	_, errOut, stop, _ := harness{env: nodeEnv(node)}.start(t, "bench", "connect", "--conns", "30", "--hold", "1m")
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
