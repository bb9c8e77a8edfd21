package ctl

import (
	"github.com/pushd/pushd/appliance/api"

	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/urfave/cli/v2"
)

const (
	// minBenchPayload is the send time in decimal nanoseconds and "|".
	minBenchPayload = 20
	// maxBenchPayload is the server's ceiling for a payload.
	maxBenchPayload = 64 << 10
	// maxBatch is the push API's default max_targets.
	maxBatch = 1000
	// ackPollPause separates rounds of device polls at the end of a run.
	ackPollPause = 20 * time.Millisecond
)

func benchPushCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:  "push",
		Usage: "drive the push API and measure delivery rate, latency and loss",
		Description: "--mode online (default): devices are held connected by worker processes with the Go SDK,\n" +
			"which receive and ack; every payload carries its send time, so each receipt yields the\n" +
			"push→device latency. At the end pushctl waits until each device's ack cursor covers what it\n" +
			"was sent, then counts lost (accepted, never received) and duplicate messages.\n" +
			"--mode stored: devices stay offline (fresh ids per run); measures the durable accept rate and\n" +
			"then checks through GET /v1/devices that every inbox holds what was accepted.\n" +
			"Exits 1 when anything was lost, duplicated, refused or left unacked.",
		Flags: append(append(append([]cli.Flag{
			&cli.StringFlag{Name: "mode", Usage: "online or stored", Value: "online"},
			&cli.IntFlag{Name: "devices", Usage: "distinct target devices", Value: 1000},
			&cli.IntFlag{Name: "pushes", Usage: "device-messages to send (default: 10 per device, or unlimited with --duration)"},
			&cli.IntFlag{Name: "batch", Usage: "devices per request (each request is one message)", Value: 100},
			&cli.Float64Flag{Name: "rate", Usage: "device-messages per second, 0 for as fast as possible"},
			&cli.DurationFlag{Name: "duration", Usage: "stop sending after this long"},
			&cli.IntFlag{Name: "payload-size", Usage: "payload bytes, at least 20 (the send time)", Value: 64},
			&cli.IntFlag{Name: "concurrency", Usage: "requests in flight", Value: 8},
			&cli.DurationFlag{Name: "wait", Usage: "how long to wait at the end for acks (online) or to verify inboxes (stored)", Value: 30 * time.Second},
		}, benchFlags()...), settingFlags(setPushURL, setURL, setApp, setAPIKey, setKeyID, setSecret)...), outputFlags()...),
		Action: func(c *cli.Context) error { return runBenchPush(c, e) },
	}
}

// loadSpec is what the sender does.
type loadSpec struct {
	online      bool
	app, prefix string
	wait        time.Duration // for acks (online) or the inbox check (stored)
	devices     int
	pushes      int // device-messages; 0: until duration
	batch       int
	rate        float64 // device-messages per second; 0: unlimited
	duration    time.Duration
	payloadSize int
	concurrency int
}

// msgKey is one device-message: a message id and a device index.
type msgKey struct {
	id     string
	device int
}

type deviceLoad struct {
	count  int
	maxSeq uint64
}

// loadResult is what the sender saw. Guarded by mu while sending.
type loadResult struct {
	mu             sync.Mutex
	accepted       map[msgKey]uint64 // → inbox seq (0: not stored)
	perDevice      []deviceLoad
	attempted      int // device-messages requested
	requests       int
	failedRequests int
	errors         int // device-messages not accepted
	why            reasons
	reqLatency     []time.Duration
	firstSend      time.Time
	lastAnswer     time.Time
}

