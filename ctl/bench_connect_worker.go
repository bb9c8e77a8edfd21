package ctl

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pushd/pushd/appliance/client"
	"github.com/pushd/pushd/appliance/wire"
)

const (
	// connectConcurrency bounds handshakes in flight per worker: enough
	// to hide round trips, few enough not to overflow the server's accept
	// backlog when no --rate is given.
	connectConcurrency = 64
	// connectTimeout bounds one dial, upgrade and WELCOME.
	connectTimeout = 10 * time.Second
	// pingSlots spreads one worker's PINGs over its heartbeat interval:
	// each tick of the shared ticker pings one slot of the connections.
	pingSlots = 10
)

// connWorker holds raw protocol connections for bench connect: one reader
// goroutine per connection and one shared ticker for every PING, so the
// worker stays small next to the server it measures.
type connWorker struct {
	job   *workerJob
	local net.Addr
	mint  func(string) (string, error)

	hb       atomic.Int64 // heartbeat interval from the first WELCOME, ns
	hbKnown  chan struct{}
	hbOnce   sync.Once
	stopping atomic.Bool
	readers  sync.WaitGroup

	mu      sync.Mutex
	conns   []*benchConn
	failed  int
	fails   reasons
	drops   int
	dropped reasons
}

type benchConn struct {
	c        *client.Conn
	welcomed int64        // unix nanos
	lastPong atomic.Int64 // unix nanos
	dead     atomic.Bool
}

// runConnectWorker connects the job's devices, reports "connected", holds
// them until told to stop, then reports "done" and closes them.
func runConnectWorker(ctx context.Context, job *workerJob, local net.Addr, w *eventWriter, cmds <-chan string) error {
	cw := &connWorker{job: job, local: local, mint: mintFunc(job.App, job.KeyID, job.Secret),
		hbKnown: make(chan struct{}), fails: reasons{}, dropped: reasons{}}
	pingStop := make(chan struct{})
	pingDone := make(chan struct{})
	go func() {
		defer close(pingDone)
		cw.pinger(pingStop)
	}()
	defer func() {
		close(pingStop)
		<-pingDone
	}()

	cw.connectAll(ctx)
	cw.mu.Lock()
	ev := workerEvent{Event: evConnected, OK: len(cw.conns), Failed: cw.failed, Errors: maps.Clone(cw.fails),
		HeartbeatMS: time.Duration(cw.hb.Load()).Milliseconds()}
	cw.mu.Unlock()
	if err := w.send(ev); err != nil {
		cw.closeAll()
		return err
	}
	waitStop(ctx, cmds)
	done := cw.final()
	cw.closeAll()
	return w.send(done)
}

func (cw *connWorker) connectAll(ctx context.Context) {
	idx := make(chan int)
	go func() {
		defer close(idx)
		start := time.Now()
		for i := 0; i < cw.job.Count; i++ {
			if cw.job.Rate > 0 {
				due := start.Add(time.Duration(float64(i) / cw.job.Rate * float64(time.Second)))
				if sleepCtx(ctx, time.Until(due)) != nil {
					return
				}
			}
			select {
			case idx <- i:
			case <-ctx.Done():
				return
			}
		}
	}()
	var wg sync.WaitGroup
	for range min(connectConcurrency, cw.job.Count) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range idx {
				cw.connect(ctx, cw.job.First+i)
			}
		}()
	}
	wg.Wait()
	if n := cw.job.Count - cw.connectedCount() - cw.failedCount(); n > 0 {
		// Interrupted before every device was tried.
		cw.fail("not attempted (stopped)", n)
	}
}

func (cw *connWorker) connect(ctx context.Context, index int) {
	device := cw.job.DevicePrefix + strconv.Itoa(index)
	tok, err := cw.mint(device)
	if err != nil {
		cw.fail("mint token: "+err.Error(), 1)
		return
	}
	c, err := client.DialConn(ctx, cw.job.URL, client.DialOptions{LocalAddr: cw.local, Timeout: connectTimeout})
	if err != nil {
		cw.fail(errorReason(err), 1)
		return
	}
	if err := c.Send(&wire.Hello{Token: tok, App: cw.job.App, Device: device, Platform: "bench", Version: "pushctl"}); err != nil {
		_ = c.Close()
		cw.fail(errorReason(err), 1)
		return
	}
	f, err := c.Read(connectTimeout)
	if err != nil {
		_ = c.Close()
		cw.fail("awaiting WELCOME: "+errorReason(err), 1)
		return
	}
	welcome, ok := f.(*wire.Welcome)
	if !ok {
		_ = c.Close()
		if e, isErr := f.(*wire.Error); isErr {
			cw.fail("refused: "+e.Code.String(), 1)
		} else {
			cw.fail("answer to HELLO: "+f.Type().String(), 1)
		}
		return
	}
	now := time.Now()
	hb := time.Duration(welcome.Heartbeat) * time.Millisecond
	if hb <= 0 {
		hb = 30 * time.Second
	}
	cw.hbOnce.Do(func() {
		cw.hb.Store(int64(hb))
		close(cw.hbKnown)
	})
	bc := &benchConn{c: c, welcomed: now.UnixNano()}
	bc.lastPong.Store(now.UnixNano())
	cw.mu.Lock()
	cw.conns = append(cw.conns, bc)
	cw.mu.Unlock()
	cw.readers.Add(1)
	go cw.read(bc, hb)
}

