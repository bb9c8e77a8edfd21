package ctl

import (
	"context"
	"encoding/json"
	"io"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pushd/pushd/ctl/load"
)

// TestBenchPush_OnlineAgainstDurableNode drives a real node with a real
// redis-server: SDK devices in in-process workers receive and ack every
// push.
func TestBenchPush_OnlineAgainstDurableNode(t *testing.T) {
	t.Parallel()
	node := startTestNode(t, true)
	r := harness{env: node.env()}.run(t, "bench", "push", "--devices", "20", "--pushes", "200", "--batch", "10",
		"--concurrency", "4", "--workers", "2", "--wait", "10s", "--json").expect(t, exitOK)
	rep := decodeJSON[load.PushReport](t, r)
	if rep.Scenario != "push" || rep.Mode != "online" || rep.Devices != 20 || rep.Workers != 2 || rep.Transport != "ws" {
		t.Fatalf("report %+v", rep)
	}
	if rep.Requested != 200 || rep.Pushes != 200 || rep.Received != 200 || rep.Lost+rep.Duplicates+rep.Errors+rep.Unacked != 0 {
		t.Fatalf("accounting %+v\nstderr:\n%s", rep, r.stderr)
	}
	if rep.PushesPerS <= 0 || rep.LatencyMS.P50 <= 0 || rep.LatencyMS.P99 < rep.LatencyMS.P50 || rep.LatencyMS.Max < rep.LatencyMS.P99 || rep.DurationS <= 0 {
		t.Fatalf("rates %+v", rep)
	}
}

// TestBenchPush_StoredAgainstDurableNode: offline devices, every inbox
// checked afterwards.
func TestBenchPush_StoredAgainstDurableNode(t *testing.T) {
	t.Parallel()
	node := startTestNode(t, true)
	r := harness{env: node.env()}.run(t, "bench", "push", "--mode", "stored", "--devices", "50", "--pushes", "500",
		"--batch", "50", "--payload-size", "100").expect(t, exitOK)
	for _, want := range []string{"mode             stored", "pushes           500 accepted of 500 sent", "lost             0", "errors           0 (failed requests 0)"} {
		if err := contains(r.stdout, want); err != nil {
			t.Error(err)
		}
	}
}

// scriptedDelivery is one message the fake push API handed to a device.
type scriptedDelivery struct {
	device, id string
	payload    []byte
}

