package ctl

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pushd/pushd/appliance"
	"github.com/pushd/pushd/appliance/api"
	"github.com/pushd/pushd/appliance/client"
	"github.com/pushd/pushd/appliance/token"
	"github.com/pushd/pushd/appliance/wire"
	"github.com/pushd/pushd/ctl/load"
	"github.com/pushd/pushd/streams/streamstest"
)

// TestBenchPush_OnlineAgainstDurableNode drives a real node with a real
// redis-server: SDK devices in in-process workers receive and ack every
// push.
func TestBenchPush_OnlineAgainstDurableNode(t *testing.T) {
	t.Parallel()
	node := startTestNode(t, true)
	r := harness{env: nodeEnv(node)}.run(t, "bench", "push", "--devices", "20", "--pushes", "200", "--batch", "10",
		"--concurrency", "4", "--workers", "2", "--wait", "10s", "--json").expect(t, exitOK)
	rep := decodeJSON[load.PushReport](t, r)
	if rep.Scenario != "push" || rep.Mode != "online" || rep.Devices != 20 || rep.Workers != 2 || rep.Transport != transportOf(node.DeviceURL()) {
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
	r := harness{env: nodeEnv(node)}.run(t, "bench", "push", "--mode", "stored", "--devices", "50", "--pushes", "500",
		"--batch", "50", "--payload-size", "100").expect(t, exitOK)
	for _, want := range []string{"mode             stored", "pushes           500 accepted of 500 sent", "lost             0", "errors           0 (failed requests 0)"} {
		if err := contains(r.stdout, want); err != nil {
			t.Error(err)
		}
	}
}

// benchReceipt is a receipt as a bench push worker reports it (package
// load's worker protocol, spoken here as a black box).
type benchReceipt struct {
	Device int    `json:"d"`
	ID     string `json:"id"`
	Sent   int64  `json:"s"`
	At     int64  `json:"r"`
}

// deviceWorker is a bench push worker whose devices are raw protocol
// connections to the real node the job names. Each PUSH a device reads
// (redeliveries aside) becomes a receipt, numbered from 1 in the order
// they come, which script turns into the receipts reported: none to lose
// it, two to report it twice, any time to choose its latency. The
// devices ack what they read when ack is set, and never otherwise.
func deviceWorker(ack bool, script func(n int, rc benchReceipt) []benchReceipt) load.WorkFunc {
	type event struct {
		Event string `json:"event"`
		Data  any    `json:"data,omitempty"`
	}
	return func(ctx context.Context, in io.Reader, out, _ io.Writer) error {
		dec, enc := json.NewDecoder(in), json.NewEncoder(out)
		var job load.Job
		if err := dec.Decode(&job); err != nil {
			return err
		}
		var params load.Push
		if err := json.Unmarshal(job.Params, &params); err != nil {
			return err
		}
		tg := params.Target
		_ = enc.Encode(event{Event: "ready"})
		cmds := make(chan string)
		go func() {
			defer close(cmds)
			for {
				var c struct {
					Cmd string `json:"cmd"`
				}
				if dec.Decode(&c) != nil {
					return
				}
				cmds <- c.Cmd
			}
		}()
		if c := <-cmds; c != "start" {
			return fmt.Errorf("want start, got %q", c)
		}
		receipts := make(chan benchReceipt, 1000)
		var conns []*client.Conn
		var readers sync.WaitGroup
		defer func() {
			for _, c := range conns {
				_ = c.Close()
			}
			readers.Wait()
		}()
		for i := range job.Share.Count {
			d := job.Share.First + i
			device := tg.DevicePrefix + strconv.Itoa(d)
			tok, err := token.Issue(token.Claims{App: tg.App, Device: device, KeyID: tg.KeyID, Expires: time.Now().Add(time.Hour).Unix()}, tg.Secret)
			if err != nil {
				return err
			}
			c, err := client.DialConn(ctx, tg.URL, client.DialOptions{})
			if err != nil {
				return err
			}
			conns = append(conns, c)
			if err := c.Send(&wire.Hello{Token: tok, App: tg.App, Device: device}); err != nil {
				return err
			}
			if f, err := c.Read(5 * time.Second); err != nil {
				return err
			} else if _, ok := f.(*wire.Welcome); !ok {
				return fmt.Errorf("%s: answer to HELLO: %#v", device, f)
			}
			readers.Add(1)
			go func() {
				defer readers.Done()
				for {
					fs, err := readFrames(c, time.Minute)
					if err != nil {
						return
					}
					for _, f := range fs {
						p, ok := f.(*wire.Push)
						if !ok || p.Redelivery {
							continue
						}
						sent, _ := strconv.ParseInt(strings.SplitN(string(p.Payload), "|", 2)[0], 10, 64)
						receipts <- benchReceipt{Device: d, ID: p.ID, Sent: sent, At: time.Now().UnixNano()}
						if ack && c.Send(&wire.Ack{Seq: p.Seq}) != nil {
							return
						}
					}
				}
			}()
		}
		_ = enc.Encode(event{Event: "connected", Data: map[string]int{"ok": job.Share.Count}})
		n := 0
		emit := func(rc benchReceipt) {
			n++
			if rs := script(n, rc); len(rs) > 0 {
				_ = enc.Encode(event{Event: "data", Data: rs})
			}
		}
		for {
			select {
			case rc := <-receipts:
				emit(rc)
			case <-cmds:
				// Stop (or the parent gone): what the devices read is in.
				for {
					select {
					case rc := <-receipts:
						emit(rc)
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
// never received, the 50th received twice. The node and the devices'
// connections are real; the worker reports what they read as scripted.
func TestBenchPush_OnlineAccounting(t *testing.T) {
	t.Parallel()
	node := startTestNode(t, true)
	tp := newTap(t, node.PushURL, tapHooks{})
	env := nodeEnv(node)
	env["PUSHD_PUSH_URL"] = tp.url()
	script := func(n int, rc benchReceipt) []benchReceipt {
		rc.At = rc.Sent + int64(n)*int64(time.Millisecond)
		switch n {
		case 37:
			return nil
		case 50:
			return []benchReceipt{rc, rc}
		}
		return []benchReceipt{rc}
	}
	h := harness{env: env, worker: deviceWorker(true, script)}
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
	reqs := pushRequests(t, tp)
	if len(reqs) != 10 {
		t.Errorf("%d requests, want 10 of 10 devices", len(reqs))
	}
	for _, req := range reqs {
		if len(req.Devices) != 10 || len(*req.Data) != 64 {
			t.Fatalf("request %d devices, payload %d bytes", len(req.Devices), len(*req.Data))
		}
	}
}

// TestBenchPush_UnackedAreCounted: the devices read every push and ack
// none, so after --wait every accepted push counts as unacked.
func TestBenchPush_UnackedAreCounted(t *testing.T) {
	t.Parallel()
	node := startTestNode(t, true)
	asRead := func(_ int, rc benchReceipt) []benchReceipt { return []benchReceipt{rc} }
	r := harness{env: nodeEnv(node), worker: deviceWorker(false, asRead)}.run(t, "bench", "push", "--devices", "5", "--batch", "5",
		"--pushes", "20", "--wait", "500ms", "--json").expect(t, exitFailure)
	rep := decodeJSON[load.PushReport](t, r)
	if rep.Unacked != 20 || rep.Lost != 0 || rep.Received != 20 {
		t.Fatalf("report %+v", rep)
	}
}

// TestBenchPush_StoredAccounting: rejected results are errors, an inbox
// holding less than was accepted counts as lost, and what the inbox cap
// trimmed (recorded, so the device is told) counts as trimmed, not lost.
// The node's inbox cap of 4 trims one of each device's 5 pushes; the tap
// makes the node's answer reject device 3 (a node rejects a device on
// its own only for an invalid id) and loses device 7's second message
// from Redis once it is stored, as a store that lost a write would.
func TestBenchPush_StoredAccounting(t *testing.T) {
	t.Parallel()
	redis := streamstest.StartRedis(t)
	node := startNodeOn(t, redis, func(c *appliance.Config) { c.InboxMaxLen = 4 })
	rdb := redis.Client(t)
	tp := newTap(t, node.PushURL, tapHooks{rewrite: func(_ int, r tapped, body []byte) []byte {
		var resp api.PushResponse
		if r.path != "/v1/push" || json.Unmarshal(body, &resp) != nil {
			return body
		}
		for i, res := range resp.Results {
			switch {
			case strings.HasSuffix(res.Device, "-3"):
				resp.Results[i] = api.PushResult{Device: res.Device, Status: api.StatusRejected, Reason: "degraded"}
			case strings.HasSuffix(res.Device, "-7") && res.Seq == 2:
				// The inbox stream of streams/keys.go: entry 0-<seq>.
				if err := rdb.XDel(context.Background(), "pushd:{"+testApp+"/"+res.Device+"}:inbox", "0-2").Err(); err != nil {
					t.Errorf("lose %s's seq 2: %v", res.Device, err)
				}
			}
		}
		b, _ := json.Marshal(resp)
		return b
	}})
	r := harness{env: testEnv(tp.url())}.run(t, "bench", "push", "--mode", "stored", "--devices", "10", "--batch", "5",
		"--pushes", "50", "--json").expect(t, exitFailure)
	rep := decodeJSON[load.PushReport](t, r)
	if rep.Requested != 50 || rep.Pushes != 45 || rep.Errors != 5 || rep.Lost != 1 || rep.Trimmed != 9 || rep.FailedRequests != 0 {
		t.Fatalf("report %+v", rep)
	}
	if rep.ErrorReasons["rejected: degraded"] != 5 || rep.PushesPerS <= 0 || rep.LatencyMS.Max <= 0 {
		t.Fatalf("report %+v", rep)
	}
	if err := contains(r.stderr, "the inbox cap trimmed 9 pushes"); err != nil {
		t.Error(err)
	}
}

// TestBenchPush_FailedRequests: an app over its rate gets every request
// refused with 429.
func TestBenchPush_FailedRequests(t *testing.T) {
	t.Parallel()
	node := startTestNode(t, true, func(c *appliance.Config) {
		c.Apps[0].RatePerSec, c.Apps[0].Burst = 0.001, 10 // 10 device messages, then none for hours
	})
	cl, err := api.NewClient(node.PushURL, testAPIKey, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Push(t.Context(), &api.PushRequest{App: api.Ptr(testApp), Devices: []string{"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"}, Data: api.Ptr("x")}); err != nil {
		t.Fatal(err)
	}
	rep := decodeJSON[load.PushReport](t, harness{env: testEnv(node.PushURL)}.run(t, "bench", "push", "--mode", "stored",
		"--devices", "10", "--batch", "10", "--pushes", "30", "--json").expect(t, exitFailure))
	if rep.Errors != 30 || rep.FailedRequests != 3 || rep.Pushes != 0 || rep.ErrorReasons["HTTP 429 rate_limited"] != 30 {
		t.Fatalf("report %+v", rep)
	}
}

// TestBenchPush_RateAndDuration: at 1000 pushes/s for 300ms about 300 go
// out, in requests of 10.
func TestBenchPush_RateAndDuration(t *testing.T) {
	t.Parallel()
	node := startTestNode(t, true)
	start := time.Now()
	rep := decodeJSON[load.PushReport](t, harness{env: testEnv(node.PushURL)}.run(t, "bench", "push", "--mode", "stored",
		"--devices", "100", "--batch", "10", "--rate", "1000", "--duration", "300ms", "--json").expect(t, exitOK))
	if el := time.Since(start); el > 3*time.Second {
		t.Fatalf("took %s", el)
	}
	// Bounds loose enough for a loaded machine (one at load 20 sent 90 of
	// the 300), tight enough to tell a paced run from an unpaced one (tens
	// of thousands per second) and a run that stops after its first batch.
	if rep.Pushes < 30 || rep.Pushes > 400 || rep.Pushes%10 != 0 {
		t.Fatalf("%d pushes in 300ms at 1000/s", rep.Pushes)
	}
	if rep.AcceptPerS > 2500 {
		t.Fatalf("accept rate %.0f/s over a 1000/s target", rep.AcceptPerS)
	}
}

func TestBenchPush_UsageErrors(t *testing.T) {
	t.Parallel()
	node := startTestNode(t, false)
	tp := newTap(t, node.PushURL, tapHooks{})
	h := harness{env: testEnv(tp.url())}
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
	if n := len(tp.requests()); n != 0 {
		t.Fatalf("usage errors sent %d requests", n)
	}
}
