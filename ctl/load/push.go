package load

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/pushd/pushd/appliance/api"
)

const pushName = "push"

const (
	// MinPayload is the smallest payload Push sends: the send time in
	// decimal nanoseconds and "|".
	MinPayload = 20
	// MaxPayload is the server's ceiling for a payload.
	MaxPayload = 64 << 10
	// MaxBatch is the push API's default max_targets: the most devices
	// one request names.
	MaxBatch = 1000
	// ackPollPause separates rounds of device polls at the end of a run.
	ackPollPause = 20 * time.Millisecond
	// pushConnectTimeout bounds the wait for every device's first
	// WELCOME; generous, since the SDK backs off after failures.
	pushConnectTimeout = 60 * time.Second
)

// Push drives the push API with batch requests and measures the delivery
// rate, latency and loss: request k is one message to Batch devices
// starting at device k·Batch (modulo Devices). "Pushes" count
// device-messages: one request to 100 devices is 100 pushes. Every
// payload starts with its send time (unix nanoseconds, then "|").
//
// Online (the default), the devices are held connected by the workers
// with the Go SDK, which receive, dedupe and ack; every message handed to
// a device is reported to the parent with its send time. At the end the
// run waits until each device's ack cursor covers what it was sent, then
// counts lost and duplicate messages. Stored, nothing connects: the run
// measures the durable accept rate and then checks that every inbox
// holds what was accepted.
type Push struct {
	// Target is the server and the devices' identity. Stored runs use
	// only its App and DevicePrefix.
	Target Target `json:"target"`
	// Stored keeps the devices offline and checks their inboxes
	// afterwards; false holds them connected in the workers.
	Stored bool `json:"stored,omitempty"`
	// Devices is the number of distinct target devices, at least 1.
	Devices int `json:"devices"`
	// Pushes is the device-messages to send; 0 means 10 per device, or
	// no limit when Duration is set.
	Pushes int `json:"pushes,omitempty"`
	// Batch is the devices per request, 1..MaxBatch and at most Devices;
	// 0 means 100, or Devices when fewer.
	Batch int `json:"batch,omitempty"`
	// Rate is device-messages per second; 0 means as fast as Concurrency
	// allows.
	Rate float64 `json:"rate,omitempty"`
	// Duration stops sending after this long; 0 means no time limit.
	Duration time.Duration `json:"duration,omitempty"`
	// PayloadSize is the payload's bytes, MinPayload..MaxPayload; 0
	// means 64.
	PayloadSize int `json:"payload_size,omitempty"`
	// Concurrency is the requests in flight, and the device polls at the
	// end; 0 means 8.
	Concurrency int `json:"concurrency,omitempty"`
	// Wait bounds the wait at the end for acks (online) or for the inbox
	// check (stored); 0 means 30 s.
	Wait time.Duration `json:"wait,omitempty"`
	// API is the push API. Required.
	API PushAPI `json:"-"`
	// CPU, when set, measures the server's CPU time when the first push
	// is sent and when the last is acked (online) or answered (stored):
	// what the run cost the server, per push.
	CPU CPUProbe `json:"-"`
	// RedisCPU, when set, reads the CPU time the region's Redis has used
	// (its primaries', added up): read before the first push and after
	// the last answer, it gives the report's RedisCPUPerPushUS. Zero: not
	// measured.
	RedisCPU func(ctx context.Context) (time.Duration, error) `json:"-"`

	// bridged makes the run a bridge run (Bridge.Run): nil for a push run.
	bridged *bridgeRun
	// wrap, when set, makes the scenario the workers are told to run
	// from the push with its defaults applied: the Bridge it is the push
	// of. nil: the push itself.
	wrap func(Push) scenario
}

// bridgeRun is what makes a Push a bridge run: its pushes name region,
// which the devices are connected to, and their state (the ack cursors)
// is read from that region's push API.
type bridgeRun struct {
	region string
	state  PushAPI
}

// PushAPI is the push API as Push uses it: *api.Client is one, and a
// test can fake it in memory. It must be safe for concurrent use. Its
// error answers should be *api.APIError, so that failures group by status
// and code.
type PushAPI interface {
	Push(ctx context.Context, req *api.PushRequest) (*api.PushResponse, error)
	Device(ctx context.Context, app, device string) (*api.DeviceState, error)
}

