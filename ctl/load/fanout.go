package load

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pushd/pushd/appliance/api"
)

const fanoutName = "fanout"

// Fanout holds Subscribers sessions in the workers, all members of one
// group or, without a group, the whole app, and measures one-to-many
// delivery: pushes one message at a time (Rate 0: each after the last
// one's deliveries are all in) or at Rate for Duration, and reports, per
// push, the time from the push call to its first and to its last
// subscriber, deliveries per second, lost and duplicate deliveries, and
// the server's CPU per delivery. Unless FloorRounds is negative, it first
// measures the machine's floor (Floor) with as many pairs over the same
// workers, and reports the ratio of the last-subscriber p50 to it.
type Fanout struct {
	// Target is the server and the subscribers' identity.
	Target Target `json:"target"`
	// Subscribers is the sessions, at least 1.
	Subscribers int `json:"subscribers"`
	// Group names the group the subscribers are made members of (through
	// the push API) and the pushes go to; "" broadcasts to the app.
	Group string `json:"group,omitempty"`
	// Pushes is how many pushes to time one at a time (Rate 0); 0 means
	// 10.
	Pushes int `json:"pushes,omitempty"`
	// Rate is pushes per second; 0 pushes one at a time.
	Rate float64 `json:"rate,omitempty"`
	// Duration is how long to push at Rate; 0 means 10 s.
	Duration time.Duration `json:"duration,omitempty"`
	// PayloadSize is each message's bytes, 8 to 4096; 0 means 64.
	PayloadSize int `json:"payload_size,omitempty"`
	// Wait bounds the wait for one push's deliveries (one at a time), or
	// for all of them after the last push (at Rate); 0 means 10 s.
	Wait time.Duration `json:"wait,omitempty"`
	// FloorRounds is the floor's rounds; 0 means 5, negative measures no
	// floor.
	FloorRounds int `json:"floor_rounds,omitempty"`
	// API is the push API. Required.
	API FanoutAPI `json:"-"`
	// CPU measures the server's CPU before and after the pushes; nil
	// leaves cpu_us_per_delivery null.
	CPU CPUProbe `json:"-"`
}

// FanoutAPI is the push API as Fanout uses it; *api.Client is one.
type FanoutAPI interface {
	Push(ctx context.Context, req *api.PushRequest) (*api.PushResponse, error)
	ChangeGroupMembers(ctx context.Context, group string, req *api.GroupMembersRequest) (*api.GroupMembersResponse, error)
}

// FanoutReport is what a Fanout run measured. pushctl bench fanout --json
// prints it as is: these fields and no others.
type FanoutReport struct {
	Scenario    string `json:"scenario"` // "fanout"
	Subscribers int    `json:"subscribers"`
	// Pushes is the pushes the API accepted and that were timed.
	Pushes int `json:"pushes"`
	// Deliveries counts each subscriber's first receipt of each push.
	Deliveries     int     `json:"deliveries"`
	DeliveriesPerS float64 `json:"deliveries_per_s"`
	// FirstMemberMS and LastMemberMS are, over the pushes, the time from
	// the push call to its first and to its last subscriber.
	FirstMemberMS Latency `json:"first_member_ms"`
	LastMemberMS  Latency `json:"last_member_ms"`
	// FloorMS is the floor of the same run (FloorReport.FloorMS) and
	// FloorRatio LastMemberMS.P50 over it; null without a floor.
	FloorMS    *float64 `json:"floor_ms"`
	FloorRatio *float64 `json:"floor_ratio"`
	// CPUUSPerDelivery is the server's CPU over the pushes per delivery;
	// null when the server could not be measured.
	CPUUSPerDelivery *float64 `json:"cpu_us_per_delivery"`
	// Lost is, over the timed pushes, the deliveries due to connected
	// subscribers that never came; Duplicates the receipts beyond one.
	Lost       int `json:"lost"`
	Duplicates int `json:"duplicates"`
	// Errors = subscribers that failed to connect or dropped + pushes
	// the API refused + members the API refused.
	Errors int `json:"errors"`
}

