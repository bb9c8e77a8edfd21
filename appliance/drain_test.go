package appliance

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/pushd/pushd/appliance/wire"
	"github.com/pushd/pushd/internal/poll"
	"github.com/pushd/pushd/streams"
	"github.com/pushd/pushd/streams/streamstest"
)

// drainConfig is testConfig with sessions that live through a drain
// without pinging, spread over spread.
func drainConfig(spread time.Duration) Config {
	cfg := testConfig()
	cfg.HeartbeatInterval = time.Minute
	cfg.DrainSpread = spread
	return cfg
}

// closeTimes waits until every sink is closed and returns when each was,
// failing for one closed another way than reason or without CONTROL
// drain as its last frame.
func closeTimes(t *testing.T, sinks []*sinkTransport, reason closeReason, timeout time.Duration) []time.Time {
	t.Helper()
	poll.Until(t, timeout, func() error {
		open := 0
		for _, st := range sinks {
			if closed, _ := st.isClosed(); !closed {
				open++
			}
		}
		if open > 0 {
			return fmt.Errorf("%d of %d sessions still open", open, len(sinks))
		}
		return nil
	})
	var at []time.Time
	for _, st := range sinks {
		_, why := st.isClosed()
		fs := st.frames()
		last, ok := fs[len(fs)-1].(*wire.Control)
		if why != reason || !ok || last.Kind != wire.ControlDrain {
			t.Fatalf("closed for %s with last frame %#v; want %s after CONTROL drain", why, fs[len(fs)-1], reason)
		}
		st.mu.Lock()
		at = append(at, st.closedAt)
		st.mu.Unlock()
	}
	slices.SortFunc(at, func(a, b time.Time) int { return a.Compare(b) })
	return at
}

// checkPaced fails unless closes (sorted) started within a tick of
// start, ended around start+spread, and never came faster than twice the
// even rate over any fifth of the spread (a batch every 50-150 ms, each
// rounded up, fits three times in it at most).
func checkPaced(t *testing.T, closes []time.Time, start time.Time, spread time.Duration) {
	t.Helper()
	first, last := closes[0].Sub(start), closes[len(closes)-1].Sub(start)
	window := spread / 5
	peak := 0
	for i := range closes {
		j := i
		for j < len(closes) && closes[j].Sub(closes[i]) < window {
			j++
		}
		peak = max(peak, j-i)
	}
	even := len(closes) / 5
	t.Logf("%d sessions over %s: first %s, last %s after the start; at most %d in any %s (even rate: %d)",
		len(closes), spread, first.Round(time.Millisecond), last.Round(time.Millisecond), peak, window, even)
	if first > 2*drainTick {
		t.Errorf("first session sent away %s after the start, want within %s", first, 2*drainTick)
	}
	if last < spread*3/4 || last > spread+4*drainTick {
		t.Errorf("last session sent away %s after the start, want about %s", last, spread)
	}
	if peak > 2*even+3 {
		t.Errorf("%d sessions sent away within %s, more than twice the even rate (%d)", peak, window, even)
	}
}

// TestDrain_ShutdownPacesDevicesAway: a node shutting down sends its
// sessions CONTROL drain in batches spread evenly over DrainSpread, and
// refuses new ones meanwhile.
func TestDrain_ShutdownPacesDevicesAway(t *testing.T) {
	t.Parallel()
	const spread = time.Second
	n := newSinkNode(t, drainConfig(spread))
	var sinks []*sinkTransport
	for i := range 300 {
		_, st := openSink(t, n, fmt.Sprint("d-", i), true)
		sinks = append(sinks, st)
	}
	start := time.Now()
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done <- n.Shutdown(ctx)
	}()
	poll.Until(t, time.Second, func() error {
		if !n.stopping.Load() {
			return fmt.Errorf("not stopping yet")
		}
		return nil
	})
	late := &sinkTransport{keep: true}
	s := n.newSession(late)
	late.s = s
	s.onMessage(wire.Append(nil, &wire.Hello{App: testApp, Device: "late", Token: issue(t, "late")}))
	if fs := late.frames(); len(fs) != 1 || fs[0].(*wire.Error).Code != wire.CodeDraining {
		t.Fatalf("a HELLO during the drain got %#v, want ERROR draining", fs)
	}
	checkPaced(t, closeTimes(t, sinks, closeShutdown, 5*time.Second), start, spread)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestDrain_ShutdownFitsItsDeadline: with less time left than
