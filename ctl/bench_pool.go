package ctl

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

// workerPool is the parent's side of its bench workers: processes (or, in
// tests, goroutines) each with a command stream and an event stream.
// Receipts go straight to onRecv from the per-worker reader goroutines;
// every other event is queued for await.
type workerPool struct {
	procs   []*workerProc
	events  chan poolEvent
	onRecv  func([]receipt)
	readers sync.WaitGroup
	closed  sync.Once

	// Touched by await only, which one goroutine calls.
	backlog []poolEvent // events not yet awaited
	ended   []error     // per worker: why its output ended, once it has
}

type workerProc struct {
	id   int
	in   io.WriteCloser
	enc  *json.Encoder
	wait func() error // waits for the worker to end; call once
	kill func()       // ends it now
}

type poolEvent struct {
	worker int
	ev     workerEvent
	ended  error // set (possibly io.EOF) when the worker's output ended
}

// startPool starts one worker per job and sends each its job. onRecv may
// be nil when no receipts are expected.
func startPool(ctx context.Context, e *env, jobs []workerJob, onRecv func([]receipt)) (*workerPool, error) {
	p := &workerPool{events: make(chan poolEvent, 16*len(jobs)), onRecv: onRecv, ended: make([]error, len(jobs))}
	for i := range jobs {
		jobs[i].ID = i
		w, out, err := p.spawn(ctx, e, i)
		if err != nil {
			p.close()
			return nil, fmt.Errorf("start bench worker %d: %w", i, err)
		}
		p.procs = append(p.procs, w)
		p.readers.Add(1)
		go p.read(i, out)
		if err := w.enc.Encode(jobs[i]); err != nil {
			p.close()
			return nil, fmt.Errorf("send job to bench worker %d: %w", i, err)
		}
	}
	return p, nil
}

// spawn starts worker i: a goroutine running e.worker when set (tests), or
// pushctl itself re-executed as `pushctl bench worker`.
func (p *workerPool) spawn(ctx context.Context, e *env, i int) (*workerProc, io.Reader, error) {
	if e.worker != nil {
		inR, inW := io.Pipe()
		outR, outW := io.Pipe()
		wctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() {
			err := e.worker(wctx, inR, outW, e.stderr)
			_ = inR.Close()
			_ = outW.Close()
			done <- err
		}()
		return &workerProc{id: i, in: inW, enc: json.NewEncoder(inW),
			wait: func() error { err := <-done; cancel(); return err },
			kill: cancel}, outR, nil
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, nil, fmt.Errorf("find pushctl executable: %w", err)
	}
	cmd := exec.Command(exe, "bench", "worker")
	cmd.Stderr = e.stderr
	cmd.SysProcAttr = workerProcAttr()
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, nil, err
	}
	// An os.Pipe rather than StdoutPipe: Wait then leaves the read end
	// alone, so events written just before exit are never cut off.
	out, outW, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	cmd.Stdout = outW
	err = cmd.Start()
	_ = outW.Close()
	if err != nil {
		_ = out.Close()
		return nil, nil, err
	}
	return &workerProc{id: i, in: in, enc: json.NewEncoder(in),
		wait: cmd.Wait,
		kill: func() { _ = cmd.Process.Kill() }}, out, nil
}

func (p *workerPool) read(i int, out io.Reader) {
	defer p.readers.Done()
	if c, ok := out.(io.Closer); ok {
		defer c.Close()
	}
	dec := json.NewDecoder(out)
	for {
		var ev workerEvent
		if err := dec.Decode(&ev); err != nil {
			// Drain so a worker blocked on a full pipe can exit.
			_, _ = io.Copy(io.Discard, out)
			p.events <- poolEvent{worker: i, ended: err}
			return
		}
		if ev.Event == evRecv {
			if p.onRecv != nil {
				p.onRecv(ev.Recv)
			}
			continue
		}
		p.events <- poolEvent{worker: i, ev: ev}
	}
}

// send writes cmd to every worker.
func (p *workerPool) send(cmd string) error {
	var errs []error
	for _, w := range p.procs {
		if err := w.enc.Encode(workerCmd{Cmd: cmd}); err != nil {
			errs = append(errs, fmt.Errorf("bench worker %d: %w", w.id, err))
		}
	}
	return errors.Join(errs...)
}

// await waits until every worker has sent event and returns those events
// in worker order. A worker that reports an error, or ends without having
// sent event, fails it. Events that arrive early for a later await are
// kept for it. timeout 0 waits as long as ctx.
func (p *workerPool) await(ctx context.Context, event string, timeout time.Duration) ([]workerEvent, error) {
	got := make([]workerEvent, len(p.procs))
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
// no onRecv call happens after close returns. Calls after the first do
// nothing.
func (p *workerPool) close() {
	p.closed.Do(p.shutdown)
}

func (p *workerPool) shutdown() {
	for _, w := range p.procs {
		_ = w.in.Close()
	}
	var wg sync.WaitGroup
	for _, w := range p.procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			done := make(chan struct{})
			go func() { _ = w.wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(workerStopTimeout):
				w.kill()
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