func (*Fanout) name() string { return fanoutName }

func (f Fanout) withDefaults() (Fanout, error) {
	if f.Pushes == 0 {
		f.Pushes = 10
	}
	if f.Duration == 0 {
		f.Duration = 10 * time.Second
	}
	if f.PayloadSize == 0 {
		f.PayloadSize = 64
	}
	if f.Wait == 0 {
		f.Wait = 10 * time.Second
	}
	switch {
	case f.API == nil:
		return f, planErrorf("no push API")
	case f.Subscribers < 1:
		return f, planErrorf("%d subscribers: need at least 1", f.Subscribers)
	case f.Pushes < 1 || f.Rate < 0 || f.Duration < 0 || f.Wait < 0:
		return f, planErrorf("pushes must be at least 1; rate, duration and wait must not be negative")
	case f.PayloadSize < 8 || f.PayloadSize > 4096:
		return f, planErrorf("payload size %d: 8 to 4096", f.PayloadSize)
	case f.FloorRounds >= 0 && f.Subscribers > maxFloorPairs:
		return f, planErrorf("%d subscribers: the floor's writer holds at most %d pairs; measure no floor for more", f.Subscribers, maxFloorPairs)
	}
	var err error
	f.Target, err = f.Target.forRun(true)
	return f, err
}

// maxPushes is the most pushes a run sends, warm-up included: the size of
// the workers' tallies.
func (f *Fanout) maxPushes() int {
	if f.Rate > 0 {
		return int(f.Rate*f.Duration.Seconds()) + 2
	}
	return f.Pushes + 1
}

// pushTally is what the workers saw of one push, added up.
type pushTally struct {
	Push    int   `json:"push"`
	Count   int   `json:"count"`
	FirstNS int64 `json:"first_ns"`
	LastNS  int64 `json:"last_ns"`
}

func (t *pushTally) merge(o pushTally) {
	if t.Count == 0 || (o.Count > 0 && o.FirstNS < t.FirstNS) {
		t.FirstNS = o.FirstNS
	}
	t.LastNS = max(t.LastNS, o.LastNS)
	t.Count += o.Count
}

// fanoutDone is a fan-out worker's answer to "stop": what held, its
// duplicate receipts, and its tallies of the pushes not all its
// subscribers got (the complete ones it streamed already).
type fanoutDone struct {
	held
	Duplicates int         `json:"duplicates,omitempty"`
	Partial    []pushTally `json:"partial,omitempty"`
}

func (d *fanoutDone) merge(o *fanoutDone) {
	d.held.merge(&o.held)
	d.Duplicates += o.Duplicates
	d.Partial = append(d.Partial, o.Partial...)
}

// fanoutRun is the parent's side of a run: the tallies as they come.
type fanoutRun struct {
	mu      sync.Mutex
	tallies map[int]*pushTally
	want    int           // deliveries per push: the connected subscribers
	done    chan int      // pushes whose deliveries are all in
	badData error         // the first data event that did not decode
	sent    map[int]int64 // push → unix ns of its call
}

func (r *fanoutRun) onData(worker int, data json.RawMessage) {
	var ts []pushTally
	err := json.Unmarshal(data, &ts)
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		if r.badData == nil {
			r.badData = fmt.Errorf("bench worker %d: tallies: %w", worker, err)
		}
		return
	}
	for _, t := range ts {
		r.add(t)
	}
}

// add merges a worker's tally. Lock must be held.
func (r *fanoutRun) add(t pushTally) {
	cur := r.tallies[t.Push]
	if cur == nil {
		cur = &pushTally{Push: t.Push}
		r.tallies[t.Push] = cur
	}
	cur.merge(t)
	if cur.Count == r.want {
		select {
		case r.done <- t.Push:
		default:
		}
	}
}

