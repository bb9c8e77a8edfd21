package load

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// A scenario is one kind of load, in a file of its own (connect.go,
// push.go). Its type's exported fields are its parameters: the parent
// sends them, as JSON, to every worker in the Job, and the worker decodes
// them into a fresh value from scenarios. Its Run method drives the
// parent's side: plan.start to bring the workers up, phase to send a
// command and add up every worker's answer, and whatever it does itself
// (the push scenario's requests). A new scenario is a new file with its
// type, its work and its Run, and one line in scenarios; the pool, the
// protocol and the worker runtime stay as they are.
type scenario interface {
	// name is the scenario's name in a Job.
	name() string
	// work runs one worker's share in a worker process, from "start"
	// until it has answered "stop" (or its input ended).
	work(ctx context.Context, w *worker) error
}

// scenarios makes, for a worker, an empty value of each scenario to
// decode its job's params into.
var scenarios = map[string]func() scenario{
	connectName: func() scenario { return new(Connect) },
	pushName:    func() scenario { return new(Push) },
	bridgeName:  func() scenario { return new(Bridge) },
	floorName:   func() scenario { return new(Floor) },
	fanoutName:  func() scenario { return new(Fanout) },
}

// start starts one worker per share of n units (named unit in errors),
// each with s as its params, and waits until every one is ready. target
// is the address the units connect to, "" for none. onData, when set,
// receives every "data" event's payload; it is called from the pool's
// reader goroutines, never after the pool is closed. The caller closes
// the pool.
func (p Plan) start(ctx context.Context, s scenario, n int, unit, target string, onData func(int, json.RawMessage)) (*pool, error) {
	shares, err := p.split(n, unit, target)
	if err != nil {
		return nil, err
	}
	params, err := json.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("encode %s params: %w", s.name(), err)
	}
	jobs := make([]Job, len(shares))
	for i, sh := range shares {
		jobs[i] = Job{Scenario: s.name(), Worker: i, Share: sh, Params: params}
	}
	spawn := p.Spawn
	if spawn == nil {
		spawn = InProcess(Work, nil)
	}
	pl, err := startPool(ctx, spawn, jobs, onData)
	if err != nil {
		return nil, err
	}
	if _, err := pl.await(ctx, evReady, workerStartTimeout); err != nil {
		pl.close()
		return nil, err
	}
	return pl, nil
}

// sleepCtx waits d or until ctx is done.
func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