// PushReport is what a Push run measured. pushctl bench push --json
// prints it as is; docs/pushctl.md says what each field counts.
type PushReport struct {
	Scenario       string  `json:"scenario"`         // "push" or "bridge"
	Mode           string  `json:"mode"`             // "online" or "stored"
	Region         string  `json:"region,omitempty"` // bridge: the devices' region
	Transport      string  `json:"transport,omitempty"`
	Devices        int     `json:"devices"`
	Workers        int     `json:"workers,omitempty"`
	Batch          int     `json:"batch"`
	Requested      int     `json:"requested"`
	Pushes         int     `json:"pushes"`
	Received       int     `json:"received"`
	PushesPerS     float64 `json:"pushes_per_s"`
	AcceptPerS     float64 `json:"accept_per_s"`
	LatencyMS      Latency `json:"latency_ms"`
	Lost           int     `json:"lost"`
	Trimmed        int     `json:"trimmed,omitempty"`
	Duplicates     int     `json:"duplicates"`
	Errors         int     `json:"errors"`
	FailedRequests int     `json:"failed_requests"`
	Unacked        int     `json:"unacked"`
	Unexpected     int     `json:"unexpected"`
	Drops          int     `json:"drops"`
	ErrorReasons   Reasons `json:"error_reasons,omitempty"`
	DurationS      float64 `json:"duration_s"`
	// ServerCPUS is the CPU time the server used from the first push
	// sent until the last was acked (online) or answered (stored), and
	// ServerCPUUSPerPush that per accepted push, in microseconds; null
	// when it could not be measured.
	ServerCPUS         *float64 `json:"server_cpu_s"`
	ServerCPUUSPerPush *float64 `json:"server_cpu_us_per_push"`
	// RedisCPUPerPushUS is the Redis CPU (user and system, every primary,
	// forked children included) spent while pushes were sent, per pushed
	// device-message, in µs; absent when Push.RedisCPU is not set or
	// failed.
	RedisCPUPerPushUS float64 `json:"redis_cpu_us_per_push,omitempty"`
}

func (*Push) name() string { return pushName }

// withDefaults applies the zero values' meanings and checks the rest.
func (s Push) withDefaults() (Push, error) {
	if s.Batch == 0 {
		s.Batch = min(100, s.Devices)
	}
	if s.PayloadSize == 0 {
		s.PayloadSize = 64
	}
	if s.Concurrency == 0 {
		s.Concurrency = 8
	}
	if s.Wait == 0 {
		s.Wait = 30 * time.Second
	}
	switch {
	case s.API == nil:
		return s, planErrorf("no push API")
	case s.Devices < 1:
		return s, planErrorf("%d devices: need at least 1", s.Devices)
	case s.Batch < 1 || s.Batch > MaxBatch || s.Batch > s.Devices:
		return s, planErrorf("batch %d: must be 1..%d and at most the devices (%d)", s.Batch, MaxBatch, s.Devices)
	case s.Pushes < 0 || s.Duration < 0 || s.Rate < 0 || s.Wait < 0:
		return s, planErrorf("pushes, duration, rate and wait must not be negative")
	case s.PayloadSize < MinPayload || s.PayloadSize > MaxPayload:
		return s, planErrorf("payload size %d: must be %d..%d (the payload carries its send time)", s.PayloadSize, MinPayload, MaxPayload)
	case s.Concurrency < 1:
		return s, planErrorf("concurrency %d: must be at least 1", s.Concurrency)
	}
	if s.Pushes == 0 && s.Duration == 0 {
		s.Pushes = 10 * s.Devices
	}
	var err error
	s.Target, err = s.Target.forRun(!s.Stored)
	return s, err
}

// Run sends the pushes as p says and accounts for every one. An error
// with a nil report means the run could not be carried out (a plan error,
// a device that could not connect, ctx done). An error with a report
// means the workers failed at the end: the report has the counts so far,
// which may be short.
func (s Push) Run(ctx context.Context, p Plan) (*PushReport, error) {
	s, err := s.withDefaults()
	if err != nil {
		return nil, err
	}
	rep := &PushReport{Scenario: pushName, Mode: "stored", Devices: s.Devices, Batch: s.Batch}
	var devices *pushDevices
	if !s.Stored {
		rep.Mode = "online"
		if devices, err = s.connect(ctx, p); err != nil {
			return nil, err
		}
		defer devices.pool.close()
		rep.Workers, rep.Transport = devices.pool.size(), s.Target.transport()
		p.progress("%d devices connected; pushing", s.Devices)
	}

	var cpu0 time.Duration
	measureCPU := false
	if s.RedisCPU != nil {
		if c, err := s.RedisCPU(ctx); err == nil {
			cpu0, measureCPU = c, true
		}
	}
	cpu := serverCPU{probe: s.CPU, plan: p, start: p.measureCPU(ctx, s.CPU, "before pushing")}
	sent := s.send(ctx)
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	rep.Requested, rep.Pushes = sent.attempted, len(sent.accepted)
	if measureCPU && rep.Pushes > 0 {
		if cpu1, err := s.RedisCPU(ctx); err == nil {
			rep.RedisCPUPerPushUS = float64((cpu1 - cpu0).Microseconds()) / float64(rep.Pushes)
		}
	}
	rep.Errors, rep.FailedRequests = sent.errors, sent.failedRequests
	rep.ErrorReasons.Merge(sent.why)
	sendWindow := sent.lastAnswer.Sub(sent.firstSend)
	if sendWindow > 0 {
		rep.AcceptPerS = float64(rep.Pushes) / sendWindow.Seconds()
	}

	var workerErr error
	if devices != nil {
		workerErr = devices.finish(ctx, s, sent, rep, cpu)
	} else {
		cpu.end(ctx, rep)
		lost, trimmed, verifyErrs := s.verifyStored(ctx, sent)
		rep.Lost, rep.Trimmed = lost, trimmed
		rep.Errors += verifyErrs.Count()
		rep.ErrorReasons.Merge(verifyErrs)
		rep.LatencyMS = sent.reqLatency.Latency()
		rep.DurationS = sendWindow.Seconds()
		rep.PushesPerS = rep.AcceptPerS
	}
	return rep, workerErr
}