// Run connects the subscribers, pushes and reports. An error means the run
// could not be carried out; failures it can count are in the report.
func (f Fanout) Run(ctx context.Context, p Plan) (*FanoutReport, error) {
	f, err := f.withDefaults()
	if err != nil {
		return nil, err
	}
	rep := &FanoutReport{Scenario: fanoutName, Subscribers: f.Subscribers}
	if f.FloorRounds >= 0 {
		fl, err := Floor{Pairs: f.Subscribers, Rounds: f.FloorRounds, PayloadSize: f.PayloadSize}.Run(ctx, p)
		if err != nil {
			return nil, fmt.Errorf("floor: %w", err)
		}
		rep.FloorMS = &fl.FloorMS
		p.progress("floor: the last of %d reads %.1f ms after the first write (p50 of %d rounds)", f.Subscribers, fl.FloorMS, fl.Rounds)
	}
	run := &fanoutRun{tallies: map[int]*pushTally{}, done: make(chan int, f.maxPushes()), sent: map[int]int64{}}
	pool, err := p.start(ctx, &f, f.Subscribers, "subscribers", f.Target.URL, run.onData)
	if err != nil {
		return nil, err
	}
	defer pool.close()
	conn, err := phase[connected](ctx, pool, cmdStart, evConnected, pushConnectTimeout+workerStartTimeout)
	if err != nil {
		return nil, err
	}
	rep.Errors += conn.Failed
	run.want = conn.OK
	if conn.OK == 0 {
		return nil, fmt.Errorf("no subscriber connected: %s", conn.Errors)
	}
	p.progress("%d/%d subscribers connected", conn.OK, f.Subscribers)
	if f.Group != "" {
		refused, err := f.addMembers(ctx)
		if err != nil {
			return nil, err
		}
		rep.Errors += refused
	}
	// A warm-up push, not timed: every subscriber is in, and the paths
	// are warm.
	if err := f.push(ctx, run, 0); err != nil {
		return nil, fmt.Errorf("warm-up push: %w", err)
	}
	if !run.wait(ctx, 0, f.Wait) {
		return nil, fmt.Errorf("warm-up push: %d of %d subscribers got it within %s", run.count(0), run.want, f.Wait)
	}
	cpu0 := p.measureCPU(ctx, f.CPU, "before the pushes")
	start := time.Now()
	accepted, refused := f.pushAll(ctx, run, p)
	rep.Errors += refused
	cpu1 := p.measureCPU(ctx, f.CPU, "after the pushes")
	done, err := phase[fanoutDone](ctx, pool, cmdStop, evDone, workerStopTimeout)
	if err != nil {
		return nil, err
	}
	pool.close() // no tally comes after this
	run.mu.Lock()
	defer run.mu.Unlock()
	if run.badData != nil {
		return nil, run.badData
	}
	for _, t := range done.Partial {
		run.add(t)
	}
	rep.Errors += done.Drops
	rep.Duplicates = done.Duplicates
	var first, last Histogram
	var lastAt int64
	for _, k := range accepted {
		t := run.tallies[k]
		if t == nil || t.Count == 0 {
			rep.Lost += run.want
			continue
		}
		rep.Deliveries += t.Count
		rep.Lost += run.want - t.Count
		first.Record(time.Duration(t.FirstNS - run.sent[k]))
		last.Record(time.Duration(t.LastNS - run.sent[k]))
		lastAt = max(lastAt, t.LastNS)
	}
	rep.Pushes = len(accepted)
	rep.FirstMemberMS, rep.LastMemberMS = first.Latency(), last.Latency()
	if window := time.Duration(lastAt - start.UnixNano()); window > 0 {
		rep.DeliveriesPerS = float64(rep.Deliveries) / window.Seconds()
	}
	if rep.FloorMS != nil && *rep.FloorMS > 0 {
		ratio := rep.LastMemberMS.P50 / *rep.FloorMS
		rep.FloorRatio = &ratio
	}
	if cpu0 != nil && cpu1 != nil && rep.Deliveries > 0 {
		per := float64((*cpu1 - *cpu0).Microseconds()) / float64(rep.Deliveries)
		rep.CPUUSPerDelivery = &per
	}
	return rep, nil
}