// DrainSpread, the drain spreads over half of it, so the rest of the
// shutdown fits in the deadline too.
func TestDrain_ShutdownFitsItsDeadline(t *testing.T) {
	t.Parallel()
	n := newSinkNode(t, drainConfig(time.Minute))
	var sinks []*sinkTransport
	for i := range 50 {
		_, st := openSink(t, n, fmt.Sprint("d-", i), true)
		sinks = append(sinks, st)
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := n.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 1500*time.Millisecond {
		t.Fatalf("shutdown with a 2 s deadline took %s", took)
	}
	checkPaced(t, closeTimes(t, sinks, closeShutdown, time.Second), start, time.Second)
}

// TestDrain_RegionDrainPacesAndStops: a node the region marks draining
// sends its sessions away over DrainSpread, and stops when the mark is
// lifted.
func TestDrain_RegionDrainPacesAndStops(t *testing.T) {
	t.Parallel()
	const spread = 800 * time.Millisecond
	n := newSinkNode(t, drainConfig(spread))
	var sinks []*sinkTransport
	for i := range 200 {
		_, st := openSink(t, n, fmt.Sprint("d-", i), true)
		sinks = append(sinks, st)
	}
	start := time.Now()
	n.draining.Store(true)
	n.drainSessions()
	checkPaced(t, closeTimes(t, sinks, closeDrain, time.Second), start, spread)

	n.draining.Store(false)
	sinks = sinks[:0]
	for i := range 100 {
		_, st := openSink(t, n, fmt.Sprint("e-", i), true)
		sinks = append(sinks, st)
	}
	n.draining.Store(true)
	go func() {
		time.Sleep(spread / 4)
		n.draining.Store(false)
	}()
	n.drainSessions()
	open := 0
	for _, st := range sinks {
		if closed, _ := st.isClosed(); !closed {
			open++
		}
	}
	if open == 0 || open == len(sinks) {
		t.Fatalf("%d of %d sessions left after the drain was lifted a quarter in", open, len(sinks))
	}
}

// TestDrain_ShutdownHandsTheStreamOver: a node that stopped leaves
// nothing pending or unread in its delivery stream, and the region takes
// it for gone at once (no heartbeat), not NodeTTL later.
func TestDrain_ShutdownHandsTheStreamOver(t *testing.T) {
	t.Parallel()
	srv := streamstest.StartRedis(t)
	store := streams.New(srv.Client(t), streams.Config{NodeTTL: time.Hour})
	n := startServing(t, testConfig(), Deps{Store: store})
	ctx := context.Background()
	if live, _, err := store.Nodes(ctx); err != nil || len(live) != 1 {
		t.Fatalf("live %v, %v", live, err)
	}
	// An entry for a device no longer here, written as the node stops.
	entry := appendPushEntry(nil, &entryMessage{id: "m1", payload: []byte("x")},
		[]entryTarget{{device: inboxKey(testApp, "gone"), connEpoch: 1, inboxEpoch: "e", seq: 1}})
	if err := store.Deliver(ctx, map[string][][]byte{"n1": {entry}}); err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := n.Shutdown(sctx); err != nil {
		t.Fatal(err)
	}
	live, dead, err := store.Nodes(ctx)
	if err != nil || len(live) != 0 || len(dead) != 1 || dead[0] != "n1" {
		t.Fatalf("after the shutdown: live %v, dead %v, %v; want n1 dead at once", live, dead, err)
	}
	if ds, err := store.PendingDeliveries(ctx, "n1", 10); err != nil || len(ds) != 0 {
		t.Fatalf("pending after the shutdown: %v, %v", ds, err)
	}
	if ds, err := store.ReadDeliveries(ctx, "n1", 10, 0); err != nil || len(ds) != 0 {
		t.Fatalf("unread after the shutdown: %v, %v", ds, err)
	}
	if evs := n.Trace("m1"); len(evs) == 0 || evs[len(evs)-1].Event != "missed" {
		t.Fatalf("trace of the entry: %+v", evs)
	}
}
