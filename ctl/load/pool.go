package load

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"time"
)

// WorkFunc is a worker's main: it reads a Job and Commands from in and
// writes Events to out until told to stop (see the protocol in
// protocol.go). Work is the real one; tests write scripted ones.
type WorkFunc func(ctx context.Context, in io.Reader, out, stderr io.Writer) error

// A Spawner starts one worker. It is called from one goroutine at a time.
type Spawner func(ctx context.Context) (*Proc, error)

// Proc is a started worker, as a run drives it.
type Proc struct {
	// Stdin takes the Job and the Commands; closing it asks the worker
	// to stop.
	Stdin io.WriteCloser
	// Stdout gives the Events. The run reads it to its end and closes it
	// if it is an io.Closer.
	Stdout io.Reader
	// Wait waits for the worker's end; the run calls it once.
	Wait func() error
	// Kill ends the worker now.
	Kill func()
}

// Exec returns a Spawner that runs the executable at path with args as a
// worker process (pushctl passes itself and "bench", "worker"). Its stderr
// goes to stderr (nil: discarded). On Linux a worker gets a process group
// of its own, so a Ctrl-C in the terminal reaches the parent only, which
// then stops its workers in order.
func Exec(path string, args []string, stderr io.Writer) Spawner {
	return func(context.Context) (*Proc, error) {
		cmd := exec.Command(path, args...)
		cmd.Stderr = stderr
		cmd.SysProcAttr = workerProcAttr()
		in, err := cmd.StdinPipe()
		if err != nil {
			return nil, err
		}
		// An os.Pipe rather than StdoutPipe: Wait then leaves the read end
		// alone, so events written just before exit are never cut off.
		out, outW, err := os.Pipe()
		if err != nil {
			return nil, err
		}
		cmd.Stdout = outW
		err = cmd.Start()
		_ = outW.Close()
		if err != nil {
			_ = out.Close()
			return nil, err
		}
		return &Proc{Stdin: in, Stdout: out, Wait: cmd.Wait, Kill: func() { _ = cmd.Process.Kill() }}, nil
	}
}

// InProcess returns a Spawner that runs work as a goroutine of this
// process, connected by pipes, its stderr to stderr (nil: discarded).
// Killing it cancels its context.
func InProcess(work WorkFunc, stderr io.Writer) Spawner {
	if stderr == nil {
		stderr = io.Discard
	}
	return func(ctx context.Context) (*Proc, error) {
		inR, inW := io.Pipe()
		outR, outW := io.Pipe()
		wctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() {
			err := work(wctx, inR, outW, stderr)
			_ = inR.Close()
			_ = outW.Close()
			done <- err
		}()
		return &Proc{Stdin: inW, Stdout: outR,
			Wait: func() error { err := <-done; cancel(); return err },
			Kill: cancel}, nil
	}
}

// pool is the parent's side of a run's workers. Data events go straight
// to onData from the per-worker reader goroutines; every other event is
// queued for await.
type pool struct {
	procs   []*Proc
	encs    []*json.Encoder
	events  chan poolEvent
	onData  func(worker int, data json.RawMessage)
	readers sync.WaitGroup
	closed  sync.Once

	// Touched by await only, which one goroutine calls.
	backlog []poolEvent // events not yet awaited
	ended   []error     // per worker: why its output ended, once it has
}

type poolEvent struct {
	worker int
	ev     Event
	ended  error // set (possibly io.EOF) when the worker's output ended
}

// startPool starts one worker per job and sends each its job. onData may
// be nil when the scenario streams nothing.
func startPool(ctx context.Context, spawn Spawner, jobs []Job, onData func(int, json.RawMessage)) (*pool, error) {
	p := &pool{events: make(chan poolEvent, 16*len(jobs)), onData: onData, ended: make([]error, len(jobs))}
	for i := range jobs {
		w, err := spawn(ctx)
		if err != nil {
			p.close()
			return nil, fmt.Errorf("start bench worker %d: %w", i, err)
		}
		enc := json.NewEncoder(w.Stdin)
		p.procs = append(p.procs, w)
		p.encs = append(p.encs, enc)
		p.readers.Add(1)
		go p.read(i, w.Stdout)
		if err := enc.Encode(jobs[i]); err != nil {
			p.close()
			return nil, fmt.Errorf("send job to bench worker %d: %w", i, err)
		}
	}
	return p, nil
}

func (p *pool) size() int { return len(p.procs) }