// serverCPU measures the server's CPU time over a run: start, taken
// before the first push, is nil when there is no probe or it failed.
type serverCPU struct {
	probe CPUProbe
	plan  Plan
	start *time.Duration
}

// end measures again and reports the CPU time used since start.
func (c serverCPU) end(ctx context.Context, rep *PushReport) {
	if c.start == nil {
		return
	}
	end := c.plan.measureCPU(ctx, c.probe, "after the last push")
	if end == nil {
		return
	}
	used := (*end - *c.start).Seconds()
	rep.ServerCPUS = &used
	if rep.Pushes > 0 {
		per := used * 1e6 / float64(rep.Pushes)
		rep.ServerCPUUSPerPush = &per
	}
}

// pushDevices are the connected devices of an online run: the workers
// holding them and the receipts they report.
type pushDevices struct {
	pool     *pool
	mu       sync.Mutex
	receipts []receipt
	badData  error // the first "data" event that did not decode
}

// connect starts the workers and waits until every device is connected;
// a device that cannot connect fails the run, since every message sent
// to it would count as lost.
func (s *Push) connect(ctx context.Context, p Plan) (*pushDevices, error) {
	d := &pushDevices{}
	var as scenario = s
	if s.wrap != nil {
		as = s.wrap(*s)
	}
	pool, err := p.start(ctx, as, s.Devices, "devices", s.Target.URL, d.onData)
	if err != nil {
		return nil, err
	}
	d.pool = pool
	conn, err := phase[connected](ctx, pool, cmdStart, evConnected, pushConnectTimeout+workerStartTimeout)
	if err != nil {
		pool.close()
		return nil, err
	}
	if conn.Failed > 0 {
		pool.close()
		return nil, fmt.Errorf("%d of %d devices did not connect: %s", conn.Failed, s.Devices, conn.Errors)
	}
	return d, nil
}

// onData takes a worker's batch of receipts.
func (d *pushDevices) onData(worker int, data json.RawMessage) {
	var rs []receipt
	err := json.Unmarshal(data, &rs)
	d.mu.Lock()
	defer d.mu.Unlock()
	if err != nil {
		if d.badData == nil {
			d.badData = fmt.Errorf("bench worker %d: receipts: %w", worker, err)
		}
		return
	}
	d.receipts = append(d.receipts, rs...)
}

// finish waits for the acks, measures the server's CPU time, stops the
// workers and accounts for every accepted message. It returns a worker failure, after which the counts
// may be short.
func (d *pushDevices) finish(ctx context.Context, s Push, sent *sendResult, rep *PushReport, cpu serverCPU) error {
	acked, pollErrs := s.pollAcked(ctx, sent)
	cpu.end(ctx, rep)
	rep.ErrorReasons.Merge(pollErrs)
	if s.bridged != nil {
		// The origin does not know the seqs the devices' region gave:
		// each device's inbox there is fresh, so its accepted messages
		// are seqs 1…count.
		for d, pd := range sent.perDevice {
			rep.Unacked += max(0, pd.count-int(acked[d]))
		}
	} else {
		for k, seq := range sent.accepted {
			if seq > 0 && seq > acked[k.device] {
				rep.Unacked++
			}
		}
	}
	done, workerErr := phase[held](ctx, d.pool, cmdStop, evDone, workerStopTimeout)
	rep.Drops = done.Drops
	for reason, n := range done.Errors {
		rep.ErrorReasons.Add("device drop: "+reason, n)
	}
	// No receipt arrives once the pool is closed.
	d.pool.close()
	workerErr = errors.Join(workerErr, d.badData)
	sum := summarizeReceipts(sent.accepted, d.receipts)
	rep.Received, rep.Lost, rep.Duplicates, rep.Unexpected = sum.received, sum.lost, sum.duplicates, sum.unexpected
	rep.LatencyMS = sum.latency.Latency()
	end := time.Unix(0, sum.lastAt)
	if sum.lastAt == 0 {
		end = sent.lastAnswer
	}
	if window := end.Sub(sent.firstSend); window > 0 {
		rep.DurationS = window.Seconds()
		rep.PushesPerS = float64(rep.Received) / window.Seconds()
	}
	return workerErr
}
