package load

import (
	"bytes"
	"context"
	"errors"
	"maps"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pushd/pushd/appliance/client"
)

const (
	// recvFlushInterval is how often a push worker sends its receipts.
	recvFlushInterval = 50 * time.Millisecond
	// recvBatch bounds the receipts in one event line.
	recvBatch = 2000
)

// pushWorker holds devices with the SDK's Client, so acks, the resume
// cursor and dedupe by message id are the product's own, and reports every
// message the SDK hands to the app.
type pushWorker struct {
	w *worker

	welcomed   []atomic.Bool
	nWelcomed  atomic.Int64
	allIn      chan struct{}
	allOnce    sync.Once
	reconnects atomic.Int64
	gaps       atomic.Int64
	stopping   atomic.Bool

	mu      sync.Mutex
	pending []receipt
	drops   int
	why     Reasons
}

// work connects the worker's devices, answers "connected", streams their
// receipts in "data" events until told to stop, then answers "done".
func (s *Push) work(ctx context.Context, w *worker) error {
	share, target := w.job.Share, s.Target
	tc, err := target.tlsConfig()
	if err != nil {
		return err
	}
	pw := &pushWorker{w: w, welcomed: make([]atomic.Bool, share.Count), allIn: make(chan struct{})}
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// Connects are paced by a semaphore released at each device's first
	// WELCOME, so thousands of devices do not all dial at once.
	sem := make(chan struct{}, connectConcurrency)
	var wg sync.WaitGroup
	deadline := time.NewTimer(pushConnectTimeout)
	defer deadline.Stop()
	started := 0
start:
	for i := range share.Count {
		select {
		case sem <- struct{}{}:
		case <-deadline.C:
			break start
		case <-ctx.Done():
			break start
		}
		device := target.device(share.First + i)
		var released atomic.Bool
		release := func() {
			if released.CompareAndSwap(false, true) {
				<-sem
			}
		}
		cl, err := client.New(client.Config{
			URL: target.URL, App: target.App, Device: device, TLS: tc,
			TokenFunc: func(context.Context) (string, error) { return target.mint(device) },
			Platform:  "bench", Version: "pushctl",
			LocalAddr:  w.local,
			BackoffMin: 50 * time.Millisecond, BackoffMax: 2 * time.Second,
			OnWelcome: func(client.Welcome) {
				if pw.welcomed[i].CompareAndSwap(false, true) {
					release()
					if pw.nWelcomed.Add(1) == int64(share.Count) {
						pw.allOnce.Do(func() { close(pw.allIn) })
					}
					return
				}
				pw.reconnects.Add(1)
			},
			OnMessage: func(m client.Message) { pw.record(share.First+i, m) },
			OnGap:     func(from, to uint64) { pw.gaps.Add(int64(to - from + 1)) },
			OnDisconnect: func(err error) {
				if !pw.stopping.Load() && cctx.Err() == nil {
					pw.disconnected(err, pw.welcomed[i].Load())
				}
			},
		})
		if err != nil {
			release()
			cancel()
			wg.Wait()
			return err
		}
		started++
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer release()
			_ = cl.Run(cctx)
		}()
	}
	if started == share.Count {
		select {
		case <-pw.allIn:
		case <-deadline.C:
		case <-ctx.Done():
		}
	}
	ok := int(pw.nWelcomed.Load())
	pw.mu.Lock()
	why := maps.Clone(pw.why)
	pw.mu.Unlock()
	if err := w.send(evConnected, connected{OK: ok, Failed: share.Count - ok, Errors: why}); err != nil {
		cancel()
		wg.Wait()
		return err
	}

	flushStop := make(chan struct{})
	flushDone := make(chan error, 1)
	go func() { flushDone <- pw.flushLoop(flushStop) }()
	w.waitStop(ctx)
	pw.stopping.Store(true)
	cancel()
	wg.Wait()
	close(flushStop)
	if err := <-flushDone; err != nil {
		return err
	}
	if err := pw.flush(); err != nil {
		return err
	}
	pw.mu.Lock()
	done := held{Alive: ok, Drops: pw.drops, Errors: maps.Clone(pw.why),
		Reconnects: int(pw.reconnects.Load()), Gaps: int(pw.gaps.Load())}
	pw.mu.Unlock()
	return w.send(evDone, done)
}

// record notes one message handed to the app. The payload starts with the
// parent's send time in unix nanoseconds, then "|".
func (pw *pushWorker) record(device int, m client.Message) {
	at := time.Now().UnixNano()
	var sent int64
	if i := bytes.IndexByte(m.Payload, '|'); i > 0 {
		sent, _ = strconv.ParseInt(string(m.Payload[:i]), 10, 64)
	}
	pw.mu.Lock()
	pw.pending = append(pw.pending, receipt{Device: device, ID: m.ID, Sent: sent, At: at})
	pw.mu.Unlock()
}

// disconnected notes why a connection ended or failed; after its first
// WELCOME that is a drop (the SDK reconnects and replays, so a drop costs
// latency, not messages).
func (pw *pushWorker) disconnected(err error, welcomed bool) {
	reason := errorReason(err)
	var refused *client.RefusedError
	if errors.As(err, &refused) {
		reason = "refused: " + refused.Code.String()
	}
	pw.mu.Lock()
	if welcomed {
		pw.drops++
	}
	pw.why.Add(reason, 1)
	pw.mu.Unlock()
}

func (pw *pushWorker) flushLoop(stop <-chan struct{}) error {
	t := time.NewTicker(recvFlushInterval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return nil
		case <-t.C:
			if err := pw.flush(); err != nil {
				return err
			}
		}
	}
}

// flush sends the receipts gathered since the last flush.
func (pw *pushWorker) flush() error {
	pw.mu.Lock()
	batch := pw.pending
	pw.pending = nil
	pw.mu.Unlock()
	for len(batch) > 0 {
		n := min(len(batch), recvBatch)
		if err := pw.w.send(evData, batch[:n]); err != nil {
			return err
		}
		batch = batch[n:]
	}
	return nil
}
