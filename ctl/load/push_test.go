package load

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

	"github.com/pushd/pushd/appliance/api"
)

func TestSummarizeReceipts(t *testing.T) {
	t.Parallel()
	accepted := map[msgKey]uint64{{"a", 0}: 1, {"a", 1}: 1, {"b", 0}: 2}
	receipts := []receipt{
		{Device: 0, ID: "a", Sent: 100, At: 300},
		{Device: 0, ID: "a", Sent: 100, At: 900}, // duplicate
		{Device: 0, ID: "b", Sent: 200, At: 250},
		{Device: 2, ID: "a", Sent: 100, At: 400}, // never accepted for device 2
	}
	s := summarizeReceipts(accepted, receipts)
	if s.received != 2 || s.lost != 1 || s.duplicates != 1 || s.unexpected != 1 || s.lastAt != 300 || s.latency.Count() != 2 {
		t.Fatalf("%+v", s)
	}
}

// fakeAPI is the push API in memory: device inboxes with seqs, and acks
// as soon as a message is delivered when online.
type fakeAPI struct {
	mu       sync.Mutex
	next     int
	inbox    map[string]uint64 // device → last seq
	acked    map[string]uint64
	reject   func(device string) string // a reason, or "" to accept
	deliver  func(device, id, payload string)
	failWith error // every request fails
}

func newFakeAPI() *fakeAPI {
	return &fakeAPI{inbox: map[string]uint64{}, acked: map[string]uint64{}}
}

func (f *fakeAPI) Push(_ context.Context, req *api.PushRequest) (*api.PushResponse, error) {
	if f.failWith != nil {
		return nil, f.failWith
	}
	f.mu.Lock()
	f.next++
	resp := &api.PushResponse{ID: "m" + strconv.Itoa(f.next), Stored: true}
	var deliver []string
	for _, d := range req.Devices {
		if f.reject != nil {
			if why := f.reject(d); why != "" {
				resp.Results = append(resp.Results, api.PushResult{Device: d, Status: api.StatusRejected, Reason: why})
				continue
			}
		}
		f.inbox[d]++
		resp.Results = append(resp.Results, api.PushResult{Device: d, Status: api.StatusStored, Seq: f.inbox[d]})
		if f.deliver != nil {
			f.acked[d] = f.inbox[d]
			deliver = append(deliver, d)
		}
	}
	f.mu.Unlock()
	for _, d := range deliver {
		f.deliver(d, resp.ID, *req.Data)
	}
	return resp, nil
}

func (f *fakeAPI) Device(_ context.Context, app, device string) (*api.DeviceState, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return &api.DeviceState{App: app, Device: device, Acked: f.acked[device], InboxLen: int64(f.inbox[device] - f.acked[device])}, nil
}