func (p *pool) read(i int, out io.Reader) {
	defer p.readers.Done()
	if c, ok := out.(io.Closer); ok {
		defer c.Close()
	}
	dec := json.NewDecoder(out)
	for {
		var ev Event
		if err := dec.Decode(&ev); err != nil {
			// Drain so a worker blocked on a full pipe can exit.
			_, _ = io.Copy(io.Discard, out)
			p.events <- poolEvent{worker: i, ended: err}
			return
		}
		if ev.Event == evData {
			if p.onData != nil {
				p.onData(i, ev.Data)
			}
			continue
		}
		p.events <- poolEvent{worker: i, ev: ev}
	}
}

// send writes cmd to every worker.
func (p *pool) send(cmd string) error {
	var errs []error
	for i, enc := range p.encs {
		if err := enc.Encode(Command{Cmd: cmd}); err != nil {
			errs = append(errs, fmt.Errorf("bench worker %d: %w", i, err))
		}
	}
	return errors.Join(errs...)
}

// await waits until every worker has sent event and returns those events
// in worker order. A worker that reports an error, or ends without having
// sent event, fails it. Events that arrive early for a later await are
// kept for it. timeout 0 waits as long as ctx.
func (p *pool) await(ctx context.Context, event string, timeout time.Duration) ([]Event, error) {
	got := make([]Event, len(p.procs))
	seen := make([]bool, len(p.procs))
	left := len(p.procs)
	var deadline <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		deadline = t.C
	}
	// take handles one event and reports a failure.
	var kept []poolEvent
	take := func(pe poolEvent) error {
		switch {
		case pe.ended != nil:
			p.ended[pe.worker] = pe.ended
		case pe.ev.Event == evError:
			return fmt.Errorf("bench worker %d: %s", pe.worker, pe.ev.Message)
		case pe.ev.Event == event && !seen[pe.worker]:
			got[pe.worker], seen[pe.worker] = pe.ev, true
			left--
		default:
			kept = append(kept, pe)
		}
		if err := p.ended[pe.worker]; err != nil && !seen[pe.worker] {
			return fmt.Errorf("bench worker %d ended before %q (its stderr says why): %v", pe.worker, event, err)
		}
		return nil
	}
	backlog := p.backlog
	p.backlog = nil
	defer func() { p.backlog = append(p.backlog, kept...) }()
	for _, pe := range backlog {
		if err := take(pe); err != nil {
			return nil, err
		}
	}
	for i, err := range p.ended {
		if err != nil && !seen[i] {
			return nil, fmt.Errorf("bench worker %d ended before %q (its stderr says why): %v", i, event, err)
		}
	}
	for left > 0 {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-deadline:
			return nil, fmt.Errorf("%d bench workers sent no %q within %s", left, event, timeout)
		case pe := <-p.events:
			if err := take(pe); err != nil {
				return nil, err
			}
		}
	}
	return got, nil
}

// close ends every worker: end of input asks it to stop; one that has not
// exited within workerStopTimeout is killed. It waits for the readers, so
// no onData call happens after close returns. Calls after the first do
// nothing.
func (p *pool) close() {
	p.closed.Do(p.shutdown)
}

func (p *pool) shutdown() {
	for _, w := range p.procs {
		_ = w.Stdin.Close()
	}
	var wg sync.WaitGroup
	for _, w := range p.procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			done := make(chan struct{})
			go func() { _ = w.Wait(); close(done) }()
			t := time.NewTimer(workerStopTimeout)
			defer t.Stop()
			select {
			case <-done:
			case <-t.C:
				w.Kill()
				<-done
			}
		}()
	}
	wg.Wait()
	// Readers may be blocked handing over their last event.
	go func() {
		for range p.events {
		}
	}()
	p.readers.Wait()
	close(p.events)
}

// merger is a scenario's tally of one event, which adds up over workers.
type merger[T any] interface {
	*T
	merge(*T)
}

// phase sends cmd to every worker, awaits event from each and adds up
// their data into one T. timeout 0 waits as long as ctx. On a failure it
// returns what it has with the error.
func phase[T any, P merger[T]](ctx context.Context, p *pool, cmd, event string, timeout time.Duration) (T, error) {
	var sum T
	sendErr := p.send(cmd)
	evs, err := p.await(ctx, event, timeout)
	if err != nil {
		return sum, errors.Join(sendErr, err)
	}
	for i, ev := range evs {
		var t T
		if len(ev.Data) > 0 {
			if err := json.Unmarshal(ev.Data, &t); err != nil {
				return sum, fmt.Errorf("bench worker %d: %q: %w", i, event, err)
			}
		}
		P(&sum).merge(&t)
	}
	return sum, sendErr
}
