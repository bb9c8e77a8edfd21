package load

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

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

// closedURL is a device URL nothing listens on.
func closedURL(t *testing.T, scheme string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	if scheme == "ws" {
		return "ws://" + addr + "/v1/ws"
	}
	return scheme + "://" + addr
}

func testTarget(url string) Target {
	return Target{URL: url, App: "demo", KeyID: "k1", Secret: []byte("0123456789abcdef0123456789abcdef")}
}

// TestConnect_RunCountsFailures runs the real workers in-process against
// a port nothing listens on: every connect fails, by one reason, and the
// run reports it rather than failing.
func TestConnect_RunCountsFailures(t *testing.T) {
	t.Parallel()
	var progress []string
	probed := 0
	rep, err := Connect{Target: testTarget(closedURL(t, "tcp")), Conns: 7, Hold: time.Hour,
		RSS: func(context.Context) (int64, error) { probed++; return 1 << 20, nil },
	}.Run(context.Background(), Plan{Workers: 3, Progress: func(s string) { progress = append(progress, s) }})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Scenario != "connect" || rep.Transport != "tcp" || rep.Workers != 3 || rep.Connected != 0 ||
		rep.ConnectFailures != 7 || rep.Errors != 7 || rep.HoldS != 0 || rep.HeartbeatMisses != nil {
		t.Fatalf("report %+v", rep)
	}
	if rep.ErrorReasons["connect: connection refused"] != 7 {
		t.Errorf("reasons %v", rep.ErrorReasons)
	}
	if probed != 2 || *rep.ServerRSSBytes != 1<<20 || rep.RSSBytesPerConn != nil {
		t.Errorf("probed %d times; rss %v, per conn %v", probed, rep.ServerRSSBytes, rep.RSSBytesPerConn)
	}
	if len(progress) != 1 || !strings.HasPrefix(progress[0], "0/7 connected in ") {
		t.Errorf("progress %q", progress)
	}
}

func TestConnect_RunRefusesBadInput(t *testing.T) {
	t.Parallel()
	cases := []struct {
		c    Connect
		want string
	}{
		{Connect{Target: testTarget("ws://127.0.0.1:1/v1/ws")}, "need at least 1"},
		{Connect{Target: testTarget("http://x"), Conns: 1}, "want ws://"},
		{Connect{Target: Target{URL: "ws://127.0.0.1:1/v1/ws", App: "a"}, Conns: 1}, "cannot mint device tokens"},
		{Connect{Target: testTarget("ws://127.0.0.1:1/v1/ws"), Conns: 1, Rate: -1}, "rate -1"},
	}
	for _, c := range cases {
		_, err := c.c.Run(context.Background(), Plan{Spawn: func(context.Context) (*Proc, error) {
			t.Fatal("a worker started")
			return nil, nil
		}})
		if !errors.Is(err, ErrPlan) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want ErrPlan saying %q", c.c, err, c.want)
		}
	}
}

// TestWork_SpeaksTheProtocol drives Work by hand with the documented
// lines: a connect job against a port nothing listens on.
func TestWork_SpeaksTheProtocol(t *testing.T) {
	t.Parallel()
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- Work(context.Background(), inR, outW, io.Discard); outW.Close() }()
	lines := bufio.NewScanner(outR)
	next := func() map[string]any {
		t.Helper()
		if !lines.Scan() {
			t.Fatalf("no event: %v", lines.Err())
		}
		var ev map[string]any
		if err := json.Unmarshal(lines.Bytes(), &ev); err != nil {
			t.Fatalf("%s: %v", lines.Bytes(), err)
		}
		return ev
	}
	write := func(s string) {
		t.Helper()
		if _, err := io.WriteString(inW, s+"\n"); err != nil {
			t.Fatal(err)
		}
	}
	write(`{"scenario":"connect","worker":0,"share":{"first":10,"count":3,"of":3},"params":` +
		`{"target":{"url":"` + closedURL(t, "ws") + `","app":"demo","key_id":"k1","secret":"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=","device_prefix":"d-"},"conns":3}}`)
	if ev := next(); ev["event"] != "ready" {
		t.Fatalf("first event %v", ev)
	}
	write(`{"cmd":"start"}`)
	ev := next()
	data, _ := ev["data"].(map[string]any)
	if ev["event"] != "connected" || data["ok"] != 0.0 || data["failed"] != 3.0 {
		t.Fatalf("after start: %v", ev)
	}
	write(`{"cmd":"stop"}`)
	if ev := next(); ev["event"] != "done" {
		t.Fatalf("after stop: %v", ev)
	}
	inW.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestWork_RefusesABadJob(t *testing.T) {
	t.Parallel()
	cases := map[string]string{
		`{"scenario":"teleport","share":{"count":1}}`:                          `unknown scenario "teleport"`,
		`{"scenario":"connect","share":{"count":0}}`:                           "job for 0 units",
		`{"scenario":"connect","share":{"count":1,"source":"x"}}`:              `source "x"`,
		`{"scenario":"connect","share":{"count":1},"params":{"conns":"many"}}`: "connect params",
	}
	for job, want := range cases {
		var out, stderr strings.Builder
		err := Work(context.Background(), strings.NewReader(job+"\n"), &out, &stderr)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", job, err, want)
		}
		var ev Event
		if json.Unmarshal([]byte(out.String()), &ev) != nil || ev.Event != "error" || ev.Message != err.Error() {
			t.Errorf("%s: stdout %q", job, out.String())
		}
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("%s: stderr %q", job, stderr.String())
		}
	}
	if err := Work(context.Background(), strings.NewReader(""), io.Discard, io.Discard); err != nil {
		t.Errorf("no job: %v", err)
	}
}