// addMembers makes every subscriber a member of the group, 1,000 per
// request, and returns the members the API refused.
func (f *Fanout) addMembers(ctx context.Context) (int, error) {
	refused := 0
	for from := 0; from < f.Subscribers; from += MaxBatch {
		devices := make([]string, 0, MaxBatch)
		for i := from; i < min(from+MaxBatch, f.Subscribers); i++ {
			devices = append(devices, f.Target.device(i))
		}
		resp, err := f.API.ChangeGroupMembers(ctx, f.Group, &api.GroupMembersRequest{App: &f.Target.App, Op: api.Ptr(api.OpAdd), Devices: devices})
		if err != nil {
			return 0, fmt.Errorf("add subscribers to group %s: %w", f.Group, err)
		}
		for _, r := range resp.Results {
			if r.Status == api.MemberRejected {
				refused++
			}
		}
	}
	return refused, nil
}

// push sends push k, noting when it was called.
func (f *Fanout) push(ctx context.Context, run *fanoutRun, k int) error {
	payload := strconv.Itoa(k) + "|"
	payload += strings.Repeat("x", max(0, f.PayloadSize-len(payload)))
	req := &api.PushRequest{App: &f.Target.App, Data: &payload}
	if f.Group != "" {
		req.Group = &f.Group
	} else {
		req.Broadcast = true
	}
	at := time.Now().UnixNano()
	run.mu.Lock()
	run.sent[k] = at
	run.mu.Unlock()
	_, err := f.API.Push(ctx, req)
	return err
}

// pushAll sends the timed pushes, 1 to n: one at a time, each after the
// last one's deliveries are in (or Wait passed), or at Rate for Duration
// and then waits up to Wait for their deliveries. It returns the pushes
// the API accepted and the number it refused.
func (f *Fanout) pushAll(ctx context.Context, run *fanoutRun, p Plan) (accepted []int, refused int) {
	var mu sync.Mutex
	note := func(k int, err error) {
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			refused++
			p.warn(fmt.Errorf("push %d: %w", k, err))
			return
		}
		accepted = append(accepted, k)
	}
	if f.Rate == 0 {
		for k := 1; k <= f.Pushes && ctx.Err() == nil; k++ {
			err := f.push(ctx, run, k)
			note(k, err)
			if err == nil {
				run.wait(ctx, k, f.Wait)
			}
		}
		return accepted, refused
	}
	var wg sync.WaitGroup
	start := time.Now()
	n := int(f.Rate * f.Duration.Seconds())
	for k := 1; k <= n; k++ {
		due := start.Add(time.Duration(float64(k-1) / f.Rate * float64(time.Second)))
		if sleepCtx(ctx, time.Until(due)) != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			note(k, f.push(ctx, run, k))
		}()
	}
	wg.Wait()
	deadline := time.Now().Add(f.Wait)
	for _, k := range accepted {
		if !run.wait(ctx, k, time.Until(deadline)) {
			break
		}
	}
	return accepted, refused
}

// wait waits until push k's deliveries are all in, for at most d.
func (r *fanoutRun) wait(ctx context.Context, k int, d time.Duration) bool {
	if r.count(k) == r.want {
		return true
	}
	t := time.NewTimer(max(d, 0))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return r.count(k) == r.want
		case <-r.done:
			if r.count(k) == r.want {
				return true
			}
		}
	}
}

func (r *fanoutRun) count(k int) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if t := r.tallies[k]; t != nil {
		return t.Count
	}
	return 0
}
