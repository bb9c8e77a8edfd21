package load

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
)

// Work is a worker's main (`pushctl bench worker` runs it on its stdin,
// stdout and stderr): it reads a Job, answers "ready", waits for "start",
// runs its share of the job's scenario until told to stop or until its
// input ends, and returns. A failure is sent to the parent as an "error"
// event, written to stderr and returned. Input that ends before a job is
// not a failure.
func Work(ctx context.Context, in io.Reader, out, stderr io.Writer) error {
	dec := json.NewDecoder(in)
	events := &eventWriter{enc: json.NewEncoder(out)}
	var job Job
	if err := dec.Decode(&job); err != nil {
		if errors.Is(err, io.EOF) {
			return nil
		}
		return fmt.Errorf("read job: %w", err)
	}
	fail := func(err error) error {
		fmt.Fprintf(stderr, "bench worker %d: %v\n", job.Worker, err)
		_ = events.send(outEvent{Event: evError, Message: err.Error()})
		return err
	}
	s, local, err := job.open()
	if err != nil {
		return fail(err)
	}
	done := make(chan struct{})
	defer close(done)
	w := &worker{job: job, local: local, events: events, cmds: commands(dec, done)}
	if err := events.send(outEvent{Event: evReady}); err != nil {
		return err
	}
	if !w.await(ctx, cmdStart) {
		return nil
	}
	if err := s.work(ctx, w); err != nil {
		return fail(err)
	}
	return nil
}

// open checks the job and decodes its scenario and source address.
func (job *Job) open() (scenario, net.Addr, error) {
	if job.Share.Count <= 0 || job.Share.Count > MaxPerWorker {
		return nil, nil, fmt.Errorf("job for %d units: want 1..%d", job.Share.Count, MaxPerWorker)
	}
	var local net.Addr
	if job.Share.Source != "" {
		ip := net.ParseIP(job.Share.Source)
		if ip == nil {
			return nil, nil, fmt.Errorf("source %q is not an IP address", job.Share.Source)
		}
		local = &net.TCPAddr{IP: ip}
	}
	newScenario, ok := scenarios[job.Scenario]
	if !ok {
		return nil, nil, fmt.Errorf("unknown scenario %q", job.Scenario)
	}
	s := newScenario()
	if err := json.Unmarshal(job.Params, s); err != nil {
		return nil, nil, fmt.Errorf("%s params: %w", job.Scenario, err)
	}
	return s, local, nil
}

// worker is a scenario's handle in a worker process: its job and its line
// to the parent.
type worker struct {
	job    Job
	local  net.Addr // the job's source; nil for the system's choice
	events *eventWriter
	cmds   <-chan string
}

// send writes one event with data; safe from any goroutine.
func (w *worker) send(event string, data any) error {
	return w.events.send(outEvent{Event: event, Data: data})
}

// await waits for cmd and reports whether it came; false means stop (end
// of input, a "stop", or ctx done).
func (w *worker) await(ctx context.Context, cmd string) bool {
	for {
		select {
		case <-ctx.Done():
			return false
		case c, ok := <-w.cmds:
			switch {
			case !ok || c == cmdStop:
				return false
			case c == cmd:
				return true
			}
		}
	}
}

// waitStop waits for "stop", end of input, or ctx.
func (w *worker) waitStop(ctx context.Context) {
	w.await(ctx, cmdStop)
}

// eventWriter serializes events from the worker's goroutines.
type eventWriter struct {
	mu  sync.Mutex
	enc *json.Encoder
	err error
}

func (w *eventWriter) send(ev outEvent) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err == nil {
		w.err = w.enc.Encode(ev)
	}
	return w.err
}

// commands reads the parent's commands after the job. The channel closes
// at end of input, which means stop.
func commands(dec *json.Decoder, done <-chan struct{}) <-chan string {
	ch := make(chan string, 4)
	go func() {
		defer close(ch)
		for {
			var c Command
			if err := dec.Decode(&c); err != nil {
				return
			}
			select {
			case ch <- c.Cmd:
			case <-done:
				return
			}
		}
	}()
	return ch
}

// jsonData decodes an event's data into v.
func jsonData(ev Event, v any) error {
	if len(ev.Data) == 0 {
		return fmt.Errorf("%q event without data", ev.Event)
	}
	if err := json.Unmarshal(ev.Data, v); err != nil {
		return fmt.Errorf("%q event: %w", ev.Event, err)
	}
	return nil
}