// scriptedWorker is a bench worker that reports receipts the test chose:
// the n-th delivery (from 1) arrives n ms after it was sent, except that
// lose is never received and dup is received twice. It speaks the worker
// protocol of package load as a black box, in JSON lines.
func scriptedWorker(deliveries <-chan scriptedDelivery, lose, dup int) load.WorkFunc {
	type receipt struct {
		Device int    `json:"d"`
		ID     string `json:"id"`
		Sent   int64  `json:"s"`
		At     int64  `json:"r"`
	}
	type event struct {
		Event string `json:"event"`
		Data  any    `json:"data,omitempty"`
	}
	return func(ctx context.Context, in io.Reader, out, _ io.Writer) error {
		dec := json.NewDecoder(in)
		enc := json.NewEncoder(out)
		var job struct {
			Share struct {
				Count int `json:"count"`
			} `json:"share"`
		}
		if err := dec.Decode(&job); err != nil {
			return err
		}
		_ = enc.Encode(event{Event: "ready"})
		stop := make(chan struct{})
		go func() {
			defer close(stop)
			for {
				var c struct {
					Cmd string `json:"cmd"`
				}
				if dec.Decode(&c) != nil {
					return
				}
				if c.Cmd == "start" {
					_ = enc.Encode(event{Event: "connected", Data: map[string]int{"ok": job.Share.Count}})
				}
				if c.Cmd == "stop" {
					return
				}
			}
		}()
		n := 0
		emit := func(d scriptedDelivery) {
			n++
			if n == lose {
				return
			}
			i := strings.LastIndexByte(d.device, '-')
			dev, _ := strconv.Atoi(d.device[i+1:])
			sent, _ := strconv.ParseInt(strings.SplitN(string(d.payload), "|", 2)[0], 10, 64)
			rc := receipt{Device: dev, ID: d.id, Sent: sent, At: sent + int64(n)*int64(time.Millisecond)}
			rs := []receipt{rc}
			if n == dup {
				rs = append(rs, rc)
			}
			_ = enc.Encode(event{Event: "data", Data: rs})
		}
		for {
			select {
			case d := <-deliveries:
				emit(d)
			case <-stop:
				for {
					select {
					case d := <-deliveries:
						emit(d)
					default:
						return enc.Encode(event{Event: "done", Data: map[string]int{"alive": job.Share.Count}})
					}
				}
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
}

// TestBenchPush_OnlineAccounting checks lost, duplicates and percentiles
// against receipts whose latencies the test chose: 1..100 ms, the 37th
// never received, the 50th received twice.
func TestBenchPush_OnlineAccounting(t *testing.T) {
	t.Parallel()
	fake := newFakePushAPI(t)
	deliveries := make(chan scriptedDelivery, 200)
	fake.deliver = func(device, id string, _ uint64, payload []byte) bool {
		deliveries <- scriptedDelivery{device, id, payload}
		return true
	}
	env := testEnv(fake.url())
	env["PUSHD_URL"] = "ws://127.0.0.1:1/v1/ws"
	h := harness{env: env, worker: scriptedWorker(deliveries, 37, 50)}
	r := h.run(t, "bench", "push", "--devices", "10", "--batch", "10", "--pushes", "100", "--concurrency", "1", "--json").expect(t, exitFailure)
	rep := decodeJSON[load.PushReport](t, r)
	if rep.Pushes != 100 || rep.Received != 99 || rep.Lost != 1 || rep.Duplicates != 1 || rep.Errors != 0 || rep.Unacked != 0 || rep.Unexpected != 0 {
		t.Fatalf("accounting %+v", rep)
	}
	// 99 latencies 1..100 without 37: the 50th is 51, the 99th is 100.
	if rep.LatencyMS != (load.Latency{P50: 51, P99: 100, Max: 100}) {
		t.Fatalf("latency %+v", rep.LatencyMS)
	}
	if err := contains(r.stderr, "1 lost, 1 duplicates, 0 errors, 0 unacked"); err != nil {
		t.Error(err)
	}
	if n := len(fake.recorded()); n != 10 {
		t.Errorf("%d requests, want 10 of 10 devices", n)
	}
	for _, req := range fake.recorded() {
		if len(req.Devices) != 10 || len(*req.Data) != 64 {
			t.Fatalf("request %d devices, payload %d bytes", len(req.Devices), len(*req.Data))
		}
	}
}

// TestBenchPush_UnackedAreCounted: the device endpoint never shows the
// acks, so after --wait every accepted push counts as unacked.
func TestBenchPush_UnackedAreCounted(t *testing.T) {
	t.Parallel()
	fake := newFakePushAPI(t)
	fake.ackAfter = -1
	deliveries := make(chan scriptedDelivery, 100)
	fake.deliver = func(device, id string, _ uint64, payload []byte) bool {
		deliveries <- scriptedDelivery{device, id, payload}
		return true
	}
	env := testEnv(fake.url())
	env["PUSHD_URL"] = "ws://127.0.0.1:1/v1/ws"
	r := harness{env: env, worker: scriptedWorker(deliveries, 0, 0)}.run(t, "bench", "push", "--devices", "5", "--batch", "5",
		"--pushes", "20", "--wait", "100ms", "--json").expect(t, exitFailure)
	rep := decodeJSON[load.PushReport](t, r)
	if rep.Unacked != 20 || rep.Lost != 0 || rep.Received != 20 {
		t.Fatalf("report %+v", rep)
	}
}

// TestBenchPush_StoredAccounting: rejected results are errors, an inbox
// holding less than was accepted counts as lost, and what the inbox cap
// trimmed (recorded, so the device is told) counts as trimmed, not lost.
func TestBenchPush_StoredAccounting(t *testing.T) {
	t.Parallel()
	fake := newFakePushAPI(t)
	fake.ackAfter = -1 // offline devices ack nothing
	fake.rejectIf = func(d string) string {
		if strings.HasSuffix(d, "-3") {
			return "degraded"
		}
		return ""
	}
	fake.loseIf = func(d string, seq uint64) bool { return strings.HasSuffix(d, "-7") && seq == 2 }
	fake.trimIf = func(d string, seq uint64) bool { return strings.HasSuffix(d, "-8") && seq <= 2 }
	r := harness{env: testEnv(fake.url())}.run(t, "bench", "push", "--mode", "stored", "--devices", "10", "--batch", "5",
		"--pushes", "50", "--json").expect(t, exitFailure)
	rep := decodeJSON[load.PushReport](t, r)
	if rep.Requested != 50 || rep.Pushes != 45 || rep.Errors != 5 || rep.Lost != 1 || rep.Trimmed != 2 || rep.FailedRequests != 0 {
		t.Fatalf("report %+v", rep)
	}
	if rep.ErrorReasons["rejected: degraded"] != 5 || rep.PushesPerS <= 0 || rep.LatencyMS.Max <= 0 {
		t.Fatalf("report %+v", rep)
	}
}

func TestBenchPush_FailedRequests(t *testing.T) {
	t.Parallel()
	fake := newFakePushAPI(t)
	fake.failStatus, fake.failCode = 429, "rate_limited"
	rep := decodeJSON[load.PushReport](t, harness{env: testEnv(fake.url())}.run(t, "bench", "push", "--mode", "stored",
		"--devices", "10", "--batch", "10", "--pushes", "30", "--json").expect(t, exitFailure))
	if rep.Errors != 30 || rep.FailedRequests != 3 || rep.Pushes != 0 || rep.ErrorReasons["HTTP 429 rate_limited"] != 30 {
		t.Fatalf("report %+v", rep)
	}
}

// TestBenchPush_RateAndDuration: at 1000 pushes/s for 300ms about 300 go
// out, in requests of 10.
func TestBenchPush_RateAndDuration(t *testing.T) {
	t.Parallel()
	fake := newFakePushAPI(t)
	fake.ackAfter = -1 // offline devices ack nothing
	start := time.Now()
	rep := decodeJSON[load.PushReport](t, harness{env: testEnv(fake.url())}.run(t, "bench", "push", "--mode", "stored",
		"--devices", "100", "--batch", "10", "--rate", "1000", "--duration", "300ms", "--json").expect(t, exitOK))
	if el := time.Since(start); el > 3*time.Second {
		t.Fatalf("took %s", el)
	}
	// Bounds loose enough for a loaded machine, tight enough to tell a
	// paced run from an unpaced one (tens of thousands per second).
	if rep.Pushes < 100 || rep.Pushes > 400 || rep.Pushes%10 != 0 {
		t.Fatalf("%d pushes in 300ms at 1000/s", rep.Pushes)
	}
	if rep.AcceptPerS > 2500 {
		t.Fatalf("accept rate %.0f/s over a 1000/s target", rep.AcceptPerS)
	}
}

func TestBenchPush_UsageErrors(t *testing.T) {
	t.Parallel()
	var calls atomic.Int64
	fake := newFakePushAPI(t)
	fake.deliver = func(string, string, uint64, []byte) bool { calls.Add(1); return true }
	h := harness{env: testEnv(fake.url())}
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--mode", "offline"}, `--mode "offline"`},
		{[]string{"--devices", "5", "--batch", "10"}, "at most --devices"},
		{[]string{"--batch", "1001", "--devices", "2000"}, "--batch 1001"},
		{[]string{"--payload-size", "10"}, "--payload-size 10"},
		{[]string{"--concurrency", "0"}, "--concurrency 0"},
		{[]string{"--rate", "-1"}, "must not be negative"},
		{[]string{"--mode", "online"}, "missing url"},
	}
	for _, tc := range cases {
		r := h.run(t, append([]string{"bench", "push"}, tc.args...)...).expect(t, exitUsage)
		if err := contains(r.stderr, tc.want); err != nil {
			t.Errorf("%v: %v", tc.args, err)
		}
	}
	if len(fake.recorded()) != 0 {
		t.Fatal("usage errors sent pushes")
	}
}
