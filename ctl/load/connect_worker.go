package load

import (
	"context"
	"crypto/tls"
	"maps"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pushd/pushd/appliance/client"
	"github.com/pushd/pushd/appliance/wire"
)

const (
	// connectConcurrency bounds handshakes in flight per worker: enough
	// to hide round trips, few enough not to overflow the server's accept
	// backlog when no Rate is given.
	connectConcurrency = 64
	// connectTimeout bounds one dial, upgrade and WELCOME.
	connectTimeout = 10 * time.Second
	// pingSlots spreads one worker's PINGs over its heartbeat interval:
	// each tick of the shared ticker pings one slot of the connections.
	pingSlots = 10
)

// connWorker holds raw protocol connections for Connect: one reader
// goroutine per connection and one shared ticker for every PING, so the
// worker stays small next to the server it measures.
type connWorker struct {
	target Target
	tls    *tls.Config // what the devices trust; nil: the system's roots
	share  Share
	rate   float64 // this worker's connects per second; 0: unlimited
	check  bool    // count heartbeat misses
	local  net.Addr

	hb       atomic.Int64 // heartbeat interval from the first WELCOME, ns
	hbKnown  chan struct{}
	hbOnce   sync.Once
	stopping atomic.Bool
	readers  sync.WaitGroup

	mu      sync.Mutex
	conns   []*benchConn
	failed  int
	fails   Reasons
	drops   int
	dropped Reasons
}

type benchConn struct {
	c        *client.Conn
	welcomed int64        // unix nanos
	lastPong atomic.Int64 // unix nanos
	dead     atomic.Bool
}

// work connects the worker's devices, answers "connected", holds them
// until told to stop, then answers "done" and closes them.
func (c *Connect) work(ctx context.Context, w *worker) error {
	tc, err := c.Target.tlsConfig()
	if err != nil {
		return err
	}
	cw := &connWorker{target: c.Target, tls: tc, share: w.job.Share, rate: w.job.Share.part(c.Rate),
		check: c.HeartbeatCheck, local: w.local, hbKnown: make(chan struct{})}
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
	ev := connected{OK: len(cw.conns), Failed: cw.failed, Errors: maps.Clone(cw.fails),
		HeartbeatMS: time.Duration(cw.hb.Load()).Milliseconds()}
	cw.mu.Unlock()
	if err := w.send(evConnected, ev); err != nil {
		cw.closeAll()
		return err
	}
	w.waitStop(ctx)
	done := cw.final()
	cw.closeAll()
	return w.send(evDone, done)
}

func (cw *connWorker) connectAll(ctx context.Context) {
	idx := make(chan int)
	go func() {
		defer close(idx)
		start := time.Now()
		for i := 0; i < cw.share.Count; i++ {
			if cw.rate > 0 {
				due := start.Add(time.Duration(float64(i) / cw.rate * float64(time.Second)))
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
	for range min(connectConcurrency, cw.share.Count) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range idx {
				cw.connect(ctx, cw.share.First+i)
			}
		}()
	}
	wg.Wait()
	if n := cw.share.Count - cw.connectedCount() - cw.failedCount(); n > 0 {
		// Interrupted before every device was tried.
		cw.fail("not attempted (stopped)", n)
	}
}

func (cw *connWorker) connect(ctx context.Context, index int) {
	device := cw.target.device(index)
	tok, err := cw.target.mint(device)
	if err != nil {
		cw.fail("mint token: "+err.Error(), 1)
		return
	}
	c, err := client.DialConn(ctx, cw.target.URL, client.DialOptions{TLS: cw.tls, LocalAddr: cw.local, Timeout: connectTimeout})
	if err != nil {
		cw.fail(errorReason(err), 1)
		return
	}
	if err := c.Send(&wire.Hello{Token: tok, App: cw.target.App, Device: device, Platform: "bench", Version: "pushctl"}); err != nil {
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
	if b, isBatch := f.(*wire.Batch); isBatch {
		// The WELCOME can share a write with what follows it (a PONG, a
		// replayed PUSH) when the node is slow to flush: it comes first.
		f = b
		_ = b.Each(1<<22, func(inner wire.Frame) error {
			f = inner
			return errStopEach
		})
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
	cw.dropped.Add(reason, 1)
	cw.mu.Unlock()
}

func (cw *connWorker) fail(reason string, n int) {
	cw.mu.Lock()
	cw.failed += n
	cw.fails.Add(reason, n)
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
func (cw *connWorker) final() held {
	now := time.Now().UnixNano()
	hb := cw.hb.Load()
	cw.mu.Lock()
	defer cw.mu.Unlock()
	ev := held{Drops: cw.drops, Errors: maps.Clone(cw.dropped)}
	for _, bc := range cw.conns {
		if bc.dead.Load() {
			continue
		}
		ev.Alive++
		// A PING goes out at least once per interval and its PONG comes
		// back in milliseconds; two intervals without one is a miss.
		if cw.check && now-bc.lastPong.Load() > 2*hb {
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