// read consumes a connection's frames: PONGs are noted, a kick, drain or
// error ends it, as does a read failure or silence past the server's own
// idle limit.
func (cw *connWorker) read(bc *benchConn, hb time.Duration) {
	defer cw.readers.Done()
	for {
		f, err := bc.c.Read(3 * hb)
		if err != nil {
			cw.drop(bc, errorReason(err))
			return
		}
		if reason := cw.onFrame(bc, f); reason != "" {
			cw.drop(bc, reason)
			return
		}
	}
}

// onFrame returns why the connection ends, or "".
func (cw *connWorker) onFrame(bc *benchConn, f wire.Frame) string {
	switch f := f.(type) {
	case *wire.Pong:
		bc.lastPong.Store(time.Now().UnixNano())
	case *wire.Batch:
		var reason string
		_ = f.Each(4<<20, func(inner wire.Frame) error {
			if r := cw.onFrame(bc, inner); r != "" && reason == "" {
				reason = r
			}
			return nil
		})
		return reason
	case *wire.Control:
		switch f.Kind {
		case wire.ControlDegraded, wire.ControlRestored:
		default:
			return "control " + f.Kind.String()
		}
	case *wire.Error:
		return "error " + f.Code.String()
	}
	return ""
}

// drop records the end of a connection the bench did not ask for.
func (cw *connWorker) drop(bc *benchConn, reason string) {
	if !bc.dead.CompareAndSwap(false, true) {
		return
	}
	_ = bc.c.Close()
	if cw.stopping.Load() {
		return
	}
	cw.mu.Lock()
	cw.drops++
	cw.dropped.add(reason, 1)
	cw.mu.Unlock()
}

func (cw *connWorker) fail(reason string, n int) {
	cw.mu.Lock()
	cw.failed += n
	cw.fails.add(reason, n)
	cw.mu.Unlock()
}

func (cw *connWorker) connectedCount() int {
	cw.mu.Lock()
	defer cw.mu.Unlock()
	return len(cw.conns)
}

func (cw *connWorker) failedCount() int {
	cw.mu.Lock()
	defer cw.mu.Unlock()
	return cw.failed
}

// pinger sends PINGs for every connection from one ticker: tick k pings
// the connections whose index is k modulo pingSlots, so each connection
// pings once per interval and the writes are spread over it.
func (cw *connWorker) pinger(stop <-chan struct{}) {
	select {
	case <-stop:
		return
	case <-cw.hbKnown:
	}
	hb := time.Duration(cw.hb.Load())
	t := time.NewTicker(max(hb/pingSlots, time.Millisecond))
	defer t.Stop()
	ping := wire.Ping{}
	for k := 0; ; k++ {
		select {
		case <-stop:
			return
		case now := <-t.C:
			cw.mu.Lock()
			conns := cw.conns
			cw.mu.Unlock()
			ping.Time = uint64(now.UnixMilli())
			for i := k % pingSlots; i < len(conns); i += pingSlots {
				if bc := conns[i]; !bc.dead.Load() {
					_ = bc.c.Send(&ping)
				}
			}
		}
	}
}

// final counts what survived the hold, before the worker closes anything.
func (cw *connWorker) final() workerEvent {
	now := time.Now().UnixNano()
	hb := cw.hb.Load()
	cw.mu.Lock()
	defer cw.mu.Unlock()
	ev := workerEvent{Event: evDone, Drops: cw.drops, Errors: maps.Clone(cw.dropped)}
	for _, bc := range cw.conns {
		if bc.dead.Load() {
			continue
		}
		ev.Alive++
		// A PING goes out at least once per interval and its PONG comes
		// back in milliseconds; two intervals without one is a miss.
		if cw.job.HeartbeatCheck && now-bc.lastPong.Load() > 2*hb {
			ev.HeartbeatMisses++
		}
	}
	return ev
}

// closeAll closes every connection and waits for the readers.
func (cw *connWorker) closeAll() {
	cw.stopping.Store(true)
	cw.mu.Lock()
	conns := cw.conns
	cw.mu.Unlock()
	for _, bc := range conns {
		if bc.dead.CompareAndSwap(false, true) {
			_ = bc.c.Close()
		}
	}
	cw.readers.Wait()
}

// errorReason shortens a network error to what is common to many
// connections (no port numbers), so failures group by cause.
func errorReason(err error) string {
	var ne net.Error
	var op *net.OpError
	var sys *os.SyscallError
	var up *client.UpgradeError
	var ce *client.CloseError
	switch {
	case errors.As(err, &up):
		return fmt.Sprintf("upgrade refused: HTTP %d", up.Status)
	case errors.As(err, &ce):
		return fmt.Sprintf("closed by server: %d %s", ce.Code, ce.Reason)
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.As(err, &sys):
		return sys.Error()
	case errors.As(err, &op) && op.Err != nil:
		return op.Op + ": " + op.Err.Error()
	}
	return err.Error()
}