// pushReport is the result of bench push; -o json prints it as is.
type pushReport struct {
	Scenario       string         `json:"scenario"`
	Mode           string         `json:"mode"`
	Transport      string         `json:"transport,omitempty"`
	Devices        int            `json:"devices"`
	Workers        int            `json:"workers,omitempty"`
	Batch          int            `json:"batch"`
	Requested      int            `json:"requested"`
	Pushes         int            `json:"pushes"`
	Received       int            `json:"received"`
	PushesPerS     float64        `json:"pushes_per_s"`
	AcceptPerS     float64        `json:"accept_per_s"`
	LatencyMS      latencyMS      `json:"latency_ms"`
	Lost           int            `json:"lost"`
	Trimmed        int            `json:"trimmed,omitempty"`
	Duplicates     int            `json:"duplicates"`
	Errors         int            `json:"errors"`
	FailedRequests int            `json:"failed_requests"`
	Unacked        int            `json:"unacked"`
	Unexpected     int            `json:"unexpected"`
	Drops          int            `json:"drops"`
	ErrorReasons   map[string]int `json:"error_reasons,omitempty"`
	DurationS      float64        `json:"duration_s"`
}

type latencyMS struct {
	P50 float64 `json:"p50"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

func runBenchPush(c *cli.Context, e *env) error {
	format, err := outputFormat(c)
	if err != nil {
		return err
	}
	if c.NArg() > 0 {
		return usagef("unexpected arguments %q", c.Args().Slice())
	}
	spec, err := pushSpecFromFlags(c)
	if err != nil {
		return err
	}
	var t *benchTarget
	if spec.online {
		t, err = resolveBenchTarget(c, e, nil)
	} else {
		t, err = resolvePushOnlyTarget(c, e)
	}
	if err != nil {
		return err
	}
	defer t.stop()
	if spec.app, err = t.k.require(setApp); err != nil {
		return err
	}
	cl, err := pushClient(t.k, spec.concurrency)
	if err != nil {
		return err
	}
	spec.prefix = "bench-" + runID() + "-"
	rep := &pushReport{Scenario: "push", Mode: "stored", Devices: spec.devices, Batch: spec.batch}
	ctx := c.Context

	var devices *pushDevices
	if spec.online {
		rep.Mode = "online"
		if devices, err = startPushDevices(c, e, spec, t); err != nil {
			return err
		}
		defer devices.pool.close()
		rep.Workers, rep.Transport = len(devices.pool.procs), transportOf(t.deviceURL)
		if format == formatTable {
			fmt.Fprintf(e.stderr, "pushctl bench: %d devices connected; pushing\n", spec.devices)
		}
	}

	load := runLoad(ctx, cl, spec)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	rep.Requested, rep.Pushes = load.attempted, len(load.accepted)
	rep.Errors, rep.FailedRequests = load.errors, load.failedRequests
	why := reasons{}
	why.merge(load.why)
	sendWindow := load.lastAnswer.Sub(load.firstSend)
	if sendWindow > 0 {
		rep.AcceptPerS = float64(rep.Pushes) / sendWindow.Seconds()
	}

	var workerErr error
	if spec.online {
		workerErr = devices.finish(ctx, cl, spec, load, rep, why)
	} else {
		lost, trimmed, verifyErrs := verifyStored(ctx, cl, spec, load)
		rep.Lost, rep.Trimmed = lost, trimmed
		rep.Errors += verifyErrs.count()
		why.merge(verifyErrs)
		rep.LatencyMS = latencyStats(load.reqLatency)
		rep.DurationS = sendWindow.Seconds()
		rep.PushesPerS = rep.AcceptPerS
	}
	if len(why) > 0 {
		rep.ErrorReasons = why
	}
	if err := printPushReport(e.stdout, format, rep); err != nil {
		return err
	}
	if workerErr != nil {
		return workerErr
	}
	if rep.Trimmed > 0 {
		fmt.Fprintf(e.stderr, "pushctl bench push: note: the inbox cap trimmed %d pushes, more than it holds per device; not lost (each device is told of the gap) but not measured either: give more --devices\n", rep.Trimmed)
	}
	if rep.Lost+rep.Duplicates+rep.Errors+rep.Unacked > 0 {
		fmt.Fprintf(e.stderr, "pushctl bench push: %d lost, %d duplicates, %d errors, %d unacked", rep.Lost, rep.Duplicates, rep.Errors, rep.Unacked)
		if len(why) > 0 {
			fmt.Fprintf(e.stderr, ": %s", why)
		}
		fmt.Fprintln(e.stderr)
		return errReported
	}
	return nil
}

func pushSpecFromFlags(c *cli.Context) (loadSpec, error) {
	mode := c.String("mode")
	s := loadSpec{online: mode == "online", devices: c.Int("devices"), pushes: c.Int("pushes"), batch: c.Int("batch"),
		rate: c.Float64("rate"), duration: c.Duration("duration"), payloadSize: c.Int("payload-size"),
		concurrency: c.Int("concurrency"), wait: c.Duration("wait")}
	switch {
	case mode != "online" && mode != "stored":
		return s, usagef("--mode %q: want online or stored", mode)
	case s.devices < 1:
		return s, usagef("--devices %d: must be at least 1", s.devices)
	case s.batch < 1 || s.batch > maxBatch || s.batch > s.devices:
		return s, usagef("--batch %d: must be 1..%d and at most --devices (%d)", s.batch, maxBatch, s.devices)
	case s.pushes < 0 || s.duration < 0 || s.rate < 0:
		return s, usagef("--pushes, --duration and --rate must not be negative")
	case s.payloadSize < minBenchPayload || s.payloadSize > maxBenchPayload:
		return s, usagef("--payload-size %d: must be %d..%d (the payload carries its send time)", s.payloadSize, minBenchPayload, maxBenchPayload)
	case s.concurrency < 1:
		return s, usagef("--concurrency %d: must be at least 1", s.concurrency)
	case s.wait <= 0:
		return s, usagef("--wait %s: must be positive", s.wait)
	}
	if s.pushes == 0 && s.duration == 0 {
		s.pushes = 10 * s.devices
	}
	return s, nil
}

// pushDevices are the connected devices of an online run: the workers
// holding them and the receipts they report.
type pushDevices struct {
	pool     *workerPool
	mu       sync.Mutex
	receipts []receipt
}

// startPushDevices starts the workers and waits until every device is
// connected; a device that cannot connect fails the run, since every
// message sent to it would count as lost.
func startPushDevices(c *cli.Context, e *env, spec loadSpec, t *benchTarget) (*pushDevices, error) {
	ctx := c.Context
	plans, err := planWorkers(spec.devices, c.Int("workers"), c.String("sources"), t.deviceURL)
	if err != nil {
		return nil, err
	}
	jobs := make([]workerJob, len(plans))
	for i, p := range plans {
		jobs[i] = workerJob{Scenario: scenarioPush, URL: t.deviceURL, App: t.app, KeyID: t.keyID, Secret: t.secret,
			DevicePrefix: spec.prefix, First: p.first, Count: p.count, Source: p.source}
	}
	d := &pushDevices{}
	d.pool, err = startPool(ctx, e, jobs, func(rs []receipt) {
		d.mu.Lock()
		d.receipts = append(d.receipts, rs...)
		d.mu.Unlock()
	})
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*pushDevices, error) {
		d.pool.close()
		return nil, err
	}
	if _, err := d.pool.await(ctx, evReady, workerStartTimeout); err != nil {
		return fail(err)
	}
	if err := d.pool.send(cmdStart); err != nil {
		return fail(err)
	}
	connected, err := d.pool.await(ctx, evConnected, pushConnectTimeout+workerStartTimeout)
	if err != nil {
		return fail(err)
	}
	failed, why := 0, reasons{}
	for _, ev := range connected {
		failed += ev.Failed
		why.merge(ev.Errors)
	}
	if failed > 0 {
		return fail(fmt.Errorf("bench push: %d of %d devices did not connect: %s", failed, spec.devices, why))
	}
	return d, nil
}

// finish waits for the acks, stops the workers and accounts for every
// accepted message. It returns a worker failure, after which the counts
// may be short.
func (d *pushDevices) finish(ctx context.Context, cl *api.Client, spec loadSpec, load *loadResult, rep *pushReport, why reasons) error {
	acked, pollErrs := pollAcked(ctx, cl, spec, load)
	why.merge(pollErrs)
	for k, seq := range load.accepted {
		if seq > 0 && seq > acked[k.device] {
			rep.Unacked++
		}
	}
	var workerErr error
	if err := d.pool.send(cmdStop); err != nil {
		workerErr = err
	}
	done, err := d.pool.await(ctx, evDone, workerStopTimeout)
	if err != nil {
		workerErr = errors.Join(workerErr, err)
	}
	for _, ev := range done {
		rep.Drops += ev.Drops
		for reason, n := range ev.Errors {
			why.add("device drop: "+reason, n)
		}
	}
	// No receipt arrives once the pool is closed.
	d.pool.close()
	sum := summarizeReceipts(load.accepted, d.receipts)
	rep.Received, rep.Lost, rep.Duplicates, rep.Unexpected = sum.received, sum.lost, sum.duplicates, sum.unexpected
	rep.LatencyMS = latencyStats(sum.latencies)
	end := time.Unix(0, sum.lastAt)
	if sum.lastAt == 0 {
		end = load.lastAnswer
	}
	if window := end.Sub(load.firstSend); window > 0 {
		rep.DurationS = window.Seconds()
		rep.PushesPerS = float64(rep.Received) / window.Seconds()
	}
	return workerErr
}

// resolvePushOnlyTarget is resolveBenchTarget for stored mode, which needs
// only the push API: devices never connect.
func resolvePushOnlyTarget(c *cli.Context, e *env) (*benchTarget, error) {
	k, err := loadConfig(c, e)
	if err != nil {
		return nil, err
	}
	t := &benchTarget{k: k}
	if c.Bool("local") {
		if t.local, err = startLocal(c.Context, e, c.String("pushd"), nil); err != nil {
			return nil, err
		}
		k.override = &t.local.cfg
	}
	return t, nil
}

// runLoad sends the pushes: request k is one message to batch devices
// starting at device k*batch (modulo the device count), paced to the rate,
// with concurrency requests in flight.
func runLoad(ctx context.Context, cl *api.Client, s loadSpec) *loadResult {
	r := &loadResult{accepted: map[msgKey]uint64{}, perDevice: make([]deviceLoad, s.devices), why: reasons{}}
	reqs := make(chan int)
	start := time.Now()
	go func() {
		defer close(reqs)
		for k := 0; ; k++ {
			if s.pushes > 0 && k*s.batch >= s.pushes {
				return
			}
			if s.duration > 0 && time.Since(start) >= s.duration {
				return
			}
			if s.rate > 0 {
				due := start.Add(time.Duration(float64(k*s.batch) / s.rate * float64(time.Second)))
				if sleepCtx(ctx, time.Until(due)) != nil {
					return
				}
			}
			select {
			case reqs <- k:
			case <-ctx.Done():
				return
			}
		}
	}()
	var wg sync.WaitGroup
	for range s.concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range reqs {
				r.send(ctx, cl, s, k)
			}
		}()
	}
	wg.Wait()
	return r
}

// send makes request k and records its outcome.
func (r *loadResult) send(ctx context.Context, cl *api.Client, s loadSpec, k int) {
	n := s.batch
	if s.pushes > 0 {
		n = min(n, s.pushes-k*s.batch)
	}
	devices := make([]string, n)
	index := make(map[string]int, n)
	for j := range n {
		d := (k*s.batch + j) % s.devices
		devices[j] = s.prefix + strconv.Itoa(d)
		index[devices[j]] = d
	}
	sent := time.Now()
	payload := strconv.FormatInt(sent.UnixNano(), 10) + "|"
	payload += strings.Repeat("x", max(0, s.payloadSize-len(payload)))
	resp, err := cl.Push(ctx, &api.PushRequest{App: &s.app, Devices: devices, Data: &payload})
	answered := time.Now()

	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests++
	r.attempted += n
	if r.firstSend.IsZero() || sent.Before(r.firstSend) {
		r.firstSend = sent
	}
	if answered.After(r.lastAnswer) {
		r.lastAnswer = answered
	}
	if err != nil {
		r.failedRequests++
		r.errors += n
		r.why.add(requestFailure(err), n)
		return
	}
	r.reqLatency = append(r.reqLatency, answered.Sub(sent))
	answeredFor := 0
	for _, res := range resp.Results {
		d, ok := index[res.Device]
		if !ok {
			r.why.add("answer names a device not in the request", 1)
			continue
		}
		answeredFor++
		if !res.Accepted() {
			r.errors++
			r.why.add("rejected: "+res.Reason, 1)
			continue
		}
		r.accepted[msgKey{id: resp.ID, device: d}] = res.Seq
		pd := &r.perDevice[d]
		pd.count++
		pd.maxSeq = max(pd.maxSeq, res.Seq)
	}
	if missing := n - answeredFor; missing > 0 {
		r.errors += missing
		r.why.add("no result for a device in the answer", missing)
	}
}

// requestFailure is a short reason for a failed request: the API's code,
// or the transport error.
func requestFailure(err error) string {
	var ae *api.APIError
	if errors.As(err, &ae) {
		return fmt.Sprintf("HTTP %d %s", ae.Status, ae.Code)
	}
	return errorReason(err)
}

// pollAcked asks every device that was sent stored messages for its ack
// cursor until each covers the newest one or wait passes, and returns the
// cursors by device index.
func pollAcked(ctx context.Context, cl *api.Client, s loadSpec, r *loadResult) ([]uint64, reasons) {
	acked := make([]uint64, s.devices)
	why := reasons{}
	var pending []int
	for d, pd := range r.perDevice {
		if pd.maxSeq > 0 {
			pending = append(pending, d)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, s.wait)
	defer cancel()
	var lastErr error
	for len(pending) > 0 && ctx.Err() == nil {
		var mu sync.Mutex
		var next []int
		forEach(pending, s.concurrency, func(d int) {
			st, err := cl.Device(ctx, s.app, s.prefix+strconv.Itoa(d))
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if ctx.Err() == nil {
					lastErr = err
				}
				next = append(next, d)
				return
			}
			acked[d] = st.Acked
			if st.Acked < r.perDevice[d].maxSeq {
				next = append(next, d)
			}
		})
		pending = next
		if len(pending) > 0 {
			_ = sleepCtx(ctx, ackPollPause)
		}
	}
	if len(pending) > 0 && lastErr != nil {
		why.add("ack poll: "+requestFailure(lastErr), len(pending))
	}
	return acked, why
}

// verifyStored checks that every device's inbox accounts for what was
// accepted for it: nobody acks in stored mode and the device ids are
// fresh, so each accepted push is either in the inbox or was trimmed by
// the inbox cap, which the inbox records (its lost seq) and the device's
// next resume reports as a gap. Only what is in neither is lost.
func verifyStored(ctx context.Context, cl *api.Client, s loadSpec, r *loadResult) (lost, trimmed int, why reasons) {
	ctx, cancel := context.WithTimeout(ctx, s.wait)
	defer cancel()
	var targets []int
	for d, pd := range r.perDevice {
		if pd.count > 0 {
			targets = append(targets, d)
		}
	}
	var mu sync.Mutex
	why = reasons{}
	forEach(targets, s.concurrency, func(d int) {
		st, err := cl.Device(ctx, s.app, s.prefix+strconv.Itoa(d))
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			why.add("verify: "+requestFailure(err), 1)
			return
		}
		want := uint64(r.perDevice[d].count)
		trimmed += int(min(st.Lost, want))
		if covered := uint64(st.InboxLen) + st.Lost; covered < want {
			lost += int(want - covered)
		}
	})
	return lost, trimmed, why
}

func (r reasons) count() int {
	n := 0
	for _, v := range r {
		n += v
	}
	return n
}

// forEach runs f for every item with at most n running at once.
func forEach(items []int, n int, f func(int)) {
	ch := make(chan int)
	var wg sync.WaitGroup
	for range min(n, len(items)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for it := range ch {
				f(it)
			}
		}()
	}
	for _, it := range items {
		ch <- it
	}
	close(ch)
	wg.Wait()
}

// receiptSummary is what the devices saw, against what was accepted.
type receiptSummary struct {
	received   int // accepted device-messages received at least once
	lost       int // accepted, never received
	duplicates int // receipts beyond the first of a device-message
	unexpected int // received, but not in any accepted answer (a failed request the server did store)
	latencies  []time.Duration
	lastAt     int64 // unix nanos of the last first receipt of an accepted message
}

func summarizeReceipts(accepted map[msgKey]uint64, receipts []receipt) receiptSummary {
	var s receiptSummary
	seen := make(map[msgKey]int, len(receipts))
	for _, rc := range receipts {
		k := msgKey{id: rc.ID, device: rc.Device}
		seen[k]++
		if seen[k] > 1 {
			s.duplicates++
			continue
		}
		if _, ok := accepted[k]; !ok {
			s.unexpected++
			continue
		}
		s.received++
		if rc.Sent > 0 {
			s.latencies = append(s.latencies, time.Duration(rc.At-rc.Sent))
		}
		s.lastAt = max(s.lastAt, rc.At)
	}
	for k := range accepted {
		if seen[k] == 0 {
			s.lost++
		}
	}
	return s
}

// latencyStats returns nearest-rank percentiles in milliseconds.
func latencyStats(ds []time.Duration) latencyMS {
	if len(ds) == 0 {
		return latencyMS{}
	}
	sorted := slices.Clone(ds)
	slices.Sort(sorted)
	rank := func(p float64) time.Duration {
		i := int(math.Ceil(p*float64(len(sorted)))) - 1
		return sorted[min(max(i, 0), len(sorted)-1)]
	}
	ms := func(d time.Duration) float64 { return math.Round(float64(d.Microseconds())) / 1000 }
	return latencyMS{P50: ms(rank(0.50)), P99: ms(rank(0.99)), Max: ms(sorted[len(sorted)-1])}
}

func printPushReport(w io.Writer, format format, r *pushReport) error {
	if format == formatJSON {
		return writeJSON(w, r)
	}
	t := newTable(w)
	t.row("scenario", r.Scenario)
	t.row("mode", r.Mode)
	if r.Transport != "" {
		t.row("transport", r.Transport)
	}
	t.row("devices", fmt.Sprintf("%d (batch %d)", r.Devices, r.Batch))
	if r.Workers > 0 {
		t.row("workers", strconv.Itoa(r.Workers))
	}
	t.row("pushes", fmt.Sprintf("%d accepted of %d sent", r.Pushes, r.Requested))
	if r.Mode == "online" {
		t.row("received", strconv.Itoa(r.Received))
		t.row("delivered rate", fmt.Sprintf("%.1f pushes/s", r.PushesPerS))
		t.row("accept rate", fmt.Sprintf("%.1f pushes/s", r.AcceptPerS))
		t.row("latency push→device", fmt.Sprintf("p50 %.3fms  p99 %.3fms  max %.3fms", r.LatencyMS.P50, r.LatencyMS.P99, r.LatencyMS.Max))
	} else {
		t.row("accept rate", fmt.Sprintf("%.1f pushes/s", r.AcceptPerS))
		t.row("latency request", fmt.Sprintf("p50 %.3fms  p99 %.3fms  max %.3fms", r.LatencyMS.P50, r.LatencyMS.P99, r.LatencyMS.Max))
	}
	t.row("lost", strconv.Itoa(r.Lost))
	if r.Trimmed > 0 {
		t.row("trimmed by the inbox cap", strconv.Itoa(r.Trimmed))
	}
	t.row("duplicates", strconv.Itoa(r.Duplicates))
	t.row("errors", fmt.Sprintf("%d (failed requests %d)", r.Errors, r.FailedRequests))
	if r.Mode == "online" {
		t.row("unacked", strconv.Itoa(r.Unacked))
		t.row("device drops", strconv.Itoa(r.Drops))
	}
	t.row("duration", fmt.Sprintf("%.3fs", r.DurationS))
	return t.flush()
}
