package ctl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"

	"github.com/urfave/cli/v2"
)

// A bench worker is pushctl re-executed as `pushctl bench worker`: it holds
// a share of the devices and talks to the parent in JSON lines.
//
// Parent → worker, on stdin: one workerJob, then commands ("start",
// "stop"). End of stdin means stop, so a worker whose parent died stops by
// itself.
//
// Worker → parent, on stdout: events. "ready" once the job is accepted,
// "connected" when its devices are connected, "recv" batches of receipts
// (bench push), "done" with the final counts after "stop", "error" when it
// cannot go on. Diagnostics go to stderr, which the parent shares.

// Worker scenarios.
const (
	scenarioConnect = "connect"
	scenarioPush    = "push"
)

// Worker commands and events.
const (
	cmdStart = "start"
	cmdStop  = "stop"

	evReady     = "ready"
	evConnected = "connected"
	evRecv      = "recv"
	evDone      = "done"
	evError     = "error"
)

// workerFunc runs one worker on the given streams until stopped.
type workerFunc func(ctx context.Context, in io.Reader, out, stderr io.Writer) error

// workerJob is the first line a parent writes to a worker.
type workerJob struct {
	ID       int    `json:"id"`
	Scenario string `json:"scenario"`
	URL      string `json:"url"`
	App      string `json:"app"`
	KeyID    string `json:"key_id"`
	Secret   []byte `json:"secret"`
	// Devices are DevicePrefix + decimal index, for indexes First to
	// First+Count-1.
	DevicePrefix string `json:"device_prefix"`
	First        int    `json:"first"`
	Count        int    `json:"count"`
	// Source is the local IP to bind; "" lets the system choose.
	Source string `json:"source,omitempty"`
	// Rate is connects per second for this worker; 0 means unlimited.
	Rate float64 `json:"rate,omitempty"`
	// HeartbeatCheck asks a connect worker to count connections whose
	// PINGs went unanswered.
	HeartbeatCheck bool `json:"heartbeat_check,omitempty"`
}

type workerCmd struct {
	Cmd string `json:"cmd"`
}

// workerEvent is one line a worker writes. Fields are set per event.
type workerEvent struct {
	Event string `json:"event"`

	// connected
	OK          int   `json:"ok,omitempty"`
	Failed      int   `json:"failed,omitempty"`
	HeartbeatMS int64 `json:"heartbeat_ms,omitempty"`
	// Errors counts connect failures by reason (connected) or drops and
	// disconnects by reason (done).
	Errors map[string]int `json:"errors,omitempty"`

	// done
	Alive           int `json:"alive,omitempty"`
	Drops           int `json:"drops,omitempty"`
	HeartbeatMisses int `json:"heartbeat_misses,omitempty"`
	Reconnects      int `json:"reconnects,omitempty"`
	Gaps            int `json:"gaps,omitempty"`

	// recv
	Recv []receipt `json:"recv,omitempty"`

	// error
	Message string `json:"message,omitempty"`
}

// receipt is one message handed to the app by the SDK in a push worker.
type receipt struct {
	Device int    `json:"d"`
	ID     string `json:"id"`
	Sent   int64  `json:"s"` // unix nanos the parent put in the payload; 0 if unreadable
	At     int64  `json:"r"` // unix nanos of the handover
}

func benchWorkerCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:   "worker",
		Usage:  "internal: a bench worker process, driven over stdin/stdout by bench connect or bench push",
		Hidden: true,
		Action: func(c *cli.Context) error {
			if err := runWorker(c.Context, e.stdin, e.stdout, e.stderr); err != nil {
				return fmt.Errorf("bench worker: %w", err)
			}
			return nil
		},
	}
}

// eventWriter serializes events from the worker's goroutines.
type eventWriter struct {
	mu  sync.Mutex
	enc *json.Encoder
	err error
}

func (w *eventWriter) send(ev workerEvent) error {
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
			var c workerCmd
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

// runWorker is the worker's main: read the job, run its scenario.
func runWorker(ctx context.Context, in io.Reader, out, stderr io.Writer) error {
	dec := json.NewDecoder(in)
	w := &eventWriter{enc: json.NewEncoder(out)}
	var job workerJob
	if err := dec.Decode(&job); err != nil {
		if errors.Is(err, io.EOF) {
			return nil
		}
		return fmt.Errorf("read job: %w", err)
	}
	fail := func(err error) error {
		_ = w.send(workerEvent{Event: evError, Message: err.Error()})
		return err
	}
	if job.Count <= 0 || job.Count > maxConnsPerWorker {
		return fail(fmt.Errorf("job for %d devices: want 1..%d", job.Count, maxConnsPerWorker))
	}
	var local net.Addr
	if job.Source != "" {
		ip := net.ParseIP(job.Source)
		if ip == nil {
			return fail(fmt.Errorf("source %q is not an IP address", job.Source))
		}
		local = &net.TCPAddr{IP: ip}
	}
	done := make(chan struct{})
	defer close(done)
	cmds := commands(dec, done)
	if err := w.send(workerEvent{Event: evReady}); err != nil {
		return err
	}
	if !awaitCmd(ctx, cmds, cmdStart) {
		return nil
	}
	var err error
	switch job.Scenario {
	case scenarioConnect:
		err = runConnectWorker(ctx, &job, local, w, cmds)
	case scenarioPush:
		err = runPushWorker(ctx, &job, local, w, cmds)
	default:
		err = fmt.Errorf("unknown scenario %q", job.Scenario)
	}
	if err != nil {
		fmt.Fprintf(stderr, "pushctl bench worker %d: %v\n", job.ID, err)
		return fail(err)
	}
	return nil
}

// awaitCmd waits for cmd and reports whether it came; false means stop
// (end of input, a "stop", or ctx done).
func awaitCmd(ctx context.Context, cmds <-chan string, cmd string) bool {
	for {
		select {
		case <-ctx.Done():
			return false
		case c, ok := <-cmds:
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
func waitStop(ctx context.Context, cmds <-chan string) {
	for {
		select {
		case <-ctx.Done():
			return
		case c, ok := <-cmds:
			if !ok || c == cmdStop {
				return
			}
		}
	}
}