func TestPush_StoredAccounting(t *testing.T) {
	t.Parallel()
	fake := newFakeAPI()
	fake.reject = func(d string) string {
		if strings.HasSuffix(d, "-3") {
			return "degraded"
		}
		return ""
	}
	rep, err := Push{Target: Target{App: "demo", DevicePrefix: "p-"}, Stored: true, Devices: 10, Batch: 5, Pushes: 50, API: fake}.
		Run(context.Background(), Plan{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Mode != "stored" || rep.Requested != 50 || rep.Pushes != 45 || rep.Errors != 5 || rep.Lost != 0 ||
		rep.Workers != 0 || rep.ErrorReasons["rejected: degraded"] != 5 || rep.LatencyMS.Max <= 0 {
		t.Fatalf("report %+v", rep)
	}
	if fake.inbox["p-0"] != 5 {
		t.Errorf("device ids: %v", fake.inbox)
	}
	fake.failWith = &api.APIError{Method: "POST", Path: "/v1/push", Status: 429, Code: "rate_limited"}
	rep, err = Push{Target: Target{App: "demo"}, Stored: true, Devices: 10, Pushes: 30, Batch: 10, API: fake}.Run(context.Background(), Plan{})
	if err != nil || rep.FailedRequests != 3 || rep.ErrorReasons["HTTP 429 rate_limited"] != 30 {
		t.Fatalf("failed requests: %+v, %v", rep, err)
	}
}

// TestPush_ServerCPUPerPush: the server's CPU time is measured when the
// first push goes and when the last is answered (stored) or acked
// (online), and divided among the accepted pushes; a probe that fails
// leaves the fields null with a warning.
func TestPush_ServerCPUPerPush(t *testing.T) {
	t.Parallel()
	fake := newFakeAPI()
	var calls []int
	// The server's clock: 2 s of CPU at the start, 0.5 s more for every
	// request the fake took since.
	cpu := func(context.Context) (time.Duration, error) {
		fake.mu.Lock()
		defer fake.mu.Unlock()
		calls = append(calls, fake.next)
		return 2*time.Second + time.Duration(fake.next)*time.Second/2, nil
	}
	rep, err := Push{Target: Target{App: "demo"}, Stored: true, Devices: 10, Batch: 5, Pushes: 50, API: fake, CPU: cpu}.
		Run(context.Background(), Plan{})
	if err != nil {
		t.Fatal(err)
	}
	if len(calls) != 2 || calls[0] != 0 || calls[1] != 10 {
		t.Fatalf("probe called at %v requests, want before the first and after the last", calls)
	}
	if rep.ServerCPUS == nil || *rep.ServerCPUS != 5 || rep.ServerCPUUSPerPush == nil || *rep.ServerCPUUSPerPush != 1e5 {
		t.Fatalf("server cpu %v s, %v µs per push; want 5 s, 100000 µs", rep.ServerCPUS, rep.ServerCPUUSPerPush)
	}

	target := testTarget("ws://127.0.0.1:1/v1/ws")
	target.DevicePrefix = "c-"
	fake = newFakeAPI()
	calls = nil
	rep, err = Push{Target: target, Devices: 10, Batch: 10, Pushes: 100, Concurrency: 1, API: fake, CPU: cpu}.
		Run(context.Background(), Plan{Workers: 1, Spawn: InProcess(scriptedDevices(fake, "c-", 0), nil)})
	if err != nil || rep.ServerCPUS == nil || *rep.ServerCPUS != 5 || *rep.ServerCPUUSPerPush != 5e4 {
		t.Fatalf("online: server cpu %v s, %v µs per push, %v", rep.ServerCPUS, rep.ServerCPUUSPerPush, err)
	}

	var warned []error
	failing := func(context.Context) (time.Duration, error) { return 0, fmt.Errorf("down") }
	rep, err = Push{Target: Target{App: "demo"}, Stored: true, Devices: 10, Pushes: 10, API: newFakeAPI(), CPU: failing}.
		Run(context.Background(), Plan{Warn: func(err error) { warned = append(warned, err) }})
	if err != nil || rep.ServerCPUS != nil || rep.ServerCPUUSPerPush != nil || len(warned) != 1 ||
		warned[0].Error() != "cannot measure server CPU before pushing: down" {
		t.Fatalf("failing probe: %v s, warned %v, %v", rep.ServerCPUS, warned, err)
	}
}

// scriptedDevices is a push worker without sockets: it receives what the
// fake API delivers to its share of the devices, reports each receipt
// (device d arrives d+1 ms after it was sent), and reports drops of its
// own at the end.
func scriptedDevices(fake *fakeAPI, prefix string, drops int) WorkFunc {
	var mu sync.Mutex
	inboxes := map[int]chan receipt{} // by the worker's first device
	fake.deliver = func(device, id, payload string) {
		d, _ := strconv.Atoi(strings.TrimPrefix(device, prefix))
		sent, _ := strconv.ParseInt(strings.SplitN(payload, "|", 2)[0], 10, 64)
		mu.Lock()
		defer mu.Unlock()
		first := -1
		for f := range inboxes {
			if f <= d && f > first {
				first = f
			}
		}
		inboxes[first] <- receipt{Device: d, ID: id, Sent: sent, At: sent + int64(d+1)*int64(time.Millisecond)}
	}
	return func(ctx context.Context, in io.Reader, out, _ io.Writer) error {
		dec, enc := json.NewDecoder(in), json.NewEncoder(out)
		var job Job
		if err := dec.Decode(&job); err != nil {
			return err
		}
		ch := make(chan receipt, 1000)
		mu.Lock()
		inboxes[job.Share.First] = ch
		mu.Unlock()
		_ = enc.Encode(outEvent{Event: evReady})
		var c Command
		if dec.Decode(&c) != nil || c.Cmd != cmdStart {
			return fmt.Errorf("want start, got %+v", c)
		}
		_ = enc.Encode(outEvent{Event: evConnected, Data: connected{OK: job.Share.Count}})
		stopped := make(chan struct{})
		go func() {
			defer close(stopped)
			var stop Command
			_ = dec.Decode(&stop)
		}()
		for {
			select {
			case rc := <-ch:
				_ = enc.Encode(outEvent{Event: evData, Data: []receipt{rc}})
			case <-stopped:
				// Every delivery is queued before the run stops its
				// workers: the fake API delivers as it answers.
				for len(ch) > 0 {
					_ = enc.Encode(outEvent{Event: evData, Data: []receipt{<-ch}})
				}
				h := held{Alive: job.Share.Count}
				if job.Worker == 1 {
					h.Drops = drops
					h.Errors.Add("gone", drops)
				}
				return enc.Encode(outEvent{Event: evDone, Data: h})
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
}

// TestPush_OnlineAddsUpWorkers spreads 10 devices over two scripted
// workers: receipts stream in from both, their latencies form one
// distribution, and the drops one worker saw reach the report.
func TestPush_OnlineAddsUpWorkers(t *testing.T) {
	t.Parallel()
	fake := newFakeAPI()
	work := scriptedDevices(fake, "o-", 2)
	target := testTarget("ws://127.0.0.1:1/v1/ws")
	target.DevicePrefix = "o-"
	var progress []string
	rep, err := Push{Target: target, Devices: 10, Batch: 10, Pushes: 100, Concurrency: 1, API: fake}.
		Run(context.Background(), Plan{Workers: 2, Spawn: InProcess(work, nil), Progress: func(s string) { progress = append(progress, s) }})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Mode != "online" || rep.Workers != 2 || rep.Transport != "ws" || rep.Pushes != 100 || rep.Received != 100 ||
		rep.Lost+rep.Duplicates+rep.Unexpected+rep.Unacked+rep.Errors != 0 {
		t.Fatalf("report %+v", rep)
	}
	// Device d's messages take d+1 ms, ten messages each.
	if rep.LatencyMS != (Latency{P50: 5, P99: 10, Max: 10}) {
		t.Errorf("latency %+v", rep.LatencyMS)
	}
	if rep.Drops != 2 || rep.ErrorReasons["device drop: gone"] != 2 {
		t.Errorf("drops %d, reasons %v", rep.Drops, rep.ErrorReasons)
	}
	if len(progress) != 1 || progress[0] != "10 devices connected; pushing" {
		t.Errorf("progress %q", progress)
	}
}

// TestPush_WorkerFailureFailsTheRun: a worker that cannot connect its
// devices stops the run before anything is sent, naming the worker.
func TestPush_WorkerFailureFailsTheRun(t *testing.T) {
	t.Parallel()
	fake := newFakeAPI()
	failing := func(ctx context.Context, in io.Reader, out, _ io.Writer) error {
		dec, enc := json.NewDecoder(in), json.NewEncoder(out)
		var job Job
		if err := dec.Decode(&job); err != nil {
			return err
		}
		_ = enc.Encode(outEvent{Event: evReady})
		var c Command
		_ = dec.Decode(&c)
		if job.Worker == 1 {
			return enc.Encode(outEvent{Event: evError, Message: "out of sockets"})
		}
		_ = enc.Encode(outEvent{Event: evConnected, Data: connected{OK: job.Share.Count}})
		_, _ = io.Copy(io.Discard, in)
		return nil
	}
	_, err := Push{Target: testTarget("ws://127.0.0.1:1/v1/ws"), Devices: 4, Batch: 2, API: fake}.
		Run(context.Background(), Plan{Workers: 2, Spawn: InProcess(failing, nil)})
	if err == nil || err.Error() != "bench worker 1: out of sockets" {
		t.Fatalf("err %v", err)
	}
	if fake.next != 0 {
		t.Errorf("%d requests sent", fake.next)
	}
}
